"""SuperGPQA (``m-a-p/SuperGPQA``): §4 benchmark (the report: relatively non-redundant), one JSONL file, split train."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import DatasetSource


@dataclass(frozen=True)
class SuperGPQASource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i)
        return {"uuid": f"{i:08x}-sgpqa", "question": q, "options": opts, "answer": opts[k], "answer_letter": "ABCD"[k],
                "discipline": "Science", "field": "Physics", "subfield": "Thermodynamics",
                "difficulty": ["easy", "middle", "hard"][i % 3], "is_calculation": bool(i % 2)}


SOURCE = SuperGPQASource(
    name="supergpqa", repo_id="m-a-p/SuperGPQA", revision="main", configs=("default",), splits=("train",),
    columns={"uuid": "string", "question": "string", "options": "list<string>", "answer_letter": "string"},
    file_format="jsonl", data_files="SuperGPQA-all.jsonl",
    revision_note="branch main (no sha verified offline)")
