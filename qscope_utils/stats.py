"""Bootstrap confidence intervals shared by every section (percentile method, seeded), and the
minimum detectable effect (MDE) of the designs the sections use.

* :func:`cluster_bootstrap` — mean of a (n_clusters, n_per_cluster) array, resampling clusters
  (rows: prompts, with all their seeds/samples), NaNs ignored; a 1-D array is one value per cluster.
* :func:`paired_diff_bootstrap` — the same for ``treat - base`` measured on the same layout.
* :func:`bootstrap_stat` — any statistic of paired per-example arrays (e.g. F1 of labels and
  predictions), resampling examples.

Power (normal approximation; two-sided α = 0.05 and power 0.8 unless given): with
``z = z_{1-α/2} + z_{power}`` (1.960 + 0.842 = 2.802), an estimate with standard error ``SE`` detects
a true effect ``MDE = z · SE`` with the stated power.

* paired difference over n prompts (per-prompt differences with SD ``s_d``, e.g. of per-prompt
  proportions): ``MDE = z · s_d / √n``, and ``n = ⌈(z · s_d / δ)²⌉`` to detect ``δ``
  (:func:`mde_paired`, :func:`n_paired`);
* two-sample mean difference (SDs ``s_a``, ``s_b``; sizes ``n_a``, ``n_b``):
  ``MDE = z · √(s_a²/n_a + s_b²/n_b)``, and per group ``n = ⌈z² (s_a² + s_b²) / δ²⌉``
  (:func:`mde_two_sample`, :func:`n_two_sample`); for proportions ``s = √(p(1−p))``;
* correlation over n units (Fisher z, variance 1/(n−3), 1.06/(n−3) for Spearman):
  ``MDE = tanh(z · √(v/(n−3)))`` and ``n = ⌈v (z / atanh ρ)² + 3⌉`` (:func:`mde_correlation`,
  :func:`n_correlation`);
* from a pilot's 95% interval: ``SE ≈ (hi − lo) / (2 · 1.960)`` (:func:`se_from_interval`); since the
  MDE scales as 1/√n, the n that detects ``δ`` is ``⌈n₀ (MDE₀ / δ)²⌉`` (:func:`n_for_effect`).
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

__all__ = ["one_se_pick", "cluster_bootstrap", "paired_diff_bootstrap", "bootstrap_stat", "z_power", "se_from_interval",
           "mde_from_se", "mde_paired", "n_paired", "mde_two_sample", "n_two_sample", "mde_correlation",
           "n_correlation", "n_for_effect"]


def _quantiles(boots: np.ndarray, level: float) -> tuple[float, float]:
    a = (1 - level) / 2
    return float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def cluster_bootstrap(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high) of the mean of ``values`` (n_clusters, n_per_cluster), resampling rows
    with replacement; NaNs are ignored (the estimate is the mean over non-NaN entries)."""
    v = np.asarray(values, dtype=float)
    v = v[:, None] if v.ndim == 1 else v.reshape(v.shape[0], -1)
    if v.shape[0] == 0 or np.all(np.isnan(v)):
        return (float("nan"),) * 3
    rng = np.random.default_rng(seed)
    sums, cnts = np.nansum(v, 1), np.sum(~np.isnan(v), 1)
    idx = rng.integers(0, v.shape[0], size=(n_boot, v.shape[0]))
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = sums[idx].sum(1) / cnts[idx].sum(1)
    boots = boots[~np.isnan(boots)]
    return (float(np.nanmean(v)), *_quantiles(boots, level))


def paired_diff_bootstrap(base, treat, **kw) -> tuple[float, float, float]:
    """(mean change, low, high) of ``treat - base`` (same clusters x samples layout), clusters resampled."""
    b, t = np.asarray(base, float), np.asarray(treat, float)
    if b.shape != t.shape:
        raise ValueError(f"paired arrays differ in shape: {b.shape} vs {t.shape}")
    return cluster_bootstrap(t - b, **kw)


def bootstrap_stat(stat: Callable[..., float], *arrays, n_boot: int = 1000, seed: int = 0,
                   level: float = 0.95) -> tuple[float, float, float]:
    """(estimate, low, high) of ``stat(*arrays)`` resampling the examples (axis 0) of all arrays together."""
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0])
    if n == 0 or any(len(a) != n for a in arrs):
        raise ValueError(f"bootstrap needs non-empty arrays of one length, got {[len(a) for a in arrs]}")
    rng = np.random.default_rng(seed)
    boots = np.array([stat(*(a[i] for a in arrs)) for i in (rng.integers(0, n, n) for _ in range(n_boot))])
    return (float(stat(*arrs)), *_quantiles(boots, level))


def z_power(alpha: float = 0.05, power: float = 0.8) -> float:
    """``z_{1-alpha/2} + z_{power}`` of a two-sided test (2.8016 at 0.05 and 0.8)."""
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha={alpha} and power={power} must lie strictly between 0 and 1")
    nd = NormalDist()
    return nd.inv_cdf(1 - alpha / 2) + nd.inv_cdf(power)


