"""§7 SASFT data: the official SFT data are not public, so the paper run reads files the user supplies.

Three JSONL files (one object per line), given as a local path or as ``org/name:path/in/repo.jsonl``
(a file of a hub dataset repo, fetched with ``hf_hub_download``, offline from the cache):

* ``sft_file``: ``{prompt, response, response_lang[, prompt_lang]}``: SFT examples;
* ``eval_file``: ``{text, lang}``: evaluation prompts per language;
* ``stats_file``: ``{text, lang}``: texts for the monolinguality statistics nu, alpha and perplexity.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from .base import DatasetSource, SchemaError, SourceNotAvailable, resolve_file

_TEXT = {"en": "The weather is nice today, so we will walk to the station.", "zh": "今天天气很好，我们走路去车站。",
         "ru": "Сегодня хорошая погода, поэтому мы пойдём на вокзал пешком.", "ko": "오늘은 날씨가 좋아서 역까지 걸어갑니다.",
         "fr": "Il fait beau aujourd'hui, nous irons à la gare à pied.", "de": "Heute ist schönes Wetter, wir gehen zu Fuß.",
         "es": "Hoy hace buen tiempo, iremos andando a la estación.", "ja": "今日は天気がいいので駅まで歩きます。"}


@dataclass(frozen=True)
class JsonlFileSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        langs = list(_TEXT)
        lang = langs[i % len(langs)]
        if "response" in self.columns:
            return {"prompt": f"{_TEXT[lang]} ({i})", "response": f"{_TEXT['en']} ({i})", "response_lang": "en",
                    "prompt_lang": lang}
        return {"text": f"{_TEXT[lang]} ({i})", "lang": lang}

    def read_rows(self, path: str | Path | None) -> list[dict]:
        """Rows of the JSONL file, every line checked for the declared fields (error names file:line)."""
        if path is None:
            raise SourceNotAvailable(f"{self.name}: set `{self.user_param}` to a JSONL file with fields "
                                     f"{list(self.columns)} (the official SASFT data are not public)")
        p = resolve_file(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found. The official SASFT data are not public: pass a JSONL file with "
                                    f"fields {list(self.columns)} (one object per line) as `{self.user_param}`")
        rows = [json.loads(l) for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
        for i, r in enumerate(rows):
            miss = [k for k in self.columns if k not in r]
            bad = [k for k in self.columns if k in r and not isinstance(r[k], str)]
            if miss or bad:
                raise SchemaError(f"{p}:{i + 1} lacks fields {miss} / has non-string fields {bad} (needs string "
                                  f"fields {list(self.columns)}). Fix: write one JSON object per line with them")
        return rows


_COMMON = dict(repo_id="", revision="", configs=("default",), splits=("train",), file_format="jsonl",
               revision_note="user-supplied file", note="the official SASFT data (arXiv:2507.14894) are not public")
SFT = JsonlFileSource(name="sasft-sft", data_files="sft.jsonl", user_param="sft_file",
                      columns={"prompt": "string", "response": "string", "response_lang": "string"}, **_COMMON)
EVAL = JsonlFileSource(name="sasft-eval", data_files="eval_prompts.jsonl", user_param="eval_file",
                       columns={"text": "string", "lang": "string"}, **_COMMON)
STATS = JsonlFileSource(name="sasft-stats", data_files="lang_texts.jsonl", user_param="stats_file",
                        columns={"text": "string", "lang": "string"}, **_COMMON)
SOURCES = (SFT, EVAL, STATS)
