"""MGSM (``juletxara/mgsm``): §8's multilingual evaluation (the report's +5.56 / +2.28 / +5.84).

One config per language (en, the default, and bn de es fr ja ru sw te th zh), splits ``train`` (8 exemplars) and
``test`` (250). The repo's main branch holds a loading script and TSVs, which datasets 5.x cannot run,
so the adapter reads the hub's converted Parquet branch (``refs/convert/parquet``,
``{lang}/{split}/0000.parquet``) with columns ``question`` (string) and ``answer_number`` (int).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import CONVERTED_PARQUET, DatasetSource

LANGS = ("en", "bn", "de", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")   # first = default config
_Q = {"en": "Janet has {a} apples and buys {b} more. How many apples does she have?",
      "de": "Janet hat {a} Äpfel und kauft {b} dazu. Wie viele Äpfel hat sie?",
      "fr": "Janet a {a} pommes et en achète {b} de plus. Combien de pommes a-t-elle ?",
      "es": "Janet tiene {a} manzanas y compra {b} más. ¿Cuántas manzanas tiene?",
      "ru": "У Джанет {a} яблок, она покупает ещё {b}. Сколько у неё яблок?",
      "zh": "珍妮有{a}个苹果，又买了{b}个。她一共有多少个苹果？",
      "ja": "ジャネットはりんごを{a}個持っていて、さらに{b}個買います。りんごは何個ですか？"}


@dataclass(frozen=True)
class MGSMSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        a, b = 2 + i, 7 + 3 * i
        q = _Q.get(config, _Q["en"]).format(a=a, b=b)
        return {"question": q, "answer": f"{a} + {b} = {a + b}" if split == "train" else None,
                "answer_number": a + b, "equation_solution": f"{a} + {b} = {a + b}" if split == "train" else None}


SOURCE = MGSMSource(
    name="mgsm", repo_id="juletxara/mgsm", revision=CONVERTED_PARQUET, configs=LANGS, splits=("train", "test"),
    columns={"question": "string", "answer_number": "int"}, file_format="parquet",
    data_files="{config}/{split}/*.parquet",
    default_split="test",
    revision_note="the hub's auto-converted Parquet branch (main holds a loading script datasets 5.x cannot run); a "
                  "branch, not a pinned commit",
    note="report §8: MGSM (language not stated; the notebook's eval config picks it)")
