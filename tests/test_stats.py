"""Shared bootstrap helpers: known answers on constructed data."""
import numpy as np
import pytest

from qscope_utils.stats import bootstrap_stat, cluster_bootstrap, paired_diff_bootstrap


def test_cluster_bootstrap_constant_and_nan():
    est, lo, hi = cluster_bootstrap(np.ones((10, 3)))
    assert est == lo == hi == 1.0
    v = np.array([[1.0, np.nan], [0.0, 0.0]])
    assert cluster_bootstrap(v)[0] == pytest.approx(1 / 3)


def test_cluster_bootstrap_interval_covers_and_shrinks():
    rng = np.random.default_rng(0)
    small = rng.random((20, 4)) < 0.3
    large = rng.random((2000, 4)) < 0.3
    e1, l1, h1 = cluster_bootstrap(small)
    e2, l2, h2 = cluster_bootstrap(large)
    assert l1 <= e1 <= h1 and l2 < 0.3 < h2
    assert (h2 - l2) < (h1 - l1)


def test_paired_diff_excludes_zero_for_a_clear_effect():
    base = np.zeros((50, 2))
    treat = np.ones((50, 2))
    treat[:5] = 0
    d, lo, hi = paired_diff_bootstrap(base, treat)
    assert d == pytest.approx(0.9) and lo > 0
    with pytest.raises(ValueError):
        paired_diff_bootstrap(base, treat[:3])


def test_bootstrap_stat_on_paired_arrays():
    y = np.array([1, 1, 0, 0] * 25, bool)
    est, lo, hi = bootstrap_stat(lambda a, b: float((a == b).mean()), y, y)
    assert est == lo == hi == 1.0
    with pytest.raises(ValueError):
        bootstrap_stat(np.mean, np.array([]))


def test_cluster_bootstrap_resamples_prompts_not_cells():
    """20 prompts x 10 samples, all samples of a prompt equal (10 prompts at 1, 10 at 0). Resampling
    prompts, the mean follows Binomial(20, 1/2) / 20, whose central 95% is [0.30, 0.70] (width
    0.40); resampling the 200 cells independently would give a width near 0.14."""
    v = np.repeat(np.array([1.0] * 10 + [0.0] * 10)[:, None], 10, axis=1)
    est, lo, hi = cluster_bootstrap(v, n_boot=4000, seed=0)
    assert est == 0.5
    assert 0.35 <= hi - lo <= 0.45 and lo == pytest.approx(0.3, abs=0.05) and hi == pytest.approx(0.7, abs=0.05)
    cells = cluster_bootstrap(v.reshape(-1), n_boot=4000, seed=0)      # one value per "cluster": the iid case
    assert cells[2] - cells[1] < 0.2
    d, lo, hi = paired_diff_bootstrap(np.zeros_like(v), v, n_boot=4000, seed=0)
    assert d == 0.5 and 0.35 <= hi - lo <= 0.45


# --- minimum detectable effect (normal approximation) ----------------------------------------------

def test_z_power_matches_scipy_and_the_textbook_constant():
    from scipy.stats import norm

    from qscope_utils.stats import z_power

    assert z_power() == pytest.approx(norm.ppf(0.975) + norm.ppf(0.8), abs=1e-9) == pytest.approx(2.8016, abs=1e-4)
    assert z_power(0.01, 0.9) == pytest.approx(norm.ppf(0.995) + norm.ppf(0.9), abs=1e-9)
    with pytest.raises(ValueError, match="strictly between"):
        z_power(0.05, 1.0)


