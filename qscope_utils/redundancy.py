"""§4 benchmark redundancy and similarity from SAE features (definitions: docs/CONVENTIONS.md §4, normative).

Objects
-------
* Feature sets ``F``: a scipy CSR bool matrix (N samples, d_sae); row i is
  F(x_i) = {j : z_j(x_i) > 0} at the LAST token of sample i (:func:`last_token_feature_sets`).
* Footprint F(D): union of the rows, a (d_sae,) bool vector (:func:`footprint`).
* Correctness matrix ``C``: (M models, N samples), 1 = correct (bool, int or float scores).

Metrics
-------
* Feature redundancy: c_n = E_{|S|=n}[|F(S)| / |F(D)|], R_hat(D) = sum_{n=1..N} c_n / |F(D)|
  (:func:`coverage_curve`).
* Performance redundancy: p = per-model accuracy on D, p_hat(S) on a subset S,
  tau_n = E_{|S|=n}[Kendall tau_b(p, p_hat(S))], R(D) = (1/N) sum_{n=1..N} tau_n (:func:`tau_curve`).
* overlap(D1, D2) = |F(D1) ∩ F(D2)| / |F(D1)| (asymmetric), overlap_min = |∩| / min(|F(D1)|, |F(D2)|)
  (:func:`overlap_matrices`).
* Similarity: Pearson / Spearman of two benchmarks' score vectors across models, and the partial
  correlation controlling for a general benchmark (pingouin) (:func:`score_correlations`).

Estimation (how the expectations are computed)
----------------------------------------------
Expectations over random subsets of size n use the *prefix trick*: the first n items of a uniformly
random permutation of D are a uniformly random n-subset, so ONE permutation gives one unbiased
sample of |F(S)| and of p_hat(S) for EVERY n at once. With ``n_draws`` permutations (seeded by
``seed``) the per-n estimates are means over ``n_draws`` draws; their standard errors, and the
standard errors of R and R_hat (one value of each per permutation), are reported.

Cost is near-linear: per draw, the union sizes of all prefixes come from the first-occurrence rank
of each feature (one pass over the CSC non-zeros, O(nnz + N + d_sae)); the Kendall taus of all
prefixes come from vectorised pair signs, O(M^2 N). No set is ever intersected with another.

c_n is computed for every n (exact sum for R_hat). tau_n is computed on a grid of sizes ``ns``: all
n = 1..N by default when N <= ``max_grid`` (5000), otherwise an evenly spaced grid of ``max_grid``
sizes including 1 and N, and R is then the trapezoidal average of tau_n over the grid (a
documented approximation; the tau_n curve is smooth in n).

Undefined taus: when every model scores the same on S (always the case for n = 1 with 0/1 scores
and frequently for small n), Kendall tau is undefined (scipy returns nan). ``nan_policy="zero"``
(default) counts such a subset as tau = 0 (it carries no ranking information);
``nan_policy="omit"`` averages over the draws where tau is defined.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

__all__ = ["as_feature_sets", "last_token_feature_sets", "feature_sets_by_layer", "footprint", "footprint_size", "size_grid",
           "prefix_union_sizes", "CoverageCurve", "coverage_curve", "kendall_tau_b", "TauCurve", "tau_curve",
           "overlap", "overlap_min", "overlap_matrices", "score_correlations", "partial_corr_formula",
           "similarity_vs_overlap", "corr_with_ci", "redundancy_table", "PAPER", "RedundancyConfig",
           "redundancy_by_benchmark", "rho_r_rhat", "fmt_corr", "plot_r_vs_rhat", "plot_overlap_heatmap",
           "plot_similarity", "plot_curves"]


# ----------------------------------------------------------------------------- feature sets

def as_feature_sets(x, d_sae: int | None = None) -> sp.csr_matrix:
    """Normalise feature sets to a CSR bool matrix (N, d_sae).

    Accepts a scipy sparse matrix (non-zero = active), a dense array (``> 0`` = active, i.e.
    codes ``z`` may be passed directly), or a list of index lists (then ``d_sae`` is required).
    """
    if sp.issparse(x):
        m = sp.csr_matrix(x)
        m.eliminate_zeros()
        if m.dtype != bool:
            m = (m > 0).tocsr() if m.dtype.kind in "iuf" else m.astype(bool)
        return m.astype(bool)
    if isinstance(x, (list, tuple)) and (len(x) == 0 or not np.isscalar(x[0])):
        if d_sae is None:
            raise ValueError("a list of index lists needs d_sae (the SAE width): as_feature_sets(sets, d_sae=...)")
        rows = np.repeat(np.arange(len(x)), [len(s) for s in x])
        cols = np.fromiter((int(j) for s in x for j in s), dtype=np.int64, count=len(rows))
        if len(cols) and (cols.min() < 0 or cols.max() >= d_sae):
            raise ValueError(f"feature ids must lie in [0, {d_sae}); got {cols.min()}..{cols.max()}")
        m = sp.csr_matrix((np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(x), d_sae))
        m.sum_duplicates()
        return m.astype(bool)
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"feature sets must be 2-D (samples, d_sae); got shape {a.shape}")
    return sp.csr_matrix(a > 0)


def last_token_feature_sets(model, tokenizer, saes, texts: Sequence[str], batch_size: int = 32,
                            max_length: int = 256, progress: bool = True) -> dict[int, sp.csr_matrix]:
    """F(x) at the last token of each text for several SAE layers: layer -> CSR bool (len(texts), d_sae).

    :func:`qscope_utils.features.last_token_features` with this section's batch / length defaults.
    """
    from .features import last_token_features

    return last_token_features(model, tokenizer, saes, list(texts), batch_size=batch_size, max_length=max_length,
                               progress=progress)


def feature_sets_by_layer(model, tokenizer, saes, prompts: Mapping[str, Sequence[str]], layers: Sequence[int],
                          batch_size: int = 32, max_length: int = 256, progress: bool = True
                          ) -> dict[int, dict[str, sp.csr_matrix]]:
    """layer -> benchmark -> F(x) CSR bool (n_prompts, d_sae) for every benchmark's prompts.

    One forward pass per batch of each benchmark captures all ``layers``; the SAE encodes then run
    layers outer (:func:`qscope_utils.features.last_token_features_many`), so with a loader
    (``scope.saes``) each layer file is read once for all benchmarks and at most its cache is alive.
    """
    from .features import last_token_features_many

    by_name = last_token_features_many(model, tokenizer, saes, {n: list(p) for n, p in prompts.items()},
                                       batch_size, max_length, progress, layers)
    return {int(l): {n: by_name[n][l] for n in prompts} for l in layers}


def footprint(F) -> np.ndarray:
    """F(D): (d_sae,) bool, features active on at least one sample."""
    F = as_feature_sets(F)
    return np.asarray(F.getnnz(axis=0) > 0).ravel()


def footprint_size(F) -> int:
    """|F(D)|."""
    return int(footprint(F).sum())


# ----------------------------------------------------------------------------- subsets

def size_grid(N: int, max_grid: int = 5000) -> np.ndarray:
    """Subset sizes at which tau_n is evaluated: 1..N if N <= max_grid, else ``max_grid`` evenly spaced
    integers from 1 to N (both included, strictly increasing)."""
    if N < 1:
        raise ValueError("a benchmark needs at least one sample")
    if N <= max_grid:
        return np.arange(1, N + 1)
    return np.unique(np.round(np.linspace(1, N, max_grid)).astype(np.int64))


def _grid_mean(ns: np.ndarray, y: np.ndarray, N: int) -> np.ndarray:
    """(1/N) sum_{n=1..N} y_n, exact when ns = 1..N, trapezoidal over the grid otherwise. y: (..., len(ns))."""
    if len(ns) == N:
        return y.sum(-1) / N
    if len(ns) == 1:
        return y[..., 0]
    # trapezoid approximates the integral from 1 to N; add the half-weights of the end points so that the
    # estimator reduces to the plain sum when the grid is 1..N
    integral = np.trapezoid(y, ns, axis=-1) + 0.5 * (y[..., 0] + y[..., -1])
    return integral / N


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _column_rows(F: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """(row index of every non-zero in column-major order, start offset of each non-empty column)."""
    csc = F.tocsc()
    counts = np.diff(csc.indptr)
    nonempty = np.flatnonzero(counts)
    return csc.indices.astype(np.int64), csc.indptr[nonempty]


def _prefix_union(rows: np.ndarray, starts: np.ndarray, perm: np.ndarray, N: int) -> np.ndarray:
    rank = np.empty(N, dtype=np.int64)
    rank[perm] = np.arange(N)
    if starts.size == 0:
        return np.zeros(N, dtype=np.int64)
    first = np.minimum.reduceat(rank[rows], starts)
    return np.cumsum(np.bincount(first, minlength=N))


def prefix_union_sizes(F, perm: np.ndarray) -> np.ndarray:
    """|F(first n items of perm)| for n = 1..N: (N,) int64, in O(nnz + N + d_sae).

    A feature enters the union at the first prefix that contains one of its samples, i.e. at the
    minimum permutation rank over its column; the union size curve is the cumulative count of
    first-entry ranks.
    """
    F = as_feature_sets(F)
    rows, starts = _column_rows(F)
    return _prefix_union(rows, starts, np.asarray(perm), F.shape[0])


@dataclass
class CoverageCurve:
    """c_n curve and R_hat of one benchmark.

    ns: sizes (N,) = 1..N; c_n / c_n_se: mean and standard error over draws of |F(S)|/|F(D)|;
    size_D: |F(D)|; R_hat: sum_n c_n / |F(D)| (SPEC §4) and R_hat_se its standard error over draws;
    mean_coverage: (1/N) sum_n c_n (a size-free companion, not in the report); n_draws, seed.
    """

    ns: np.ndarray
    c_n: np.ndarray
    c_n_se: np.ndarray
    size_D: int
    R_hat: float
    R_hat_se: float
    mean_coverage: float
    n_draws: int
    seed: int

    def summary(self) -> dict:
        return {"N": int(len(self.ns)), "size_D": self.size_D, "R_hat": self.R_hat, "R_hat_se": self.R_hat_se,
                "mean_coverage": self.mean_coverage, "n_draws": self.n_draws, "seed": self.seed}


def coverage_curve(F, n_draws: int = 100, seed: int = 0) -> CoverageCurve:
    """c_n for n = 1..N and R_hat(D) = sum_n c_n / |F(D)| from ``n_draws`` random permutations (seeded)."""
    F = as_feature_sets(F)
    N = F.shape[0]
    if N == 0:
        raise ValueError("empty benchmark: no samples")
    size_D = footprint_size(F)
    if size_D == 0:
        raise ValueError("no feature is active on any sample (|F(D)| = 0): R_hat is undefined. Check the layer "
                         "and that the SAE codes were thresholded at > 0")
    rng = _rng(seed)
    rows, starts = _column_rows(F)
    cov = np.empty((n_draws, N))
    for d in range(n_draws):
        cov[d] = _prefix_union(rows, starts, rng.permutation(N), N) / size_D
    per_draw = cov.sum(1) / size_D
    se = lambda a: a.std(0, ddof=1) / math.sqrt(n_draws) if n_draws > 1 else np.zeros_like(a.mean(0))
    return CoverageCurve(np.arange(1, N + 1), cov.mean(0), se(cov), size_D, float(per_draw.mean()),
                         float(se(per_draw)), float(cov.mean()), n_draws, seed)


# ----------------------------------------------------------------------------- Kendall tau

def _pair_index(M: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(M, k=1)


def kendall_tau_b(p: np.ndarray, P: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Kendall tau-b between ``p`` (M,) and every column of ``P`` (M, K): (K,), nan where undefined.

    Identical to ``scipy.stats.kendalltau(p, P[:, k]).statistic`` (variant 'b', ties handled):
    tau_b = sum_pairs s_x s_y / sqrt(sum s_x^2 * sum s_y^2) with s = sign of the pair difference.
    Cost O(M^2 K), no Python loop over columns.
    """
    p = np.asarray(p, dtype=np.float64)
    P = np.asarray(P, dtype=np.float64)
    if P.ndim == 1:
        P = P[:, None]
    if p.shape[0] != P.shape[0]:
        raise ValueError(f"p has {p.shape[0]} models but P has {P.shape[0]} rows")
    a, b = _pair_index(p.shape[0])
    sx = np.sign(p[a] - p[b])
    nx = (sx * sx).sum()
    out = np.empty(P.shape[1])
    for s in range(0, P.shape[1], chunk):          # column chunks keep the (pairs, chunk) arrays in cache
        Q = P[:, s:s + chunk]
        sy = np.sign(Q[a] - Q[b])
        num = sx @ sy
        den = np.sqrt(nx * (sy * sy).sum(0))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s:s + chunk] = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    return out


