"""Scaling of the §4 redundancy metrics (qscope_utils.redundancy) with the number of samples.

Random sparse feature sets stand in for last-token SAE codes: N samples x d_sae = 65,536 features,
about ``active`` (default 100) active features per sample, feature ids drawn from a Zipf-like
popularity law (a few features fire on most samples, most are rare, as in real SAEs). Correctness
matrices: M = 26 models (the report's checkpoint count) with increasing skill.

Timed per N (median of repeats, one warm-up):
  footprint        F(D) and |F(D)|
  coverage         c_n for every n and R_hat from ``draws`` permutations
  tau              tau_n on the size grid (all n up to 5,000, then a 5,000-point grid) and R
  overlap          overlap / overlap_min matrices of 8 benchmarks of N samples each
  naive_cn         baseline: independent random subsets per n with a fresh union each
                   (F[S].getnnz(axis=0)), on a 20-point n grid only; ``naive_all_n_estimated_cpu_s``
                   extrapolates it linearly to every n = 1..N and ``draws`` draws (quadratic in N)
Wall and CPU seconds are both recorded; the log-log slope of CPU time vs N (1 = linear) is fitted per metric. Output:
results/benchmarks/redundancy_scaling.json (``--quick``: redundancy_scaling_quick.json).

    .venv/bin/python benchmarks/bench_redundancy.py           # up to 30k samples (about a minute on 2 cores)
    .venv/bin/python benchmarks/bench_redundancy.py --quick   # up to 3k samples (seconds)
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write  # noqa: E402

from qscope_utils import redundancy as rd  # noqa: E402

D_SAE = 65_536
M_MODELS = 26


def random_feature_sets(N: int, d: int = D_SAE, active: int = 100, seed: int = 0, zipf: float = 0.8) -> sp.csr_matrix:
    """(N, d) CSR bool with about ``active`` features per row, feature j drawn with p_j ∝ (j + 10)^-zipf."""
    rng = np.random.default_rng(seed)
    w = (np.arange(d) + 10.0) ** -zipf
    cdf = np.cumsum(w / w.sum())
    cols = np.searchsorted(cdf, rng.random(N * active)).clip(max=d - 1)
    rows = np.repeat(np.arange(N), active)
    F = sp.csr_matrix((np.ones(N * active, dtype=bool), (rows, cols)), shape=(N, d))
    F.sum_duplicates()
    return F.astype(bool)


def random_correctness(N: int, M: int = M_MODELS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    skill = np.linspace(0.2, 0.8, M)[:, None]
    difficulty = rng.normal(0, 1, N)[None, :]
    prob = 1 / (1 + np.exp(-(np.log(skill / (1 - skill)) - difficulty)))
    return (rng.random((M, N)) < prob).astype(np.int8)


def naive_cn(F: sp.csr_matrix, n_points: int = 20, draws: int = 5, seed: int = 0) -> np.ndarray:
    """Baseline: a fresh random subset and a fresh union per (n, draw), on an n grid."""
    rng = np.random.default_rng(seed)
    N = F.shape[0]
    size = rd.footprint_size(F)
    ns = np.unique(np.linspace(1, N, n_points).astype(int))
    return np.array([np.mean([(F[rng.choice(N, n, replace=False)].getnnz(axis=0) > 0).sum() / size
                              for _ in range(draws)]) for n in ns])


def timed(fn, repeats: int = 3, warmup: int = 1) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) of ``fn()``. On a shared machine the CPU
    time is the cost of the algorithm; the wall time also holds the wait for a core."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return float(np.median(wall)), float(np.median(cpu))


def slope(ns, ts) -> float:
    """Least-squares slope of log(time) on log(N)."""
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--active", type=int, default=100)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = args.sizes or ([300, 1000, 3000] if args.quick else [1000, 3000, 10000, 30000])
    t_all = time.perf_counter()
    rows = []
    for N in sizes:
        F = random_feature_sets(N, active=args.active, seed=args.seed)
        C = random_correctness(N, seed=args.seed)
        fps = {f"b{i}": rd.footprint(random_feature_sets(N, active=args.active, seed=args.seed + 10 + i))
               for i in range(8)}
        rep = args.repeats if N <= 10_000 else 1
        r = {"N": N, "d_sae": D_SAE, "nnz": int(F.nnz), "active_per_sample": F.nnz / N, "draws": args.draws}
        jobs = {"footprint": lambda: rd.footprint(F),
                "coverage": lambda: rd.coverage_curve(F, n_draws=args.draws, seed=args.seed),
                "tau": lambda: rd.tau_curve(C, n_draws=args.draws, seed=args.seed),
                "overlap8": lambda: rd.overlap_matrices(fps)}
        if N <= 10_000:
            jobs["naive_cn_20pts_5draws"] = lambda: naive_cn(F, seed=args.seed)
        for k, fn in jobs.items():
            r[f"{k}_s"], r[f"{k}_cpu_s"] = timed(fn, 1 if k.startswith("naive") else rep, 0 if k.startswith("naive") else 1)
        cov = rd.coverage_curve(F, n_draws=args.draws, seed=args.seed)
        tau = rd.tau_curve(C, n_draws=args.draws, seed=args.seed)
        r |= {"size_D": cov.size_D, "R_hat": cov.R_hat, "R": tau.R, "tau_grid": tau.grid, "tau_n_grid": len(tau.ns),
              "coverage_cpu_ms_per_draw": 1000 * r["coverage_cpu_s"] / args.draws,
              "tau_cpu_ms_per_draw": 1000 * r["tau_cpu_s"] / args.draws}
        if "naive_cn_20pts_5draws_cpu_s" in r:   # linear extrapolation to every n and the same number of draws
            r["naive_all_n_estimated_cpu_s"] = r["naive_cn_20pts_5draws_cpu_s"] * (N / 20) * (args.draws / 5)
        rows.append(r)
        print(f"N={N:6d} nnz={F.nnz:8d} |F(D)|={cov.size_D:6d}  CPU s: footprint {r['footprint_cpu_s']:.3f}  coverage "
              f"{r['coverage_cpu_s']:.2f} ({r['coverage_cpu_ms_per_draw']:.1f} ms/draw, all n)  tau {r['tau_cpu_s']:.2f}  "
              f"overlap(8) {r['overlap8_cpu_s']:.3f}  naive c_n (20 n x 5 draws) "
              f"{r.get('naive_cn_20pts_5draws_cpu_s', float('nan')):.2f}", flush=True)
    ns = [r["N"] for r in rows]
    fit = {k: slope(ns, [max(r[k], 1e-6) for r in rows])
           for k in ("footprint_cpu_s", "coverage_cpu_s", "tau_cpu_s", "overlap8_cpu_s")}
    naive = [r for r in rows if "naive_cn_20pts_5draws_cpu_s" in r]
    if len(naive) >= 2:
        fit["naive_cn_20pts_5draws_cpu_s"] = slope([r["N"] for r in naive], [r["naive_cn_20pts_5draws_cpu_s"] for r in naive])
    payload = {"rows": rows, "loglog_slope": fit, "seconds_total": round(time.perf_counter() - t_all, 1),
               "setup": {"d_sae": D_SAE, "models": M_MODELS, "active": args.active, "zipf": 0.8, "seed": args.seed,
                         "draws": args.draws, "max_grid": 5000},
               "load_average_at_end": list(__import__("os").getloadavg()),
               "note": "slopes are fitted on CPU seconds (wall seconds on a shared machine include waiting for a core)"}
    print("log-log slopes (1 = linear):", {k: round(v, 2) for k, v in fit.items()})
    p = write("redundancy_scaling_quick" if args.quick else "redundancy_scaling", payload)
    print(f"wrote {p}")
    return payload


if __name__ == "__main__":
    main()
