"""Code-switch detection by Unicode script, and the code-switch ratio with bootstrap intervals (docs/CONVENTIONS.md §7).

Code-switch ratio (§7): the share of sampled responses that contain any text in the unwanted
language, detected by script (zh: Han, ru: Cyrillic, ko: Hangul; on the mini profile ja: kana
stands in for ko, which the mini corpus does not have). Several samples per prompt with fixed
seeds; intervals by a two-stage bootstrap (prompts, then seeds within each drawn prompt), and
paired differences between two models evaluated on the same prompts and seeds.

Script detection itself (:func:`script_of`, :func:`script_shares`, :func:`contains_script`) lives in
``qscope_utils/scripts_unicode.py``, shared with the steering section, and is re-exported here.
Caveat: Japanese also writes Han (kanji), so "zh by Han" counts kanji too; in the setups used here
the response language is written in Latin script, where any Han is a switch away from it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .scripts_unicode import LANG_SCRIPT, contains_script, script_of, script_shares  # noqa: F401 (re-exported)

__all__ = ["script_of", "script_shares", "contains_script", "lang_scripts",
           "code_switched", "code_switch_flags", "bootstrap_ratio", "paired_bootstrap_diff", "RatioCI",
           "CutDesign", "cut_design", "design_effect"]

# Which scripts reveal a language: scripts_unicode.LANG_SCRIPT (Latin-script languages cannot be told
# apart by script, so they are refused as code-switch targets).


def lang_scripts(lang: str) -> tuple[str, ...]:
    """Scripts that identify ``lang`` (raises if the language cannot be detected by script)."""
    if lang not in LANG_SCRIPT:
        raise KeyError(f"no script known for language {lang!r}; known: {sorted(LANG_SCRIPT)}. Add it to "
                       f"scripts_unicode.LANG_SCRIPT")
    scripts = tuple(sorted(LANG_SCRIPT[lang]))
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


def _resample_means(mats: Sequence[np.ndarray], n_boot: int, seed: int, groups=None) -> list[np.ndarray]:
    """Two-stage bootstrap means of (P, S) matrices with SHARED indices: prompts drawn with
    replacement, then seeds drawn with replacement within each drawn prompt. Returns (n_boot,) each.

    ``groups`` (P,) labels (e.g. the document several prompt windows were cut from): the first stage
    draws whole groups with replacement (cluster bootstrap), so correlated prompts are not counted as
    independent. None, or every label distinct: the prompt-level draw above."""
    P, S = mats[0].shape
    rng = np.random.default_rng(seed)
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (P,):
            raise ValueError(f"groups must have one label per prompt ({P}), got shape {g.shape}")
        if len(np.unique(g)) < P:
            members = [np.flatnonzero(g == u) for u in np.unique(g)]
            out = [np.empty(n_boot) for _ in mats]
            for b in range(n_boot):
                ip = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
                is_ = rng.integers(0, S, size=(len(ip), S))
                for o, m in zip(out, mats):
                    o[b] = m[ip[:, None], is_].mean()
            return out
    ip = rng.integers(0, P, size=(n_boot, P))
    is_ = rng.integers(0, S, size=(n_boot, P, S))
    return [m[ip[:, :, None], is_].mean(axis=(1, 2)) for m in mats]


def bootstrap_ratio(flags, n_boot: int = 2000, seed: int = 0, level: float = 0.95, groups=None) -> RatioCI:
    """Code-switch ratio of a (n_prompts, n_seeds) bool matrix with a two-stage bootstrap interval
    (``groups``: prompts cut from one document are resampled together, :func:`_resample_means`)."""
    f = _check_flags(flags)
    (b,) = _resample_means([f], n_boot, seed, groups)
    a = (1 - level) / 2
    return RatioCI(float(f.mean()), float(np.quantile(b, a)), float(np.quantile(b, 1 - a)), *f.shape)


def paired_bootstrap_diff(flags_a, flags_b, n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                          groups=None) -> RatioCI:
    """ratio(a) - ratio(b) for two models sampled on the SAME prompts and seeds, paired bootstrap."""
    fa, fb = _check_flags(flags_a), _check_flags(flags_b)
    if fa.shape != fb.shape:
        raise ValueError(f"paired flags must have the same (prompts, seeds) shape: {fa.shape} vs {fb.shape}")
    ba, bb = _resample_means([fa, fb], n_boot, seed, groups)
    d = ba - bb
    a = (1 - level) / 2
    return RatioCI(float(fa.mean() - fb.mean()), float(np.quantile(d, a)), float(np.quantile(d, 1 - a)), *fa.shape)


@dataclass(frozen=True)
class CutDesign:
    """Power of a paired SFT − SASFT comparison to detect a relative cut of the code-switch ratio.

    ratio: pilot ratio of the control arm; between_var: between-prompt variance of the true per-prompt
    ratio (sampling noise removed); n_samples: samples per prompt and arm in the design; cut: the
    relative cut to detect; effect = cut x ratio; sd_diff: SD of one prompt's paired difference under
    that cut; n_needed: prompts for 80% power at two-sided 0.05; n_used / mde: the design's prompts and
    the smallest difference they detect; design_effect: variance inflation of correlated prompts (windows of
    one document, :func:`design_effect`), already in n_needed and mde."""

    ratio: float
    between_var: float
    n_samples: int
    cut: float
    effect: float
    sd_diff: float
    n_needed: int
    n_used: int
    mde: float
    design_effect: float = 1.0


    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def design_effect(rates, groups) -> float:
    """Variance inflation of a mean over prompts that come in groups (windows of one document): the
    ratio-estimator variance over groups, ``G/(G−1) Σ_g (T_g − n_g·ȳ)² / N²``, over the prompt-level
    ``var(rates)/N`` (ddof 1); at least 1. Every group a single prompt: exactly 1."""
    r, g = np.asarray(rates, dtype=float), np.asarray(groups)
    if r.shape != g.shape or r.size < 2:
        raise ValueError(f"design_effect needs one group label per rate and >= 2 rates, got {r.shape} / {g.shape}")
    u, inv = np.unique(g, return_inverse=True)
    v_srs = r.var(ddof=1) / r.size
    if len(u) < 2 or v_srs == 0:
        return 1.0
    T, n = np.bincount(inv, weights=r), np.bincount(inv)
    v_c = len(u) / (len(u) - 1) * float(((T - n * r.mean()) ** 2).sum()) / r.size ** 2
    return max(1.0, v_c / v_srs)


def cut_design(flags, n_samples: int, cut: float = 0.5, n_used: int | None = None, groups=None,
               alpha: float = 0.05, power: float = 0.8) -> CutDesign:
    """Prompts needed to detect a ``cut`` (relative) of the code-switch ratio, from a pilot (P, S0) flag
    matrix of the control arm, with ``n_samples`` samples per prompt and arm.

    Model: prompt i has a true ratio p_i (mean m, between-prompt variance v); the treated arm has
    (1 − cut)·p_i; each arm's per-prompt ratio averages ``n_samples`` independent draws. The paired
    difference then has variance ``cut²·v + (E[p(1−p)] + E[q(1−q)]) / n_samples`` with q = (1 − cut)·p.
    From the pilot (S0 >= 2 samples): ``E[p(1−p)] = mean(p̂(1−p̂))·S0/(S0−1)``, ``v = max(0, var(p̂) −
    mean(p̂(1−p̂))/(S0−1))``. Sample size and MDE: :func:`qscope_utils.stats.n_paired` / ``mde_paired``,
    the variance times :func:`design_effect` of the pilot's per-prompt rates when ``groups`` is given."""
    from .stats import mde_paired, n_paired

    f = _check_flags(flags)
    if f.shape[1] < 2:
        raise ValueError(f"cut_design needs >= 2 samples per prompt in the pilot, got {f.shape[1]}")
    if not 0 < cut <= 1 or n_samples < 1:
        raise ValueError(f"cut must lie in (0, 1] and n_samples >= 1 (got cut={cut}, n_samples={n_samples})")
    p = f.mean(1)
    m, s0 = float(p.mean()), f.shape[1]
    w = float((p * (1 - p)).mean())
    v = max(0.0, float(p.var()) - w / (s0 - 1))
    e2 = v + m * m                                          # E[p²]
    within = (m - e2) + ((1 - cut) * m - (1 - cut) ** 2 * e2)
    deff = 1.0 if groups is None else design_effect(p, groups)
    sd = float(np.sqrt(deff * (cut ** 2 * v + within / n_samples)))
    effect = cut * m
    n_used = len(p) if n_used is None else n_used
    need = n_paired(effect, sd, alpha, power) if effect > 0 else 0
    return CutDesign(m, v, n_samples, cut, effect, sd, need, n_used, mde_paired(sd, n_used, alpha, power), deff)