@dataclass
class TauCurve:
    """tau_n curve and R(D) of one benchmark.

    ns: evaluated sizes; tau_n / tau_n_se: mean and standard error over draws; R: (1/N) sum_n tau_n
    (exact on the full grid, trapezoidal otherwise) and R_se its standard error over draws;
    undefined_share: (len(ns),) share of draws where tau was undefined (all models tied on S);
    p: (M,) accuracies on all of D; nan_policy, n_draws, seed, grid ('all' or 'stride').
    """

    ns: np.ndarray
    tau_n: np.ndarray
    tau_n_se: np.ndarray
    R: float
    R_se: float
    undefined_share: np.ndarray
    p: np.ndarray
    nan_policy: str
    n_draws: int
    seed: int
    grid: str

    def summary(self) -> dict:
        return {"N": int(self.ns[-1]), "M": int(len(self.p)), "R": self.R, "R_se": self.R_se,
                "n_grid": int(len(self.ns)), "grid": self.grid, "nan_policy": self.nan_policy,
                "n_draws": self.n_draws, "seed": self.seed, "acc_min": float(self.p.min()),
                "acc_max": float(self.p.max())}


def _as_correctness(C) -> np.ndarray:
    C = np.asarray(C.values if isinstance(C, pd.DataFrame) else C, dtype=np.float64)
    if C.ndim != 2:
        raise ValueError(f"correctness must be (models, samples); got shape {C.shape}")
    if C.shape[0] < 2:
        raise ValueError(f"Kendall tau needs at least 2 models; got {C.shape[0]}")
    if np.isnan(C).any():
        raise ValueError("correctness matrix has missing entries (nan): every model needs a score on every sample")
    return C


