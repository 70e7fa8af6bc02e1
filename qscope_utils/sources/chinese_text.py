"""§3 case 2: classical (lzh) and modern Chinese text for the style feature and its classifier.

The report does not name these sets, and no hub id could be verified here, so both are USER-SUPPLIED:
set ``classical_dataset`` / ``modern_dataset`` (notebook 02) to a JSONL file with a ``text`` column
(one passage per line), to ``org/name:path/in/repo.jsonl`` (a file of a hub dataset repo), or to a hub
dataset id readable by ``datasets.load_dataset`` (then ``*_column`` names the text column).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from .base import DatasetSource

_LZH = ["學而時習之，不亦說乎？有朋自遠方來，不亦樂乎？", "天下皆知美之為美，斯惡已。", "君子務本，本立而道生。",
        "吾日三省吾身：為人謀而不忠乎？與朋友交而不信乎？", "知之者不如好之者，好之者不如樂之者。"]
_ZH = ["今天早上我去超市买了一些水果和蔬菜。", "他把手机忘在出租车上了，只好打电话给司机。", "我们周末打算带孩子去公园放风筝。",
       "这家咖啡店的环境很安静，适合看书。", "她每天下班以后都会去健身房锻炼一个小时。"]


@dataclass(frozen=True)
class ChineseTextSource(DatasetSource):
    def mini_row(self, config: str, split: str, i: int, rng: random.Random) -> dict:
        pool = _LZH if self.name == "zh-classical" else _ZH
        return {"text": pool[i % len(pool)] + pool[(i + 1) % len(pool)]}


_COMMON = dict(repo_id="", revision="", configs=("default",), splits=("train",), columns={"text": "string"},
               file_format="jsonl", revision_note="user-supplied: no hub id verified",
               note="the report does not name its classical / modern Chinese data")
CLASSICAL = ChineseTextSource(name="zh-classical", data_files="zh_classical.jsonl", user_param="classical_dataset",
                              **_COMMON)
MODERN = ChineseTextSource(name="zh-modern", data_files="zh_modern.jsonl", user_param="modern_dataset", **_COMMON)
SOURCES = (CLASSICAL, MODERN)