def se_from_interval(lo: float, hi: float, level: float = 0.95) -> float:
    """Standard error implied by a symmetric normal ``level`` interval ``[lo, hi]``."""
    if hi < lo:
        raise ValueError(f"interval [{lo}, {hi}] has hi < lo")
    return (hi - lo) / (2 * NormalDist().inv_cdf((1 + level) / 2))


def mde_from_se(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true effect an estimate with standard error ``se`` detects (two-sided ``alpha``, ``power``)."""
    return z_power(alpha, power) * se


def _ceil(x: float) -> int:
    """Ceiling that ignores float noise (50.000000000001 -> 50)."""
    return math.ceil(x - 1e-9)


def _check_n(*ns) -> None:
    if any(n < 1 for n in ns):
        raise ValueError(f"sample sizes must be >= 1, got {ns}")


def mde_paired(sd_diff: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE of a mean paired difference over ``n`` units whose differences have SD ``sd_diff``."""
    _check_n(n)
    return mde_from_se(sd_diff / math.sqrt(n), alpha, power)


def n_paired(effect: float, sd_diff: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units (prompts) a paired design needs to detect a mean difference ``effect``."""
    return _ceil((z_power(alpha, power) * sd_diff / abs(effect)) ** 2)


def mde_two_sample(sd_a: float, n_a: int, sd_b: float | None = None, n_b: int | None = None,
                   alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE of a difference of two independent means (``sd_b``/``n_b`` default to ``sd_a``/``n_a``)."""
    sd_b, n_b = sd_a if sd_b is None else sd_b, n_a if n_b is None else n_b
    _check_n(n_a, n_b)
    return mde_from_se(math.sqrt(sd_a ** 2 / n_a + sd_b ** 2 / n_b), alpha, power)


def n_two_sample(effect: float, sd_a: float, sd_b: float | None = None, alpha: float = 0.05,
                 power: float = 0.8) -> int:
    """Per-group size of a balanced two-sample design that detects a mean difference ``effect``."""
    sd_b = sd_a if sd_b is None else sd_b
    return _ceil(z_power(alpha, power) ** 2 * (sd_a ** 2 + sd_b ** 2) / effect ** 2)


def mde_correlation(n: int, spearman: bool = False, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest correlation over ``n`` units distinguishable from 0 (Fisher z; Spearman variance x1.06)."""
    if n <= 3:
        raise ValueError(f"a correlation test needs n > 3 units, got {n}")
    v = 1.06 if spearman else 1.0
    return math.tanh(z_power(alpha, power) * math.sqrt(v / (n - 3)))


def n_correlation(r: float, spearman: bool = False, alpha: float = 0.05, power: float = 0.8) -> int:
    """Units needed to distinguish a true correlation ``r`` from 0."""
    if not 0 < abs(r) < 1:
        raise ValueError(f"correlation {r} must lie in (-1, 1) and differ from 0")
    v = 1.06 if spearman else 1.0
    return _ceil(v * (z_power(alpha, power) / math.atanh(abs(r))) ** 2 + 3)


def n_for_effect(n0: int, mde0: float, effect: float) -> int:
    """Units needed to detect ``effect`` when the design detects ``mde0`` with ``n0`` (MDE ∝ 1/√n)."""
    if effect == 0:
        raise ValueError("an effect of 0 cannot be detected at any n")
    return _ceil(n0 * (mde0 / abs(effect)) ** 2)


def one_se_pick(candidates: Sequence, means: Sequence[float], ses: Sequence[float], maximize: bool = True):
    """The one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani & Friedman, ESL §7.10):
    the first candidate, in the given order of preference (simplest / weakest intervention first),
    whose mean is within one standard error of the best mean. A plain argmax flips between
    near-tied candidates with noise in the 5th digit; this rule only moves when the best one is
    better by more than its own standard error.

    candidates / means / ses: same length; NaN means are never picked, a NaN SE counts as 0.
    Returns ``(pick, best)``: the chosen candidate and the argmax one.
    """
    m = np.asarray(means, dtype=float)
    s = np.nan_to_num(np.asarray(ses, dtype=float), nan=0.0)
    if not (len(candidates) == len(m) == len(s)) or not len(m):
        raise ValueError(f"one_se_pick needs equal, non-empty candidates/means/ses (got {len(candidates)}, "
                         f"{len(m)}, {len(s)})")
    if np.isnan(m).all():
        raise ValueError("one_se_pick: every mean is NaN; nothing can be picked")
    sign = 1.0 if maximize else -1.0
    score = np.where(np.isnan(m), -np.inf, sign * m)
    b = int(np.argmax(score))
    ok = np.flatnonzero(score >= score[b] - s[b])
    return candidates[int(ok[0])], candidates[b]