def tau_curve(C, n_draws: int = 100, seed: int = 0, max_grid: int = 5000, nan_policy: str = "zero") -> TauCurve:
    """tau_n on the size grid and R(D) from a correctness matrix ``C`` (M models, N samples).

    Subset accuracies p_hat(S) of all prefixes of a permutation come from one cumulative sum; ties
    are compared on the sums (exact for 0/1 scores). ``nan_policy``: 'zero' or 'omit' (module doc).
    """
    if nan_policy not in ("zero", "omit"):
        raise ValueError("nan_policy must be 'zero' or 'omit'")
    C = _as_correctness(C)
    M, N = C.shape
    p = C.mean(1)
    if np.all(p == p[0]):
        raise ValueError("every model has the same accuracy on the full benchmark: the reference ranking p is "
                         "all ties, so Kendall tau (and R) is undefined")
    ns = size_grid(N, max_grid)
    rng = _rng(seed)
    taus = np.empty((n_draws, len(ns)))
    for d in range(n_draws):
        sums = np.cumsum(C[:, rng.permutation(N)], axis=1)[:, ns - 1]   # (M, len(ns)) = n * p_hat
        taus[d] = kendall_tau_b(p, sums)
    undefined = np.isnan(taus)
    if nan_policy == "zero":
        taus = np.where(undefined, 0.0, taus)
    with np.errstate(invalid="ignore"):
        tau_n = np.nanmean(taus, 0) if nan_policy == "omit" else taus.mean(0)
        cnt = (~np.isnan(taus)).sum(0)
        tau_se = np.nanstd(taus, 0, ddof=1) / np.sqrt(np.maximum(cnt, 1)) if n_draws > 1 else np.zeros(len(ns))
    tau_n = np.nan_to_num(tau_n, nan=0.0)   # only possible with 'omit' when no draw was defined at that n
    per_draw = _grid_mean(ns, np.nan_to_num(taus, nan=0.0) if nan_policy == "zero" else
                          np.where(np.isnan(taus), tau_n[None], taus), N)
    R = float(_grid_mean(ns, tau_n, N))
    R_se = float(per_draw.std(ddof=1) / math.sqrt(n_draws)) if n_draws > 1 else 0.0
    return TauCurve(ns, tau_n, np.nan_to_num(tau_se), R, R_se, undefined.mean(0), p, nan_policy, n_draws, seed,
                    "all" if len(ns) == N else "stride")


