"""WikiText-103 (``Salesforce/wikitext``): §2 evaluation text (FVU etc.) and §3's English prompt source.

Config ``wikitext-103-raw-v1`` (also -v1, wikitext-2-*), splits train / validation / test, Parquet
``{config}/{split}-0000N-of-0000M.parquet``, one column ``text`` (string; many rows are blank lines or
`` = Heading = `` lines, which :func:`paragraphs` drops). The report does not name its evaluation text.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import DatasetSource

_PARA = [" The river rises in the northern hills and flows south through a broad valley , where farming has "
         "been practised since the Iron Age . \n",
         " In 1887 the company built a second factory near the harbour , employing several hundred workers . \n",
         " The species feeds mainly on insects , although it will also take seeds during the winter months . \n"]


def paragraphs(texts, min_chars: int = 40) -> list[str]:
    """Body paragraphs only: no blank lines, no ``= Heading =`` lines, at least ``min_chars`` characters."""
    return [t.strip() for t in texts if t and len(t.strip()) >= min_chars and not t.strip().startswith("=")]


@dataclass(frozen=True)
class WikiTextSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        kind = i % 4
        if kind == 0:
            return {"text": ""}
        if kind == 1:
            return {"text": f" = Section {i} = \n"}
        return {"text": _PARA[i % 3].replace("The", f"The {i}th", 1)}


SOURCE = WikiTextSource(
    name="wikitext", repo_id="Salesforce/wikitext", revision="main", configs=("wikitext-103-raw-v1",),
    splits=("train", "validation", "test"), columns={"text": "string"}, file_format="parquet",
    data_files="{config}/{split}-*.parquet", default_split="test",
    revision_note="branch main; layout of hub commit b08601e ('Convert dataset to Parquet', full sha not verified "
                  "offline)",
    note="the report does not name its evaluation / prompt text: a parameter (dataset_id / english_dataset)")
