"""§4 metrics against hand-computed and brute-force values, and notebook 03 on the smoke profile."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from qscope_utils import redundancy as rd

from conftest import SENTENCES, make_sae_state


def _exact_cn(F: sp.csr_matrix) -> np.ndarray:
    """Brute force over all subsets: c_n = mean |F(S)| / |F(D)| for n = 1..N."""
    N = F.shape[0]
    size = rd.footprint_size(F)
    return np.array([np.mean([F[list(S)].getnnz(axis=0).astype(bool).sum() for S in itertools.combinations(range(N), n)])
                     / size for n in range(1, N + 1)])


def _exact_tau(C: np.ndarray) -> np.ndarray:
    """Brute force tau_n with scipy.stats.kendalltau, undefined subsets counted as 0."""
    p = C.mean(1)
    out = []
    for n in range(1, C.shape[1] + 1):
        v = []
        for S in itertools.combinations(range(C.shape[1]), n):
            t = stats.kendalltau(p, C[:, list(S)].mean(1)).statistic
            v.append(0.0 if np.isnan(t) else t)
        out.append(np.mean(v))
    return np.array(out)


# ----------------------------------------------------------------------------- feature sets and c_n

def test_as_feature_sets_accepts_lists_dense_and_sparse():
    a = rd.as_feature_sets([[0, 3], [3], []], d_sae=5)
    assert a.dtype == bool and a.shape == (3, 5) and a.nnz == 3
    dense = np.array([[0.5, 0, 0, 2.0, 0], [0, 0, 0, 1.0, 0], [0, 0, 0, 0, 0]])
    assert (rd.as_feature_sets(dense) != a).nnz == 0
    assert (rd.as_feature_sets(sp.csr_matrix(dense)) != a).nnz == 0
    with pytest.raises(ValueError, match="d_sae"):
        rd.as_feature_sets([[0, 1]])
    with pytest.raises(ValueError, match="must lie in"):
        rd.as_feature_sets([[0, 9]], d_sae=5)


def test_prefix_union_sizes_by_hand():
    F = rd.as_feature_sets([[0, 1], [1], [2], [0, 4]], d_sae=6)
    # order 2, 1, 3, 0: {2} -> {1,2} -> {0,1,2,4} -> unchanged
    assert rd.prefix_union_sizes(F, np.array([2, 1, 3, 0])).tolist() == [1, 2, 4, 4]
    assert rd.footprint(F).tolist() == [True, True, True, False, True, False]


def test_coverage_curve_matches_hand_values_and_brute_force():
    F = rd.as_feature_sets([[0, 1], [1], [2]], d_sae=5)
    # by hand: c_1 = (2+1+1)/3/3 = 4/9, c_2 = (2+3+2)/3/3 = 7/9, c_3 = 1, R_hat = (4/9+7/9+1)/3 = 20/27
    cov = rd.coverage_curve(F, n_draws=3000, seed=1)
    want = np.array([4 / 9, 7 / 9, 1.0])
    assert np.allclose(_exact_cn(F), want)
    assert np.all(np.abs(cov.c_n - want) <= 4 * cov.c_n_se + 1e-12)
    assert abs(cov.R_hat - 20 / 27) <= 4 * cov.R_hat_se
    assert cov.size_D == 3 and cov.c_n[-1] == 1.0


def test_coverage_curve_random_sets_vs_brute_force_and_seed():
    rng = np.random.default_rng(0)
    dense = rng.random((7, 12)) < 0.25
    dense[0, 0] = True
    F = sp.csr_matrix(dense)
    exact = _exact_cn(F)
    cov = rd.coverage_curve(F, n_draws=4000, seed=3)
    assert np.all(np.abs(cov.c_n - exact) <= 4 * cov.c_n_se + 1e-9)
    assert abs(cov.R_hat - exact.sum() / cov.size_D) <= 4 * cov.R_hat_se
    again = rd.coverage_curve(F, n_draws=50, seed=3)
    assert np.array_equal(again.c_n, rd.coverage_curve(F, n_draws=50, seed=3).c_n)
    assert not np.array_equal(again.c_n, rd.coverage_curve(F, n_draws=50, seed=4).c_n)


def test_coverage_rejects_empty_footprint():
    with pytest.raises(ValueError, match=r"\|F\(D\)\| = 0"):
        rd.coverage_curve(sp.csr_matrix((4, 10), dtype=bool))


# ----------------------------------------------------------------------------- tau_n and R

def test_kendall_tau_b_equals_scipy_with_ties():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 4, 9).astype(float)
    P = rng.integers(0, 3, (9, 40)).astype(float)
    P[:, 0] = 1.0                       # all tied: undefined
    got = rd.kendall_tau_b(p, P)
    want = np.array([stats.kendalltau(p, P[:, k]).statistic for k in range(P.shape[1])])
    assert np.isnan(got[0]) and np.isnan(want[0])
    assert np.allclose(got[1:], want[1:])


def test_tau_curve_matches_brute_force():
    C = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [0, 0, 0, 1], [0, 1, 1, 0]])
    exact = _exact_tau(C)
    tc = rd.tau_curve(C, n_draws=4000, seed=0)
    assert np.all(np.abs(tc.tau_n - exact) <= 4 * tc.tau_n_se + 1e-9)
    assert tc.tau_n[-1] == pytest.approx(1.0)          # the full set reproduces p exactly
    assert abs(tc.R - exact.mean()) <= 4 * tc.R_se + 1e-9
    assert tc.grid == "all" and tc.undefined_share[0] == 0  # no item ties every model here


def test_tau_curve_hand_case():
    # p = (2/3, 1/3, 0). n = 1: items give p_hat (1,1,0) tau=sqrt(2)/sqrt(3)*... computed with scipy below,
    # item 3 ties every model (tau undefined -> 0); n = 3: tau = 1.
    C = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
    t1 = np.mean([stats.kendalltau(C.mean(1), C[:, j]).statistic if C[:, j].std() else 0.0 for j in range(3)])
    tc = rd.tau_curve(C, n_draws=3000, seed=2)
    assert abs(tc.tau_n[0] - t1) <= 4 * tc.tau_n_se[0]
    assert tc.undefined_share[0] == pytest.approx(1 / 3, abs=0.04)
    omit = rd.tau_curve(C, n_draws=3000, seed=2, nan_policy="omit")
    assert omit.tau_n[0] > tc.tau_n[0]                 # omitting undefined draws raises the mean


def test_tau_grid_approximation_close_to_full():
    rng = np.random.default_rng(5)
    skill = np.linspace(0.2, 0.8, 6)
    C = (rng.random((6, 400)) < skill[:, None]).astype(int)
    full = rd.tau_curve(C, n_draws=40, seed=0)
    grid = rd.tau_curve(C, n_draws=40, seed=0, max_grid=40)
    assert grid.grid == "stride" and len(grid.ns) == 40 and grid.ns[0] == 1 and grid.ns[-1] == 400
    assert abs(full.R - grid.R) < 0.02
    assert rd.size_grid(10).tolist() == list(range(1, 11))


def test_tau_curve_errors_name_the_problem():
    with pytest.raises(ValueError, match="same accuracy"):
        rd.tau_curve(np.ones((3, 5)))
    with pytest.raises(ValueError, match="at least 2 models"):
        rd.tau_curve(np.ones((1, 5)))
    with pytest.raises(ValueError, match="nan"):
        rd.tau_curve(np.array([[1, np.nan], [0, 1]]))


# ----------------------------------------------------------------------------- overlap and correlations

def test_overlap_by_hand_and_matrix():
    f1 = np.zeros(8, bool); f1[[0, 1, 2, 3]] = True
    f2 = np.zeros(8, bool); f2[[2, 3, 4]] = True
    assert rd.overlap(f1, f2) == pytest.approx(2 / 4)
    assert rd.overlap(f2, f1) == pytest.approx(2 / 3)
    assert rd.overlap_min(f1, f2) == pytest.approx(2 / 3) == rd.overlap_min(f2, f1)
    F1 = rd.as_feature_sets([[0, 1], [2, 3]], d_sae=8)           # feature sets work as well
    assert rd.overlap(F1, f2) == pytest.approx(0.5)
    ov, ovm = rd.overlap_matrices({"a": f1, "b": f2, "c": F1})
    assert ov.loc["a", "b"] == pytest.approx(0.5) and ov.loc["b", "a"] == pytest.approx(2 / 3)
    assert np.allclose(np.diag(ov), 1) and np.allclose(ovm.values, ovm.values.T)


def test_partial_correlation_matches_direct_formula():
    rng = np.random.default_rng(0)
    z = rng.normal(size=12)
    x = z + rng.normal(scale=0.7, size=12)
    y = 0.5 * z + rng.normal(scale=0.7, size=12) + 0.3 * x
    w = rng.normal(size=12)
    scores = pd.DataFrame({"x": x, "y": y, "w": w, "mmlu": z})
    pairs = rd.score_correlations(scores, ["x", "y", "w"], control="mmlu")
    assert len(pairs) == 3
    r = np.corrcoef([x, y, z])
    want = (r[0, 1] - r[0, 2] * r[1, 2]) / math.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    row = pairs[(pairs.a == "x") & (pairs.b == "y")].iloc[0]
    assert row.partial_pearson == pytest.approx(want, abs=1e-10)
    assert rd.partial_corr_formula(r[0, 1], r[0, 2], r[1, 2]) == pytest.approx(want)
    assert row.pearson == pytest.approx(r[0, 1])
    assert row.spearman == pytest.approx(stats.spearmanr(x, y)[0])
    rk = np.corrcoef([stats.rankdata(v) for v in (x, y, z)])
    assert row.partial_spearman == pytest.approx(rd.partial_corr_formula(rk[0, 1], rk[0, 2], rk[1, 2]), abs=1e-10)


def test_score_correlations_degenerate_cases_give_nan():
    s = pd.DataFrame({"a": [0.1, 0.2, 0.3], "b": [0.2, 0.2, 0.2], "g": [0.3, 0.1, 0.2]})
    pairs = rd.score_correlations(s, ["a", "b"], control="g")
    assert np.isnan(pairs.pearson[0]) and np.isnan(pairs.partial_pearson[0])
    with pytest.raises(KeyError, match="control"):
        rd.score_correlations(s, ["a", "b"], control="mmlu")


def test_similarity_vs_overlap_on_28_pairs():
    rng = np.random.default_rng(3)
    names = [f"b{i}" for i in range(8)]
    scores = pd.DataFrame(rng.random((10, 9)), columns=names + ["general"])
    fps = {n: rng.random(200) < 0.3 for n in names}
    _, ovm = rd.overlap_matrices(fps)
    pairs, sim = rd.similarity_vs_overlap(rd.score_correlations(scores, names, "general"), ovm)
    assert len(pairs) == 28 and set(sim) == {"pearson_direct", "pearson_partial", "spearman_direct", "spearman_partial"}
    d = sim["pearson_direct"]
    assert d["r"] == pytest.approx(stats.pearsonr(pairs.overlap_min, pairs.pearson)[0])
    assert d["lo"] < d["r"] < d["hi"] and d["n"] == 28


def test_corr_with_ci_fisher_interval():
    x = np.arange(10.0)
    y = x + np.array([0.5, -1, 2, 0, 1, -2, 0.3, 1, -0.5, 0])
    c = rd.corr_with_ci(x, y)
    r = stats.pearsonr(x, y)[0]
    se = 1 / math.sqrt(7)
    assert c["r"] == pytest.approx(r)
    assert c["lo"] == pytest.approx(math.tanh(math.atanh(r) - 1.959963984540054 * se))
    assert np.isnan(rd.corr_with_ci([1, 2], [2, 1])["r"])


def test_redundancy_by_benchmark_marks_undefined_R():
    rng = np.random.default_rng(0)
    C_ok = pd.DataFrame((rng.random((5, 30)) < np.linspace(0.2, 0.8, 5)[:, None]).astype(int))
    C_flat = pd.DataFrame(np.zeros((5, 30), int))
    F = sp.csr_matrix(rng.random((30, 50)) < 0.1)
    table, taus, covs = rd.redundancy_by_benchmark({"ok": C_ok, "flat": C_flat}, {"ok": F, "flat": F}, n_draws=20)
    assert list(table.benchmark) == ["ok", "flat"] and set(taus) == {"ok"}
    assert np.isfinite(table.R[0]) and np.isnan(table.R[1]) and "same accuracy" in table.note[1]
    assert table.R_hat[0] == pytest.approx(table.R_hat[1])


def test_config_for_profiles():
    mini, smoke = rd.RedundancyConfig.for_profile("mini"), rd.RedundancyConfig.for_profile("smoke")
    assert len(mini.pair_benchmarks) == 8 and smoke.n_items < mini.n_items
    paper = rd.RedundancyConfig.for_profile("paper")
    assert paper.control == "MMLU"
    # the report's Fig. 6 / Table 2: 8 named benchmarks, 28 pairs, all loadable by default
    assert set(paper.pair_benchmarks) == {"EvalPlus", "MBPP", "MultiPL-E", "MMLU-Pro", "SuperGPQA", "TheoremQA",
                                          "GSM8K", "MATH"}
    from qscope_utils.benchmarks import PAPER_BENCHMARKS

    assert set(paper.pair_benchmarks) <= set(PAPER_BENCHMARKS) and len(list(itertools.combinations(
        paper.pair_benchmarks, 2))) == 28
    with pytest.raises(ValueError):
        rd.RedundancyConfig.for_profile("nope")


# ----------------------------------------------------------------------------- last-token feature sets

def test_last_token_feature_sets_match_dense_and_truncate_left(tiny_model):
    import torch

    from qscope_utils.hooks import capture_residuals
    from qscope_utils.sae import TopKSAE

    model, tok = tiny_model
    sae = TopKSAE.from_state_dict(make_sae_state(32, 1024, 3), k=8).requires_grad_(False)
    texts = SENTENCES[:7] + ["a b c d e f g h i j k l m n o p q r s t u v w x y z " * 3]
    F = rd.last_token_feature_sets(model, tok, {1: sae}, texts, batch_size=3, max_length=16, progress=False)[1]
    assert F.shape == (len(texts), 1024) and F.dtype == bool
    union_differs = 0
    for i, t in enumerate(texts):
        ids = tok([t], return_tensors="pt")["input_ids"][:, -16:]      # left truncation keeps the last token
        h = capture_residuals(model, ids, torch.ones_like(ids), [1])[1][0]
        codes = sae.encode(h)                                            # (T, d_sae), by hand per text
        want = set(torch.nonzero(codes[-1] > 0).ravel().tolist())
        assert set(F[i].indices.tolist()) == want
        union_differs += want != set(torch.nonzero(codes[1:].amax(0) > 0).ravel().tolist())
    assert union_differs >= len(texts) // 2     # the last-token set is not the all-token footprint
    # batched with right/left padding, untruncated: still the hand-computed last-token sets
    F2 = rd.last_token_feature_sets(model, tok, {1: sae}, texts[:7], batch_size=2, progress=False)[1]
    for i, t in enumerate(texts[:7]):
        ids = tok([t], return_tensors="pt")["input_ids"]
        h = capture_residuals(model, ids, torch.ones_like(ids), [1])[1][0, -1]
        assert set(F2[i].indices.tolist()) == set(torch.nonzero(sae.encode(h[None])[0] > 0).ravel().tolist())


# ----------------------------------------------------------------------------- notebook

@pytest.mark.slow
def test_notebook_03_on_smoke(run_notebook_smoke, smoke_scope):
    out, executed = run_notebook_smoke("03")
    table = pd.read_csv(out / "03_redundancy.csv")
    bench = pd.read_csv(out / "03_benchmarks.csv")
    assert len(bench) >= 9 and (table.size_D > 0).all() and (table.R_hat > 0).all()
    assert table.R.dropna().between(-1, 1).all()
    scores = pd.read_csv(out / "03_scores.csv")
    assert len(scores) >= 2 and scores.drop(columns="checkpoint").stack().between(0, 1).all()
    ov = pd.read_csv(out / "03_overlap.csv", index_col=0)
    assert np.allclose(np.diag(ov.values), 1.0)
    assert len(pd.read_csv(out / "03_pairs.csv")) == 28
    for png in ("03_R_vs_Rhat", "03_overlap_heatmap", "03_similarity"):
        assert (out / f"{png}.png").stat().st_size > 5000
    summary = json.loads((out / "03_summary.json").read_text())
    assert summary["_meta"]["seed"] == 0 and summary["estimation"]["n_draws"] == 20
    assert summary["paper"]["rho_R_Rhat"] == 0.85
    assert executed.exists()