# ----------------------------------------------------------------------------- overlap

def _fp(x) -> np.ndarray:
    """A footprint from either a footprint vector (1-D bool) or feature sets (2-D)."""
    if sp.issparse(x) or np.ndim(x) == 2:
        return footprint(x)
    return np.asarray(x).astype(bool)


def overlap(D1, D2) -> float:
    """overlap(D1, D2) = |F(D1) ∩ F(D2)| / |F(D1)| (asymmetric). Accepts footprints or feature sets."""
    f1, f2 = _fp(D1), _fp(D2)
    if f1.shape != f2.shape:
        raise ValueError(f"footprints of different SAE widths: {f1.shape} vs {f2.shape}")
    n1 = f1.sum()
    return float((f1 & f2).sum() / n1) if n1 else float("nan")


def overlap_min(D1, D2) -> float:
    """|F(D1) ∩ F(D2)| / min(|F(D1)|, |F(D2)|) (symmetric)."""
    f1, f2 = _fp(D1), _fp(D2)
    m = min(f1.sum(), f2.sum())
    return float((f1 & f2).sum() / m) if m else float("nan")


def overlap_matrices(footprints: Mapping[str, np.ndarray]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(overlap, overlap_min) DataFrames over benchmarks; overlap.loc[a, b] = |F(a) ∩ F(b)| / |F(a)|.

    One sparse product of the stacked (B, d_sae) footprints gives every intersection size.
    """
    names = list(footprints)
    A = sp.csr_matrix(np.stack([_fp(footprints[n]) for n in names]).astype(np.int64))
    inter = (A @ A.T).toarray().astype(np.float64)
    size = np.diag(inter).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ov = inter / size[:, None]
        ovm = inter / np.minimum(size[:, None], size[None, :])
    return pd.DataFrame(ov, names, names), pd.DataFrame(ovm, names, names)


# ----------------------------------------------------------------------------- correlations

def partial_corr_formula(r_xy: float, r_xz: float, r_yz: float) -> float:
    """First-order partial correlation r_xy.z = (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))."""
    return (r_xy - r_xz * r_yz) / math.sqrt((1 - r_xz ** 2) * (1 - r_yz ** 2))


def score_correlations(scores: pd.DataFrame, benchmarks: Sequence[str] | None = None,
                       control: str | None = None) -> pd.DataFrame:
    """Pairwise score similarity across models: one row per unordered benchmark pair.

    scores: DataFrame (models x benchmarks) of accuracies. Columns of the result: a, b, pearson,
    spearman and, with ``control`` (the general benchmark, e.g. MMLU), partial_pearson and
    partial_spearman from ``pingouin.partial_corr(x=a, y=b, covar=control)``. Pairs are drawn from
    ``benchmarks`` (default: every column except ``control``). Correlations are nan (not an error) with
    fewer than 3 models (partial: 5) or a constant score vector.
    """
    import pingouin as pg

    if control is not None and control not in scores.columns:
        raise KeyError(f"control benchmark {control!r} is not among the score columns {list(scores.columns)}")
    names = list(benchmarks) if benchmarks is not None else [c for c in scores.columns if c != control]
    missing = [n for n in names if n not in scores.columns]
    if missing:
        raise KeyError(f"no scores for {missing}")
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = scores[a].to_numpy(float), scores[b].to_numpy(float)
            row = {"a": a, "b": b, "pearson": _safe_corr(stats.pearsonr, x, y),
                   "spearman": _safe_corr(stats.spearmanr, x, y)}
            if control is not None:
                for method in ("pearson", "spearman"):
                    row[f"partial_{method}"] = _partial(pg, scores, a, b, control, method)
            rows.append(row)
    return pd.DataFrame(rows)


def _safe_corr(fn, x, y) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(fn(x, y)[0])


def _partial(pg, scores: pd.DataFrame, a: str, b: str, control: str, method: str) -> float:
    if a == control or b == control:
        return float("nan")
    df = scores[[a, b, control]].astype(float)
    if len(df) < 5 or ((df.max() - df.min()) == 0).any():
        return float("nan")
    df.columns = ["x", "y", "z"]   # pingouin needs distinct column names
    return float(pg.partial_corr(data=df, x="x", y="y", covar="z", method=method)["r"].iloc[0])


def corr_with_ci(x, y, method: str = "pearson", level: float = 0.95) -> dict:
    """Correlation of two vectors with a Fisher-z interval (Spearman: Bonett-Wright se 1.06/sqrt(n-3)).

    Returns {r, lo, hi, p, n}. Intervals are nan for n <= 3.
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = ~(np.isnan(x) | np.isnan(y))
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"r": float("nan"), "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "n": n}
    res = stats.pearsonr(x, y) if method == "pearson" else stats.spearmanr(x, y)
    r, pval = float(res[0]), float(res[1])
    if n <= 3 or abs(r) >= 1:
        return {"r": r, "lo": float("nan"), "hi": float("nan"), "p": pval, "n": n}
    se = (1.0 if method == "pearson" else 1.06) / math.sqrt(n - 3)
    zc = stats.norm.ppf(0.5 + level / 2)
    z = math.atanh(r)
    return {"r": r, "lo": math.tanh(z - zc * se), "hi": math.tanh(z + zc * se), "p": pval, "n": n}


