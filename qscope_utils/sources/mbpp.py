"""MBPP (``google-research-datasets/mbpp``, config ``full``): §4 benchmark (one of the 8 of Fig. 6), 500 test tasks."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import code_task
from .base import CONVERTED_PARQUET, DatasetSource


@dataclass(frozen=True)
class MBPPSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        _, body, name = code_task(i)
        return {"task_id": 11 + i, "text": f"Write a function to add {i} to a number.",
                "code": f"def {name}(x):\n{body}", "test_list": [f"assert {name}(1) == {1 + i}"],
                "test_setup_code": "", "challenge_test_list": []}


SOURCE = MBPPSource(
    name="mbpp", repo_id="google-research-datasets/mbpp", revision=CONVERTED_PARQUET, configs=("full",),
    splits=("test", "train", "validation", "prompt"),
    columns={"task_id": "int", "text": "string", "code": "string", "test_list": "list<string>"},
    file_format="parquet", data_files="{config}/{split}/*.parquet", default_split="test",
    revision_note="the hub's auto-converted Parquet branch; not a pinned commit")
