"""TheoremQA (``TIGER-Lab/TheoremQA``): §4 benchmark (one of the 8 of Fig. 6), 800 test items.

``Answer`` mixes numbers, booleans and lists across rows, so its type is not checked.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import CONVERTED_PARQUET, DatasetSource


@dataclass(frozen=True)
class TheoremQASource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        return {"Question": f"By the Pythagorean theorem, what is the hypotenuse of a right triangle with legs "
                            f"{3 * (i + 1)} and {4 * (i + 1)}?", "Answer": str(5 * (i + 1)), "Answer_type": "integer"}


SOURCE = TheoremQASource(
    name="theoremqa", repo_id="TIGER-Lab/TheoremQA", revision=CONVERTED_PARQUET, configs=("default",),
    splits=("test",), columns={"Question": "string", "Answer": "any", "Answer_type": "string"}, file_format="parquet",
    data_files="{config}/{split}/*.parquet",
    revision_note="the hub's auto-converted Parquet branch; not a pinned commit")