def similarity_vs_overlap(pairs: pd.DataFrame, ov_min: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Join each pair's overlap_min to its score correlations and correlate them (the report's 28-pair test).

    Returns (pairs with an ``overlap_min`` column, {'<method>_<direct|partial>': corr_with_ci dict}) where
    method is the outer correlation (pearson / spearman) between overlap_min and the score
    correlation; 'direct' uses the Pearson score correlation, 'partial' the partial Pearson one, as in
    the report.
    """
    pairs = pairs.copy()
    pairs["overlap_min"] = [float(ov_min.loc[a, b]) for a, b in zip(pairs.a, pairs.b)]
    out = {}
    for outer in ("pearson", "spearman"):
        out[f"{outer}_direct"] = corr_with_ci(pairs.overlap_min, pairs.pearson, outer)
        if "partial_pearson" in pairs:
            out[f"{outer}_partial"] = corr_with_ci(pairs.overlap_min, pairs.partial_pearson, outer)
    return pairs, out


def redundancy_table(taus: Mapping[str, TauCurve], covs: Mapping[str, CoverageCurve]) -> pd.DataFrame:
    """One row per benchmark: N, |F(D)|, R, R_se, R_hat, R_hat_se, mean_coverage, share of undefined taus."""
    rows = []
    for name in taus:
        t, c = taus[name], covs[name]
        rows.append({"benchmark": name, "N": int(t.ns[-1]), "size_D": c.size_D, "R": t.R, "R_se": t.R_se,
                     "R_hat": c.R_hat, "R_hat_se": c.R_hat_se, "mean_coverage": c.mean_coverage,
                     "acc_min": float(t.p.min()), "acc_max": float(t.p.max()),
                     "tau_undefined_share": float(t.undefined_share.mean())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- section pipeline

# The report's numbers (docs/CONVENTIONS.md §4), printed beside ours.
PAPER = {"rho_R_Rhat": 0.85, "n_benchmarks": 17, "n_checkpoints": 26, "overlap_GSM8K_MATH": 0.63,
         "overlap_MATH_GSM8K": 0.10, "pearson_direct": 0.684, "pearson_partial": 0.755,
         "spearman_direct": 0.607, "spearman_partial": 0.713, "n_pairs": 28}

MINI_PAIRS = ("gsm", "math", "code", "poem-lzh", "cloze-en", "cloze-ru", "cloze-fr", "cloze-zh")
PAPER_PAIRS = ("EvalPlus", "MBPP", "MultiPL-E", "MMLU-Pro", "SuperGPQA", "TheoremQA", "GSM8K", "MATH")
"""The 8 benchmarks of the report's Fig. 6 / Table 2 (28 pairs)."""


