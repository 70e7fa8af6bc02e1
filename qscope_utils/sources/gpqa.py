"""GPQA-Diamond (``Idavidrein/gpqa``, config ``gpqa_diamond``, 198 items): §4 benchmark. Gated: accept the terms."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import CONVERTED_PARQUET, DatasetSource


@dataclass(frozen=True)
class GPQASource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i)
        wrong = [o for j, o in enumerate(opts) if j != k]
        return {"Question": q, "Correct Answer": opts[k], "Incorrect Answer 1": wrong[0],
                "Incorrect Answer 2": wrong[1], "Incorrect Answer 3": wrong[2], "Record ID": f"rec{i:05d}",
                "High-level domain": "Physics"}


SOURCE = GPQASource(
    name="gpqa-diamond", repo_id="Idavidrein/gpqa", revision=CONVERTED_PARQUET, configs=("gpqa_diamond",),
    splits=("train",), columns={"Question": "string", "Correct Answer": "string", "Record ID": "string"},
    file_format="parquet", data_files="{config}/{split}/*.parquet",
    revision_note="the hub's auto-converted Parquet branch (main ships CSVs); not a pinned commit")
