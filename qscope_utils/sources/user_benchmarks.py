"""§4 benchmarks without a verifiable public hub copy: KOR-Bench and ICLEval (USER-SUPPLIED files).

KOR-Bench is distributed from GitHub and ICLEval has no public hub copy known here, so they are in no
default list; to include them, pass a JSONL file with a ``prompt`` column as ``dataset_id`` of the
benchmark (notebook 03: ``benchmark_files``), with an optional ``id`` column.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import DatasetSource


@dataclass(frozen=True)
class PromptFileSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        return {"id": f"{self.name}-{i}", "prompt": f"Rule: a@b = a*2+b. Compute {i}@3.\nAnswer:"}


_COMMON = dict(repo_id="", revision="", configs=("default",), splits=("train",), file_format="jsonl",
               columns={"prompt": "string"}, revision_note="user-supplied file")
KOR_BENCH = PromptFileSource(name="kor-bench", data_files="kor_bench.jsonl", user_param="benchmark_files['KOR-Bench']",
                             note="distributed from GitHub (KOR-Bench/KOR-Bench), not the hub", **_COMMON)
ICLEVAL = PromptFileSource(name="icleval", data_files="icleval.jsonl", user_param="benchmark_files['ICLEval']",
                           note="no public hub copy known", **_COMMON)
SOURCES = (KOR_BENCH, ICLEVAL)