@dataclass
class RedundancyConfig:
    """Sizes and settings of section §4 (notebook 03).

    n_items / n_general: items per mini benchmark / in the general control (None = all, paper);
    layer: SAE layer of the headline figures (None = the group's middle layer); sweep_layers: also
    compute R_hat, overlaps and rho(R, R_hat) at every layer (cheap: one forward pass);
    n_draws: random permutations per expectation (seeded by ``seed``); max_grid: tau_n grid size;
    control: the general benchmark partialled out; pair_benchmarks: the 8 benchmarks whose 28 pairs
    are correlated (paper: the report's Fig. 6 eight, :data:`PAPER_PAIRS`; mini: their analogues).
    """

    n_items: int | None = 200
    n_general: int | None = 250
    n_choices: int = 4
    layer: int | None = None
    sweep_layers: bool = True
    n_draws: int = 200
    max_grid: int = 5000
    nan_policy: str = "zero"
    batch_size: int = 64
    max_length: int = 160
    feature_max_length: int = 256
    max_new_tokens: int = 6
    control: str = "general"
    pair_benchmarks: tuple[str, ...] = MINI_PAIRS
    seed: int = 0

    @classmethod
    def for_profile(cls, name: str) -> "RedundancyConfig":
        if name == "mini":
            return cls()
        if name == "smoke":
            return cls(n_items=16, n_general=20, n_draws=20, batch_size=32)
        if name == "paper":
            return cls(n_items=None, n_general=None, sweep_layers=False, n_draws=100, batch_size=16,
                       feature_max_length=2048, control="MMLU", pair_benchmarks=PAPER_PAIRS)
        raise ValueError(f"unknown profile {name!r}: mini, smoke or paper")

    def to_dict(self) -> dict:
        return asdict(self)


