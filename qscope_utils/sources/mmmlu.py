"""MMMLU (``openai/MMMLU``): §4 benchmark, MMLU test translated into 14 languages, one CSV per language.

Files ``test/mmlu_{LOCALE}.csv`` (e.g. ``test/mmlu_PT-BR.csv``; columns Question, A-D, Answer, Subject,
plus an unnamed index). Configs here are the file locales (the hub's config names spell them with
``_``); the default concatenates every language (a ``config`` column keeps it).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import DatasetSource

LANGS = ("AR-XA", "BN-BD", "DE-DE", "ES-LA", "FR-FR", "HI-IN", "ID-ID", "IT-IT", "JA-JP", "KO-KR", "PT-BR", "SW-KE",
         "YO-NG", "ZH-CN")


@dataclass(frozen=True)
class MMMLUSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i, zh=config == "ZH-CN", tag=config[:2])
        return {"Unnamed: 0": i, "Question": q, "A": opts[0], "B": opts[1], "C": opts[2], "D": opts[3],
                "Answer": "ABCD"[k], "Subject": "miscellaneous"}


SOURCE = MMMLUSource(
    name="mmmlu", repo_id="openai/MMMLU", revision="main", configs=LANGS, splits=("test",),
    columns={"Question": "string", "A": "string", "B": "string", "C": "string", "D": "string", "Answer": "string",
             "Subject": "string"},
    file_format="csv", data_files="{split}/mmlu_{config}.csv", concat_configs=True,
    revision_note="branch main (no sha verified offline); file names as in test/mmlu_PT-BR.csv")
