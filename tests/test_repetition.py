"""Endless-repetition detector, repeat ratio, rollouts, repetition features and the steering sweep."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qscope_utils.repetition import (Loop, RepetitionDetector, bootstrap_mean_ci, find_tail_loop, make_repeated_contexts,
                                     pick_alpha, repeat_pairs, repeat_ratio, repetition_features, sample_rollouts,
                                     steering_sweep, RepetitionConfig)
from qscope_utils.sae import TopKSAE
from conftest import make_sae_state



@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run ~10x faster on one thread when the 2 cores are shared."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ detector on constructed cases
@pytest.mark.parametrize("seq, expect", [
    ([1, 2, 3] * 5, Loop(3, 15)),                       # clean period-3 loop
    ([9, 8] + [5] * 12, Loop(1, 12)),                   # single token repeated after a prefix
    ([7, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2], Loop(2, 12)),  # 'abab' is period 2, not 4
    ([4, 5, 6, 7] * 3 + [4, 5], Loop(4, 14)),           # cut mid-unit: the partial copy counts
    ([1, 2] * 10 + [7, 8, 9], None),                    # loop in the middle, not the tail
    ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14], None),  # no repetition
    ([3, 3, 3, 3], None),                               # too short a span
])
def test_find_tail_loop_cases(seq, expect):
    assert find_tail_loop(seq, max_unit=6, min_span=12, min_repeats=3) == expect


def test_find_tail_loop_min_repeats_and_max_unit():
    seq = list(range(10)) * 2                           # period 10: only 2 copies
    assert find_tail_loop(seq, max_unit=10, min_span=12, min_repeats=3) is None
    assert find_tail_loop(seq, max_unit=10, min_span=12, min_repeats=2) == Loop(10, 20)
    assert find_tail_loop(seq, max_unit=8, min_span=12, min_repeats=2) is None  # period above max_unit
    with pytest.raises(ValueError):
        find_tail_loop(seq, max_unit=0)


def test_detector_require_limit_and_units():
    det = RepetitionDetector(max_unit=4, min_span=12, min_repeats=3, require_limit=True)
    loop = [1, 2] * 8
    assert det(loop, hit_limit=True)
    assert not det(loop, hit_limit=False)               # the model left the loop with an end-of-text
    assert not det([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13], hit_limit=True)
    with pytest.raises(ValueError, match="hit_limit"):
        det(loop)
    with pytest.raises(TypeError):
        det("text", hit_limit=True)
    chars = RepetitionDetector(unit="chars", max_unit=6, min_span=12, require_limit=False)
    assert chars("Answer: 8 and then 8 8 8 8 8 8 8 8")
    assert chars("haha " * 5 + "  ")                    # trailing whitespace ignored
    assert not chars("Question: Tom has 3 apples. Answer: 8")
    assert det(torch.tensor([5] * 16), hit_limit=True)  # tensors are fine
    with pytest.raises(ValueError):
        RepetitionDetector(unit="words")


# ------------------------------------------------------------------ statistics
def test_repeat_ratio_and_bootstrap():
    flags = np.array([[1, 1], [0, 0], [1, 0], [0, 0]], dtype=bool)
    r = repeat_ratio(flags, n_boot=2000, seed=0)
    assert r["ratio"] == pytest.approx(3 / 8)
    assert 0 <= r["lo"] <= r["ratio"] <= r["hi"] <= 1 and r["hi"] > r["lo"]
    assert (r["n_prompts"], r["n_samples"]) == (4, 2)
    m, lo, hi = bootstrap_mean_ci(np.ones(10))
    assert m == lo == hi == 1.0
    with pytest.raises(ValueError):
        repeat_ratio(np.ones(4))


def test_pick_alpha():
    import pandas as pd

    sw = pd.DataFrame({"alpha": [-4, 0, 2, 4, 8], "ratio": [0.0, 0.1, 0.3, 0.6, 0.9]})
    assert pick_alpha(sw, 0.5) == 4
    assert pick_alpha(sw, 0.95) == 8                    # never reaches target: the strongest
    with pytest.raises(ValueError):
        pick_alpha(sw[sw.alpha <= 0])


# ------------------------------------------------------------------ features
def test_repeat_pairs():
    ids = torch.tensor([0, 5, 6, 5, 7, 6, 5, 0])
    valid = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1], dtype=torch.bool)
    f, l = repeat_pairs(ids, valid)
    # token 5: first 1, last 6; token 6: 2 -> 5; token 0 occurs at 0 (invalid) and 7: once among valid
    assert f.tolist() == [1, 2] and l.tolist() == [6, 5]
    f, l = repeat_pairs(torch.tensor([1, 2, 3]), torch.ones(3, dtype=torch.bool))
    assert f.numel() == 0


def test_repetition_features_matches_brute_force(tiny_model):
    from qscope_utils.hooks import capture_residuals

    model, tok = tiny_model
    d = model.config.hidden_size
    sae = TopKSAE.from_state_dict(make_sae_state(d, 256, seed=3), k=16)
    ctx = make_repeated_contexts(tok, ["The quick brown fox jumps over the lazy dog again and again.",
                                       "Sparse autoencoders find features in residual streams of models."],
                                 chunk_tokens=6, n_repeats=3, seed=0)
    assert all(len(c) >= 18 for c in ctx)
    layer = 1
    df = repetition_features(model, sae, layer, ctx, pad_id=tok.pad_token_id, batch_size=1, progress=False)
    # brute force: every (first, last) pair, one context at a time
    diffs = []
    for c in ctx:
        ids = torch.tensor([c])
        h = capture_residuals(model, ids, torch.ones_like(ids), [layer])[layer][0]
        valid = torch.ones(len(c), dtype=torch.bool)
        valid[0] = False
        f, l = repeat_pairs(ids[0], valid)
        diffs.append(sae.encode(h[l]) - sae.encode(h[f]))
    mean = torch.cat(diffs).mean(0).detach()
    assert int(df.n_pairs.iloc[0]) == sum(x.shape[0] for x in diffs)
    got = df.set_index("feature").loc[np.arange(256), "mean_increase"].to_numpy()
    np.testing.assert_allclose(got, mean.numpy(), atol=1e-5)
    assert df.mean_increase.is_monotonic_decreasing
    # batching with right padding gives the same answer
    df2 = repetition_features(model, sae, layer, ctx, pad_id=tok.pad_token_id, batch_size=4, progress=False)
    np.testing.assert_allclose(df2.mean_increase.to_numpy(), df.mean_increase.to_numpy(), atol=1e-5)


# ------------------------------------------------------------------ rollouts and steering
def test_sample_rollouts_masks_and_row_steering(tiny_model):
    model, tok = tiny_model
    prompts = ["The quick brown fox", "1 + 2 =", "Bonjour"]
    base = sample_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False)
    assert base.responses.shape == (3, 8) and base.response_mask.shape == (3, 8)
    eos = tok.eos_token_id
    for r, m, hit in zip(base.responses, base.response_mask, base.hit_limit):
        if hit:
            assert m.all() and (r != eos).all()
        else:                                            # mask ends right after the first eos
            first = int((r == eos).nonzero()[0])
            assert m[: first + 1].all() and not m[first + 1:].any()
    vec = {1: 50.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    st = sample_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False, steer_vectors=vec, steer_rows=[1])
    assert torch.equal(st.responses[0], base.responses[0]) and torch.equal(st.responses[2], base.responses[2])
    assert not torch.equal(st.responses[1], base.responses[1])
    again = sample_rollouts(model, tok, prompts, max_new_tokens=8, seed=5)
    assert torch.equal(again.responses, sample_rollouts(model, tok, prompts, max_new_tokens=8, seed=5).responses)


def test_steering_sweep_runs_and_is_matched(tiny_model):
    model, tok = tiny_model
    det = RepetitionDetector(max_unit=2, min_span=4, min_repeats=2, require_limit=False)
    direction = torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    sw = steering_sweep(model, tok, ["The quick", "Hello"], direction, 1, [0.0, 0.0, 30.0], det, n_samples=2,
                        max_new_tokens=6, n_boot=50, progress=False)
    assert list(sw.alpha) == [0.0, 0.0, 30.0]
    assert sw.ratio.iloc[0] == sw.ratio.iloc[1]         # same seed, same samples
    assert ((sw.lo <= sw.ratio) & (sw.ratio <= sw.hi)).all()


def test_config_profiles():
    for name in ("smoke", "mini", "paper"):
        c = RepetitionConfig.for_profile(name)
        assert 0.0 in c.alphas and min(c.alphas) < 0 < max(c.alphas)
    assert RepetitionConfig.for_profile("paper").detector.min_span > RepetitionConfig.for_profile("mini").detector.min_span
    with pytest.raises(ValueError):
        RepetitionConfig.for_profile("huge")