def redundancy_by_benchmark(correct: Mapping[str, pd.DataFrame | np.ndarray], fsets: Mapping[str, sp.csr_matrix],
                            n_draws: int = 200, seed: int = 0, max_grid: int = 5000, nan_policy: str = "zero",
                            ) -> tuple[pd.DataFrame, dict, dict]:
    """R and R_hat of every benchmark present in both mappings.

    Returns (table, taus, covs): table has one row per benchmark (see :func:`redundancy_table`, plus a
    ``note`` column); a benchmark on which every model has the same accuracy gets R = nan and a note
    (Kendall tau undefined), never a made-up value.
    """
    names = [n for n in correct if n in fsets]
    taus, covs, rows = {}, {}, []
    for name in names:
        covs[name] = coverage_curve(fsets[name], n_draws=n_draws, seed=seed)
        C = correct[name]
        try:
            taus[name] = tau_curve(C, n_draws=n_draws, seed=seed, max_grid=max_grid, nan_policy=nan_policy)
            rows.append(redundancy_table({name: taus[name]}, {name: covs[name]}).iloc[0].to_dict() | {"note": ""})
        except ValueError as e:
            acc = np.asarray(C, dtype=float).mean(1)
            c = covs[name]
            rows.append({"benchmark": name, "N": int(np.shape(C)[1]), "size_D": c.size_D, "R": np.nan, "R_se": np.nan,
                         "R_hat": c.R_hat, "R_hat_se": c.R_hat_se, "mean_coverage": c.mean_coverage,
                         "acc_min": float(acc.min()), "acc_max": float(acc.max()), "tau_undefined_share": 1.0,
                         "note": str(e).split(":")[0]})
    return pd.DataFrame(rows), taus, covs


def rho_r_rhat(table: pd.DataFrame, x: str = "R_hat") -> dict:
    """Spearman rho between R and ``x`` (R_hat by default) over the benchmarks where R is defined."""
    ok = table["R"].notna()
    return corr_with_ci(table.loc[ok, "R"], table.loc[ok, x], "spearman")


