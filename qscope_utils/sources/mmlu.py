"""MMLU (``cais/mmlu``, config ``all``): §4 benchmark and the control partialled out in §4.2 (14,042 test items)."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import DatasetSource


@dataclass(frozen=True)
class MMLUSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i)
        return {"question": q, "subject": "miscellaneous", "choices": opts, "answer": k}


SOURCE = MMLUSource(
    name="mmlu", repo_id="cais/mmlu", revision="main", configs=("all",), splits=("test", "validation", "dev"),
    columns={"question": "string", "subject": "string", "choices": "list<string>", "answer": "int"},
    file_format="parquet", data_files="{config}/{split}-*.parquet", default_split="test",
    revision_note="branch main (no sha verified offline)")
