"""Code-switch detection by Unicode script, and the code-switch ratio with bootstrap intervals (SPEC.md §7).

Code-switch ratio (§7): the share of sampled responses that contain any text in the unwanted
language, detected by script (zh: Han, ru: Cyrillic, ko: Hangul; on the mini profile ja: kana
stands in for ko, which the mini corpus does not have). Several samples per prompt with fixed
seeds; intervals by a two-stage bootstrap (prompts, then seeds within each drawn prompt), and
paired differences between two models evaluated on the same prompts and seeds.

The script table is written here (no dependency): ``qscope_utils/scripts_unicode.py`` did not exist
when this module was written. :func:`script_of`, :func:`script_shares` and :func:`contains_script`
follow the interface the steering section planned for it, so either can replace the other.
Caveat: Japanese also writes Han (kanji), so "zh by Han" counts kanji too; in the setups used here
the response language is written in Latin script, where any Han is a switch away from it.
"""
from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

__all__ = ["SCRIPT_RANGES", "LANG_SCRIPTS", "script_of", "script_shares", "contains_script", "lang_scripts",
           "code_switched", "code_switch_flags", "bootstrap_ratio", "paired_bootstrap_diff", "RatioCI"]

# (first, last, script) code-point ranges, inclusive. Anything not listed is "Common" (digits,
# punctuation, spaces, symbols, CJK punctuation) and never counts as a language.
SCRIPT_RANGES: tuple[tuple[int, int, str], ...] = tuple(sorted([
    (0x0041, 0x005A, "Latin"), (0x0061, 0x007A, "Latin"), (0x00AA, 0x00AA, "Latin"), (0x00BA, 0x00BA, "Latin"),
    (0x00C0, 0x00D6, "Latin"), (0x00D8, 0x00F6, "Latin"), (0x00F8, 0x024F, "Latin"), (0x1E00, 0x1EFF, "Latin"),
    (0x2C60, 0x2C7F, "Latin"), (0xA720, 0xA7FF, "Latin"), (0xAB30, 0xAB6F, "Latin"), (0xFF21, 0xFF3A, "Latin"),
    (0xFF41, 0xFF5A, "Latin"),
    (0x0370, 0x03FF, "Greek"), (0x1F00, 0x1FFF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"), (0x1C80, 0x1C8F, "Cyrillic"), (0x2DE0, 0x2DFF, "Cyrillic"),
    (0xA640, 0xA69F, "Cyrillic"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"), (0x0750, 0x077F, "Arabic"), (0x08A0, 0x08FF, "Arabic"), (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"), (0x0E00, 0x0E7F, "Thai"),
    (0x1100, 0x11FF, "Hangul"), (0x3130, 0x318F, "Hangul"), (0xA960, 0xA97F, "Hangul"), (0xAC00, 0xD7FF, "Hangul"),
    (0xFFA0, 0xFFDC, "Hangul"),
    (0x3041, 0x309F, "Hiragana"),
    (0x30A0, 0x30FF, "Katakana"), (0x31F0, 0x31FF, "Katakana"), (0xFF66, 0xFF9F, "Katakana"),
    (0x2E80, 0x2FDF, "Han"), (0x3005, 0x3005, "Han"), (0x3007, 0x3007, "Han"), (0x3021, 0x3029, "Han"),
    (0x3038, 0x303B, "Han"), (0x3400, 0x4DBF, "Han"), (0x4E00, 0x9FFF, "Han"), (0xF900, 0xFAFF, "Han"),
    (0x20000, 0x3134F, "Han"),
]))
_STARTS = [r[0] for r in SCRIPT_RANGES]

# Which scripts reveal a language. Latin-script languages cannot be told apart by script.
LANG_SCRIPTS: dict[str, tuple[str, ...]] = {
    "zh": ("Han",), "lzh": ("Han",), "ko": ("Hangul",), "ru": ("Cyrillic",), "uk": ("Cyrillic",),
    "ja": ("Hiragana", "Katakana"), "ar": ("Arabic",), "he": ("Hebrew",), "hi": ("Devanagari",), "th": ("Thai",),
    "el": ("Greek",), "en": ("Latin",), "fr": ("Latin",), "de": ("Latin",), "es": ("Latin",), "it": ("Latin",),
}


def script_of(char: str) -> str:
    """Unicode script of one character: 'Latin', 'Han', 'Cyrillic', 'Hangul', 'Hiragana', 'Katakana',
    'Arabic', 'Greek', 'Hebrew', 'Devanagari', 'Thai', or 'Common' for everything else."""
    if len(char) != 1:
        raise ValueError(f"script_of takes one character, got {char!r}")
    cp = ord(char)
    i = bisect_right(_STARTS, cp) - 1
    if i >= 0 and SCRIPT_RANGES[i][0] <= cp <= SCRIPT_RANGES[i][1]:
        return SCRIPT_RANGES[i][2]
    return "Common"


def script_shares(text: str) -> dict[str, float]:
    """Share of each script among the non-Common characters of ``text`` (empty dict if none)."""
    c = Counter(s for s in map(script_of, text) if s != "Common")
    n = sum(c.values())
    return {s: v / n for s, v in c.most_common()} if n else {}


def contains_script(text: str, script: str | Iterable[str], min_chars: int = 1) -> bool:
    """True if ``text`` holds at least ``min_chars`` characters of ``script`` (a name or several)."""
    want = {script} if isinstance(script, str) else set(script)
    n = 0
    for ch in text:
        if script_of(ch) in want:
            n += 1
            if n >= min_chars:
                return True
    return False


def lang_scripts(lang: str) -> tuple[str, ...]:
    """Scripts that identify ``lang`` (raises if the language cannot be detected by script)."""
    if lang not in LANG_SCRIPTS:
        raise KeyError(f"no script known for language {lang!r}; known: {sorted(LANG_SCRIPTS)}. Add it to "
                       f"codeswitch.LANG_SCRIPTS")
    scripts = LANG_SCRIPTS[lang]
    if scripts == ("Latin",):
        raise ValueError(f"{lang!r} is written in Latin script: a script detector cannot tell it from other "
                         f"Latin-script languages; choose an unwanted language with its own script (zh, ru, ja, ko ...)")
    return scripts


def code_switched(text: str, target: str, min_chars: int = 1) -> bool:
    """Does a response contain text in the unwanted language ``target`` (by script)?"""
    return contains_script(text, lang_scripts(target), min_chars)


def code_switch_flags(texts: Sequence[str], target: str, min_chars: int = 1) -> np.ndarray:
    """(n,) bool: :func:`code_switched` for each text."""
    return np.array([code_switched(t, target, min_chars) for t in texts], dtype=bool)


@dataclass
class RatioCI:
    """A ratio (or a difference of ratios) with its bootstrap percentile interval."""

    value: float
    lo: float
    hi: float
    n_prompts: int
    n_seeds: int

    def as_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "n_prompts": self.n_prompts, "n_seeds": self.n_seeds}

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


