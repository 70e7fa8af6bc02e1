"""Bootstrap confidence intervals shared by every section (percentile method, seeded).

* :func:`cluster_bootstrap` — mean of a (n_clusters, n_per_cluster) array, resampling clusters
  (rows: prompts, with all their seeds/samples), NaNs ignored; a 1-D array is one value per cluster.
* :func:`paired_diff_bootstrap` — the same for ``treat - base`` measured on the same layout.
* :func:`bootstrap_stat` — any statistic of paired per-example arrays (e.g. F1 of labels and
  predictions), resampling examples.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["cluster_bootstrap", "paired_diff_bootstrap", "bootstrap_stat"]


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
