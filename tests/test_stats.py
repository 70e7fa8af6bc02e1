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