def _check_flags(flags) -> np.ndarray:
    f = np.asarray(flags, dtype=float)
    if f.ndim != 2 or f.shape[0] == 0 or f.shape[1] == 0:
        raise ValueError(f"flags must be a non-empty (n_prompts, n_seeds) matrix, got shape {f.shape}")
    return f


def _resample_means(mats: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Two-stage bootstrap means of (P, S) matrices with SHARED indices: prompts drawn with
    replacement, then seeds drawn with replacement within each drawn prompt. Returns (n_boot,) each."""
    P, S = mats[0].shape
    rng = np.random.default_rng(seed)
    ip = rng.integers(0, P, size=(n_boot, P))
    is_ = rng.integers(0, S, size=(n_boot, P, S))
    return [m[ip[:, :, None], is_].mean(axis=(1, 2)) for m in mats]


def bootstrap_ratio(flags, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> RatioCI:
    """Code-switch ratio of a (n_prompts, n_seeds) bool matrix with a two-stage bootstrap interval."""
    f = _check_flags(flags)
    (b,) = _resample_means([f], n_boot, seed)
    a = (1 - level) / 2
    return RatioCI(float(f.mean()), float(np.quantile(b, a)), float(np.quantile(b, 1 - a)), *f.shape)


def paired_bootstrap_diff(flags_a, flags_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> RatioCI:
    """ratio(a) - ratio(b) for two models sampled on the SAME prompts and seeds, paired bootstrap."""
    fa, fb = _check_flags(flags_a), _check_flags(flags_b)
    if fa.shape != fb.shape:
        raise ValueError(f"paired flags must have the same (prompts, seeds) shape: {fa.shape} vs {fb.shape}")
    ba, bb = _resample_means([fa, fb], n_boot, seed)
    d = ba - bb
    a = (1 - level) / 2
    return RatioCI(float(fa.mean() - fb.mean()), float(np.quantile(d, a)), float(np.quantile(d, 1 - a)), *fa.shape)
