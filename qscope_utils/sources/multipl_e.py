"""MultiPL-E (``nuprl/MultiPL-E``): §4 benchmark (one of the 8 of Fig. 6), HumanEval translated per language.

One config per (benchmark, language), e.g. ``humaneval-cpp``; the report does not say which languages:
the default concatenates the seven non-Python HumanEval languages Qwen reports usually list (cpp, java,
php, ts, cs, sh, js), a choice (pass ``config=`` for one language). Split ``test``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import CONVERTED_PARQUET, DatasetSource

LANGS = ("cpp", "java", "php", "ts", "cs", "sh", "js")


@dataclass(frozen=True)
class MultiPLESource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        lang = config.split("-")[-1]
        return {"name": f"HumanEval_{i}_add", "language": lang, "prompt": f"// add {i} to x ({lang})\n",
                "doctests": "transform", "original": f"HumanEval_{i}.py", "prompt_terminology": "reworded",
                "tests": f"// assert add(1) == {1 + i}\n", "stop_tokens": ["\n}"]}


SOURCE = MultiPLESource(
    name="multipl-e", repo_id="nuprl/MultiPL-E", revision=CONVERTED_PARQUET,
    configs=tuple(f"humaneval-{l}" for l in LANGS), splits=("test",),
    columns={"name": "string", "language": "string", "prompt": "string"}, file_format="parquet",
    data_files="{config}/{split}/*.parquet", concat_configs=True,
    revision_note="the hub's auto-converted Parquet branch; not a pinned commit",
    note="languages are our choice (the report does not list them)")
