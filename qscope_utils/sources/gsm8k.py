"""GSM8K (``openai/gsm8k``): §4 benchmark and §8 DAPO training data.

Config ``main`` (also ``socratic``), splits ``train`` (7,473) / ``test`` (1,319), Parquet
``main/{split}-00000-of-00001.parquet``, columns ``question`` and ``answer`` (string): the solution,
ending in ``#### <number>``. :func:`final_answer` parses that number.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import DatasetSource


def final_answer(answer: str) -> float | None:
    """The number after the last ``####`` of a GSM8K answer ("#### 1,234" -> 1234.0); None without one."""
    if "####" not in str(answer):
        return None
    tail = str(answer).split("####")[-1].strip().replace(",", "").rstrip(".")
    try:
        return float(tail)
    except ValueError:
        return None


@dataclass(frozen=True)
class GSM8KSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        a, b, c = 3 + i, 12 + 5 * i, 1000 * (i % 3)
        q = f"Tom has {a} boxes with {b} pencils each and buys {c} more pencils. How many pencils does he have?"
        total = a * b + c
        sol = (f"He has {a} * {b} = <<{a}*{b}={a * b}>>{a * b} pencils in boxes.\n"
               f"Then {a * b} + {c} = {total}.\n#### {total:,}")
        return {"question": q, "answer": sol}


SOURCE = GSM8KSource(
    name="gsm8k", repo_id="openai/gsm8k", revision="main", configs=("main",), splits=("train", "test"),
    columns={"question": "string", "answer": "string"}, file_format="parquet", data_files="{config}/{split}-*.parquet",
    default_split="test", expected_rows=None,
    revision_note="branch main (no sha verified offline); GSM8K has not changed since release",
    note="report §4: GSM8K test has 1,319 items; §8 trains DAPO on the train split")
