"""MMLU-Pro (``TIGER-Lab/MMLU-Pro``): §4 benchmark, one of the 8 of Fig. 6; 12,032 test items, 10 options."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import DatasetSource


@dataclass(frozen=True)
class MMLUProSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i)
        opts = opts + [f"none of {j}" for j in range(6)]
        return {"question_id": 70 + i, "question": q, "options": opts, "answer": "ABCDEFGHIJ"[k], "answer_index": k,
                "cot_content": "", "category": "biology", "src": "ori_mmlu-miscellaneous"}


SOURCE = MMLUProSource(
    name="mmlu-pro", repo_id="TIGER-Lab/MMLU-Pro", revision="main", configs=("default",),
    splits=("test", "validation"), columns={"question_id": "int", "question": "string", "options": "list<string>",
                                            "answer": "string", "category": "string"},
    file_format="parquet", data_files="data/{split}-*.parquet", default_split="test",
    revision_note="branch main (no sha verified offline)")
