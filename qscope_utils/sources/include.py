"""INCLUDE (``CohereForAI/include-base-44``): §4 benchmark, regional exams in 44 languages, one config per
language, concatenated. Columns: language, country, domain, subject, level, question, option_a-d, answer
(int 0-3). Read from the hub's converted Parquet branch (``{Language}/{split}/0000.parquet``); the
language list below is the dataset card's, and ``load()`` concatenates whatever configs the snapshot holds.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from ._synth import mc
from .base import CONVERTED_PARQUET, DatasetSource

LANGS = ("Albanian", "Arabic", "Armenian", "Azerbaijani", "Basque", "Belarusian", "Bengali", "Bulgarian", "Chinese",
         "Croatian", "Dutch", "Estonian", "Finnish", "French", "Georgian", "German", "Greek", "Hebrew", "Hindi",
         "Hungarian", "Indonesian", "Italian", "Japanese", "Kazakh", "Korean", "Lithuanian", "Malay", "Malayalam",
         "Nepali", "North Macedonian", "Persian", "Polish", "Portuguese", "Russian", "Serbian", "Spanish", "Tagalog",
         "Tamil", "Telugu", "Turkish", "Ukrainian", "Urdu", "Uzbek", "Vietnamese")


@dataclass(frozen=True)
class IncludeSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        q, opts, k = mc(i, zh=config == "Chinese", tag=config[:3])
        return {"language": config, "country": "", "domain": "STEM", "subject": "Physics",
                "regional_feature": "agnostic",
                "level": "University", "question": q, "option_a": opts[0], "option_b": opts[1], "option_c": opts[2],
                "option_d": opts[3], "answer": k}


SOURCE = IncludeSource(
    name="include", repo_id="CohereForAI/include-base-44", revision=CONVERTED_PARQUET, configs=LANGS,
    splits=("test",), columns={"language": "string", "question": "string", "option_a": "string", "option_b": "string",
                               "option_c": "string", "option_d": "string", "answer": "int"},
    file_format="parquet", data_files="{config}/{split}/*.parquet", concat_configs=True,
    revision_note="the hub's auto-converted Parquet branch; not a pinned commit")