def test_sample_sizes_known_values():
    from qscope_utils.stats import mde_correlation, n_correlation, n_paired, n_two_sample

    # Cohen's d = 0.5 two-sample: 2 * 2.8016^2 / 0.25 = 62.79 -> 63 per group; paired d = 0.5: 31.4 -> 32
    assert n_two_sample(0.5, 1.0) == 63 and n_paired(0.5, 1.0) == 32 and n_paired(-0.5, 1.0) == 32
    assert n_two_sample(0.2, 0.5) == 99                      # d = 0.4: 2 * 7.849 / 0.16 = 98.1
    # correlation 0.5: (2.8016 / atanh 0.5)^2 + 3 = 29.01 -> 30; Spearman x1.06
    assert n_correlation(0.5) == 30 and n_correlation(0.85, spearman=True) == 9
    assert mde_correlation(28) == pytest.approx(np.tanh(2.801585 / 5), abs=1e-6)      # tanh(0.5603) = 0.5082
    assert mde_correlation(10, spearman=True) == pytest.approx(np.tanh(2.801585 * np.sqrt(1.06 / 7)), abs=1e-6)
    with pytest.raises(ValueError, match="n > 3"):
        mde_correlation(3)


def test_mde_and_n_are_inverse_and_scale_as_root_n():
    from qscope_utils.stats import mde_paired, mde_two_sample, n_for_effect, n_paired, se_from_interval

    assert mde_paired(1.0, 32) == pytest.approx(2.801585 / np.sqrt(32), abs=1e-6)
    assert mde_paired(0.3, 4 * 50) == pytest.approx(mde_paired(0.3, 50) / 2)
    assert n_paired(mde_paired(0.3, 50), 0.3) == 50
    assert n_for_effect(50, mde_paired(0.3, 50), mde_paired(0.3, 50) / 2) == 200
    # two proportions 0.5 vs 0.5 + MDE at n = 100 each: z * sqrt(0.25/100 * 2)
    assert mde_two_sample(0.5, 100) == pytest.approx(2.801585 * np.sqrt(0.005), abs=1e-6)
    assert mde_two_sample(0.3, 40, 0.4, 60) == pytest.approx(2.801585 * np.sqrt(0.09 / 40 + 0.16 / 60), abs=1e-6)
    assert se_from_interval(-1.959964, 1.959964) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="hi < lo"):
        se_from_interval(1.0, 0.0)
    with pytest.raises(ValueError, match="cannot be detected"):
        n_for_effect(10, 0.1, 0.0)


def test_mde_gives_eighty_percent_power_by_simulation():
    """At the MDE, a two-sided z-test on n paired differences rejects in ~80% of 4000 simulated studies."""
    from qscope_utils.stats import mde_paired

    rng = np.random.default_rng(0)
    n, sd = 40, 0.7
    d = rng.normal(mde_paired(sd, n), sd, size=(4000, n))
    z = d.mean(1) / (sd / np.sqrt(n))
    power = np.mean(np.abs(z) > 1.959964)
    assert 0.78 < power < 0.82
    null = rng.normal(0, sd, size=(4000, n)).mean(1) / (sd / np.sqrt(n))
    assert np.mean(np.abs(null) > 1.959964) < 0.07


def test_one_se_pick_takes_first_candidate_within_one_se_of_best():
    from qscope_utils.stats import one_se_pick
    # best is 0.50 (se 0.05): 0.46 is within, 0.40 is not -> the first within-one-SE candidate, "b"
    assert one_se_pick(["a", "b", "c"], [0.40, 0.46, 0.50], [0.01, 0.01, 0.05]) == ("b", "c")
    # noise of 1e-5 between near-ties does not move the pick (argmax would flip)
    assert one_se_pick([1, 2], [0.300001, 0.3], [0.02, 0.02])[0] == 1
    assert one_se_pick([1, 2], [0.3, 0.300001], [0.02, 0.02])[0] == 1
    # minimizing: the lowest mean is best; NaN means are never picked
    assert one_se_pick(["x", "y", "z"], [float("nan"), 0.14, 0.1], [0, 0.0, 0.05], maximize=False) == ("y", "z")
    assert one_se_pick(["x", "y"], [0.1, 0.5], [0.0, 0.0]) == ("y", "y")     # zero SE: plain argmax
    with pytest.raises(ValueError, match="equal"):
        one_se_pick(["a"], [0.1, 0.2], [0.1, 0.1])
