"""Unicode script detection for code-switch metrics (docs/CONVENTIONS.md §3 case 1, §7).

A character's script is read from its Unicode name (``unicodedata``), so every script Python
knows is covered without a hand-kept range table: ``"CJK UNIFIED IDEOGRAPH-4E2D"`` -> ``Han``,
``"HANGUL SYLLABLE GA"`` -> ``Hangul``, ``"CYRILLIC SMALL LETTER A"`` -> ``Cyrillic``,
``"FULLWIDTH LATIN CAPITAL LETTER A"`` -> ``Latin``. Only letters (Unicode category ``L*``) and
combining marks carry a script; digits, punctuation, symbols and whitespace are ``Common``
(as in Unicode's Scripts.txt), so ``"，"`` or ``"1"`` never count as Chinese.

Public API (kept small on purpose; SASFT reuses it)::

    script_of(char) -> str                 # "Han", "Latin", "Cyrillic", "Hangul", "Hiragana", ...
    script_shares(text) -> dict[str, float]  # share of script-bearing characters per script
    contains_script(text, script) -> bool  # any character of that script (or of any in a set)

``LANG_SCRIPT`` maps the code-switch languages of the reports to their detection script
(zh -> Han, ko -> Hangul, ru -> Cyrillic, ja -> Hiragana/Katakana/Han ...).
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Iterable

__all__ = ["script_of", "script_shares", "contains_script", "script_counts", "LANG_SCRIPT", "COMMON", "SCRIPTS"]

COMMON = "Common"

# first word(s) of a Unicode character name -> script
_NAME_PREFIX = {
    "CJK": "Han", "LATIN": "Latin", "CYRILLIC": "Cyrillic", "HANGUL": "Hangul", "HIRAGANA": "Hiragana",
    "KATAKANA": "Katakana", "ARABIC": "Arabic", "GREEK": "Greek", "HEBREW": "Hebrew", "DEVANAGARI": "Devanagari",
    "THAI": "Thai", "ETHIOPIC": "Ethiopic", "ARMENIAN": "Armenian", "GEORGIAN": "Georgian", "BENGALI": "Bengali",
    "TAMIL": "Tamil", "TELUGU": "Telugu", "GUJARATI": "Gujarati", "KANNADA": "Kannada", "MALAYALAM": "Malayalam",
    "GURMUKHI": "Gurmukhi", "KHMER": "Khmer", "LAO": "Lao", "MYANMAR": "Myanmar", "SINHALA": "Sinhala",
    "TIBETAN": "Tibetan", "MONGOLIAN": "Mongolian", "BOPOMOFO": "Bopomofo", "YI": "Yi", "SYRIAC": "Syriac",
    "THAANA": "Thaana", "COPTIC": "Coptic", "ORIYA": "Oriya",
}
_WIDTH_PREFIXES = ("FULLWIDTH ", "HALFWIDTH ")
# ideographic letters whose names do not start with "CJK" (Unicode assigns them to Han)
_HAN_EXTRA = {"\u3005", "\u3007", "\u303b", *map(chr, range(0x3021, 0x302A)), *map(chr, range(0x3038, 0x303B))}

SCRIPTS = tuple(sorted(set(_NAME_PREFIX.values())))

LANG_SCRIPT: dict[str, frozenset[str]] = {
    "zh": frozenset({"Han"}), "lzh": frozenset({"Han"}), "ko": frozenset({"Hangul"}),
    "ja": frozenset({"Hiragana", "Katakana"}),  # kana distinguish Japanese from Chinese; Han is shared
    "ru": frozenset({"Cyrillic"}), "uk": frozenset({"Cyrillic"}), "tt": frozenset({"Cyrillic"}),
    "ar": frozenset({"Arabic"}), "hi": frozenset({"Devanagari"}), "am": frozenset({"Ethiopic"}),
    "en": frozenset({"Latin"}), "fr": frozenset({"Latin"}), "de": frozenset({"Latin"}),
    "es": frozenset({"Latin"}), "it": frozenset({"Latin"}),
}


@lru_cache(maxsize=65536)
def script_of(char: str) -> str:
    """Script of one character: ``"Han"``, ``"Latin"``, ``"Cyrillic"``, ... or ``"Common"``.

    Letters and combining marks get the script in their Unicode name (an unlisted name prefix
    gives its title-cased first word, e.g. ``"Cherokee"``); everything else is ``"Common"``.
    """
    if not isinstance(char, str) or len(char) != 1:
        raise ValueError(f"script_of expects one character, got {char!r}; use script_shares for strings")
    if char in _HAN_EXTRA:
        return "Han"
    cat = unicodedata.category(char)
    if not (cat.startswith("L") or cat in ("Mn", "Mc")):
        return COMMON
    name = unicodedata.name(char, "")
    for p in _WIDTH_PREFIXES:
        if name.startswith(p):
            name = name[len(p):]
    if not name:
        return COMMON
    if name.startswith("MODIFIER LETTER") or name.startswith("COMBINING"):
        return COMMON
    first = name.split(" ", 1)[0].split("-", 1)[0]
    return _NAME_PREFIX.get(first, first.title())


def script_counts(text: str) -> Counter:
    """Counter script -> number of characters (Common included)."""
    return Counter(script_of(c) for c in text)


def script_shares(text: str, include_common: bool = False) -> dict[str, float]:
    """Share of characters per script, sorted by share (descending).

    By default the denominator is the script-bearing characters only (Common excluded), so
    ``script_shares("中文 ok")`` is ``{"Han": 0.5, "Latin": 0.5}``. Empty dict when the text has
    no script-bearing character.
    """
    counts = script_counts(text)
    if not include_common:
        counts.pop(COMMON, None)
    total = sum(counts.values())
    if total == 0:
        return {}
    return {s: n / total for s, n in counts.most_common()}


def _as_set(script: str | Iterable[str]) -> frozenset[str]:
    s = frozenset([script]) if isinstance(script, str) else frozenset(script)
    unknown = {x for x in s if x not in SCRIPTS and x != COMMON and not x.istitle()}
    if unknown:
        raise ValueError(f"unknown script name(s) {sorted(unknown)}: use names like {', '.join(SCRIPTS[:8])} ...")
    return s


def contains_script(text: str, script: str | Iterable[str], min_chars: int = 1) -> bool:
    """True when ``text`` has at least ``min_chars`` characters of ``script`` (a name or a set of names)."""
    want = _as_set(script)
    n = 0
    for c in text:
        if script_of(c) in want:
            n += 1
            if n >= min_chars:
                return True
    return False