def fmt_corr(c: Mapping) -> str:
    """'0.71 [0.12, 0.93], n=8' for a corr_with_ci dict."""
    if c is None or not np.isfinite(c.get("r", np.nan)):
        return f"undefined (n={c.get('n', 0) if c else 0})"
    return f"{c['r']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}], n={c['n']}"


# ----------------------------------------------------------------------------- figures

def plot_r_vs_rhat(table: pd.DataFrame, rho: Mapping, ax=None, paper_rho: float = PAPER["rho_R_Rhat"]):
    """Scatter of R_hat (x) vs R (y) with benchmark labels, ±1 se bars, ours vs the report's rho."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    t = table[table["R"].notna()]
    ax.errorbar(t.R_hat, t.R, xerr=t.R_hat_se, yerr=t.R_se, fmt="o", ms=5, capsize=2)
    for _, r in t.iterrows():
        ax.annotate(r.benchmark, (r.R_hat, r.R), xytext=(3, 3), textcoords="offset points", fontsize=7)
    ax.set_xscale("log")                      # R_hat scales with N / |F(D)|: spread over decades
    ax.set_xlabel(r"feature redundancy $\hat R(D)=\sum_n c_n/|F(D)|$ (log scale)")
    ax.set_ylabel(r"performance redundancy $R(D)=\frac{1}{N}\sum_n \tau_n$")
    ax.set_title(f"Spearman ρ = {fmt_corr(rho)}  (report: {paper_rho:.2f}, 17 benchmarks)", fontsize=9)
    return ax


def plot_overlap_heatmap(ov: pd.DataFrame, ax=None, title: str = "overlap(row, col) = |F(row)∩F(col)| / |F(row)|"):
    """Heatmap of the asymmetric overlap matrix with the values written in the cells."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    im = ax.imshow(ov.values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(ov.columns)), ov.columns, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(ov.index)), ov.index, fontsize=7)
    for i in range(ov.shape[0]):
        for j in range(ov.shape[1]):
            v = ov.values[i, j]
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < 0.6 else "k")
    ax.set_title(title, fontsize=9)
    plt.colorbar(im, ax=ax, fraction=0.046)
    return ax


def plot_similarity(pairs: pd.DataFrame, sim: Mapping, axes=None, paper: Mapping = PAPER):
    """overlap_min (x) vs score correlation (y): direct Pearson and partial (control) Pearson panels."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = [("pearson", "direct", "score Pearson r across checkpoints")]
    if "partial_pearson" in pairs:
        panels.append(("partial_pearson", "partial", "partial Pearson r (control partialled out)"))
    for ax, (col, kind, ylab) in zip(axes, panels):
        ax.scatter(pairs.overlap_min, pairs[col], s=18)
        for _, r in pairs.iterrows():
            ax.annotate(f"{r.a}/{r.b}", (r.overlap_min, r[col]), fontsize=5, alpha=0.7)
        ax.set_xlabel("overlap_min = |F(D1)∩F(D2)| / min(|F(D1)|, |F(D2)|)")
        ax.set_ylabel(ylab)
        ax.set_title(f"{kind}: Pearson {fmt_corr(sim.get(f'pearson_{kind}'))}\n"
                     f"Spearman {fmt_corr(sim.get(f'spearman_{kind}'))}\n"
                     f"report ({paper['n_pairs']} pairs): Pearson {100 * paper[f'pearson_{kind}']:.1f}, "
                     f"Spearman {100 * paper[f'spearman_{kind}']:.1f}", fontsize=8)
    return axes


def plot_curves(taus: Mapping[str, TauCurve], covs: Mapping[str, CoverageCurve], axes=None):
    """tau_n (left) and c_n (right) against the subset fraction n/N, one line per benchmark."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, t in taus.items():
        axes[0].plot(t.ns / t.ns[-1], t.tau_n, label=name, lw=1)
    for name, c in covs.items():
        axes[1].plot(c.ns / c.ns[-1], c.c_n, label=name, lw=1)
    axes[0].set_ylabel(r"$\tau_n$ (Kendall, subset vs full ranking)")
    axes[1].set_ylabel(r"$c_n = E|F(S)|/|F(D)|$")
    for ax in axes:
        ax.set_xlabel("n / N")
    axes[1].legend(fontsize=6, ncol=2)
    return axes
