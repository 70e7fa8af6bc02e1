"""MATH (``EleutherAI/hendrycks_math``): §4 benchmark (one of the 8 of Fig. 6), 7 subject configs, concatenated.

Splits train / test (5,000 test items in total); columns problem, level, type, solution (the answer is
the last ``\\boxed{...}``). The report may have used MATH-500 (not stated): a choice, recorded in the docs.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import CONVERTED_PARQUET, DatasetSource

SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra", "number_theory",
            "prealgebra", "precalculus")


@dataclass(frozen=True)
class MATHSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        a, b = 2 + i, 3 + 2 * i
        return {"problem": f"Solve for $x$: ${a}x + {b} = {a * 5 + b}$.", "level": f"Level {1 + i % 5}",
                "type": config.replace("_", " ").title(),
                "solution": f"Subtract {b} and divide by {a}: $x = \\boxed{{5}}$."}


SOURCE = MATHSource(
    name="math", repo_id="EleutherAI/hendrycks_math", revision=CONVERTED_PARQUET, configs=SUBJECTS,
    splits=("test", "train"), columns={"problem": "string", "level": "string", "type": "string", "solution": "string"},
    file_format="parquet", data_files="{config}/{split}/*.parquet", concat_configs=True,
    revision_note="the hub's auto-converted Parquet branch; not a pinned commit",
    note="full MATH test (5,000); the report may have used MATH-500 (not stated)")
