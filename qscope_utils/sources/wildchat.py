"""§6 natural-sampling pool: WildChat (``allenai/WildChat-1M``; the report does not name its pool).

Parquet shards ``data/train-000NN-of-000MM.parquet``, one ``default`` config, split ``train``.
``conversation`` is a LIST of turns, each a struct with at least ``role`` ("user" / "assistant") and
``content`` (plus language, toxic, redacted, timestamp, ... fields). :func:`first_user_turns` turns rows
into texts (the first user turn of each conversation): a text column it is not.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import DatasetSource

_ASKS = ["Can you help me write a cover letter for a nursing job?", "写一首关于春天的诗", "Как приготовить борщ?",
         "Explain quicksort in simple terms.", "What's a good name for a grey cat?", "Traduis cette phrase en anglais."]


@dataclass(frozen=True)
class WildChatSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        ask = _ASKS[i % len(_ASKS)] + f" ({i})"
        turns = [{"role": "user", "content": ask, "language": "English", "toxic": False, "turn_identifier": 2 * i},
                 {"role": "assistant", "content": f"Sure. Here is an answer to: {ask}", "language": "English",
                  "toxic": False, "turn_identifier": 2 * i}]
        if i % 3 == 2:   # some multi-turn conversations
            turns += [{"role": "user", "content": "Thanks, shorter please.", "language": "English", "toxic": False,
                       "turn_identifier": 2 * i + 1}]
        return {"conversation_hash": f"{i:032x}", "model": "gpt-3.5-turbo-0613", "conversation": turns,
                "turn": (len(turns) + 1) // 2, "language": "English", "toxic": False, "redacted": False}


def first_user_turns(ds, column: str = "conversation", min_chars: int = 1) -> list[str]:
    """The first user turn's ``content`` of each conversation (rows without one, or blank, are skipped)."""
    out = []
    for conv in ds[column]:
        text = next((t.get("content") for t in conv or [] if t.get("role") == "user"), None)
        if text and len(text.strip()) >= min_chars:
            out.append(text)
    return out


SOURCE = WildChatSource(
    name="wildchat", repo_id="allenai/WildChat-1M", revision="main", configs=("default",), splits=("train",),
    columns={"conversation": "list<struct<content,role>>", "language": "string"}, file_format="parquet",
    data_files="data/{split}-*.parquet",
    revision_note="branch main (no sha verified offline); the list-of-turns column is checked on load",
    note="the report does not name its natural-sampling pool: a parameter (SafetyConfig.natural_dataset_id)")
