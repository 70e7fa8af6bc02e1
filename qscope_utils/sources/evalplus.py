"""EvalPlus HumanEval+ (``evalplus/humanevalplus``): §4 benchmark (one of the 8 of Fig. 6), 164 tasks."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import code_task
from .base import CONVERTED_PARQUET, DatasetSource


@dataclass(frozen=True)
class EvalPlusSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        prompt, body, name = code_task(i)
        return {"task_id": f"HumanEval/{i}", "prompt": prompt, "canonical_solution": body, "entry_point": name,
                "test": f"def check(candidate):\n    assert candidate(1) == {1 + i}\n"}


SOURCE = EvalPlusSource(
    name="evalplus", repo_id="evalplus/humanevalplus", revision=CONVERTED_PARQUET, configs=("default",),
    splits=("test",), columns={"task_id": "string", "prompt": "string", "entry_point": "string"},
    file_format="parquet", data_files="{config}/{split}/*.parquet",
    revision_note="the hub's auto-converted Parquet branch; not a pinned commit")
