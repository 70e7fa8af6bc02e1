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



pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_pick_alpha_vs_control():
    import math

    import pandas as pd

    from qscope_utils.repetition import pick_alpha_vs_control

    a = [-8, 0, 8, 16, 24, 32]
    feat = pd.DataFrame({"alpha": a, "ratio": [0.0, 0.0, 0.10, 0.30, 0.46, 0.79],
                         "lo": [0.0, 0.0, 0.02, 0.10, 0.37, 0.72], "hi": [0.0, 0.0, 0.2, 0.5, 0.55, 0.85]})
    rand = pd.DataFrame({"alpha": a, "ratio": [0.0, 0.0, 0.0, 0.05, 0.0, 0.0],
                         "lo": [0.0] * 6, "hi": [0.0, 0.0, 0.0, 0.12, 0.0, 0.0]})
    # 8: CI above control (0.02 > 0) but ratio 0.10 < 0.25; 16: ratio ok but CIs overlap (0.10 <= 0.12);
    # 24: separated and >= 0.25 -> chosen (the old rule, ratio >= 0.5, would give 32)
    r = pick_alpha_vs_control(feat, rand, min_ratio=0.25)
    assert r["alpha"] == 24 and r["rule"] == "feature CI above control"
    assert (r["ratio"], r["lo"], r["control_hi"]) == (0.46, 0.37, 0.0) and pick_alpha(feat) == 32
    assert pick_alpha_vs_control(feat, rand, min_ratio=0.05)["alpha"] == 8
    rand2 = rand.assign(hi=[0.0, 0.0, 0.0, 0.12, 0.3, 0.0])                  # wider control CI at 24, still below 0.37
    assert pick_alpha_vs_control(feat, rand2, min_ratio=0.25)["alpha"] == 24
    rand3 = rand.assign(hi=[0.0, 0.0, 0.0, 0.12, 0.4, 0.0])                  # overlaps at 24 -> next is 32
    assert pick_alpha_vs_control(feat, rand3, min_ratio=0.25)["alpha"] == 32
    # nothing qualifies -> fallback to pick_alpha's rule (smallest with ratio >= target, else the strongest)
    r = pick_alpha_vs_control(feat, rand.assign(hi=1.0), min_ratio=0.25, target=0.5)
    assert r["alpha"] == 32 and r["rule"] == "fallback: ratio >= target" and r["control_hi"] == 1.0
    r = pick_alpha_vs_control(feat, rand[rand.alpha < 0], min_ratio=0.25)     # control lacks those alphas
    assert r["rule"].startswith("fallback") and math.isnan(r["control_ratio"])
    with pytest.raises(ValueError):
        pick_alpha_vs_control(feat[feat.alpha <= 0], rand)


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


# ------------------------------------------------------------------ causal selection (stub screen: known answer)
def _feats(ids_incs):
    import pandas as pd

    return pd.DataFrame({"feature": [i for i, _ in ids_incs], "mean_increase": [m for _, m in ids_incs]})


def test_pool_candidates_ranks_across_layers():
    from qscope_utils.repetition import pool_candidates

    c = pool_candidates({1: _feats([(10, 0.05), (11, 0.01)]), 2: _feats([(20, 0.30), (21, 0.05)]),
                         3: _feats([(30, 0.20)])}, 4)
    assert list(zip(c["rank"], c.layer, c.feature)) == [(1, 2, 20), (2, 3, 30), (3, 1, 10), (4, 2, 21)]
    with pytest.raises(ValueError):
        pool_candidates({1: _feats([(1, 0.1)])}, 0)


def _stub_screen(table, control, base=0.0):
    """ratio_fn from a known answer: table[(layer, feature)][mult], control[layer][mult]; records its calls."""
    calls = []

    def ratio(layer, feature, alpha):
        calls.append((layer, feature, alpha))
        if layer is None:
            return base
        mult = alpha / (10.0 * layer)                   # unit(L, f) = 10 L (see below)
        src = control[layer] if feature is None else table[(layer, feature)]
        return src[round(mult, 6)]

    return ratio, calls


def test_screen_and_select_known_answer():
    from qscope_utils.repetition import pool_candidates, screen_candidates, select_feature

    cands = pool_candidates({2: _feats([(5, 0.3), (6, 0.2)]), 3: _feats([(7, 0.25), (8, 0.1)])}, 4)
    # ranks: 1 = L2/5, 2 = L3/7, 3 = L2/6, 4 = L3/8
    table = {(2, 5): {1.0: 0.0, 2.0: 0.0},              # top by increase: does nothing
             (3, 7): {1.0: 0.2, 2.0: 0.9},              # raises most, but its layer's random direction does too
             (2, 6): {1.0: 0.1, 2.0: 0.6},              # the answer: highest among those above their control
             (3, 8): {1.0: 0.6, 2.0: 0.3}}              # ties with L2/6 at 0.6, worse rank
    control = {2: {1.0: 0.0, 2.0: 0.1}, 3: {1.0: 0.1, 2.0: 0.95}}
    ratio, calls = _stub_screen(table, control)
    scr = screen_candidates(cands, ratio, (1.0, 2.0), lambda L, f: 10.0 * L)
    assert len(calls) == 1 + 2 * 2 + 4 * 2 and calls[0] == (None, None, 0.0)   # baseline once, controls per layer
    assert set(scr.kind) == {"baseline", "random", "feature"}
    row = scr[(scr.candidate == "L3/f7") & (scr.mult == 2.0)].iloc[0]
    assert row.alpha == 60.0 and row.ratio == 0.9 and row.control == 0.95 and row.lift == pytest.approx(-0.05)
    sel = select_feature(scr)
    assert (sel["layer"], sel["feature"], sel["rank"], sel["mult"], sel["alpha"]) == (2, 6, 3, 2.0, 40.0)
    assert sel["causal"] and sel["ratio"] == 0.6 and sel["control"] == 0.1 and sel["n_passing"] == 3


def test_select_feature_ties_and_negative_result():
    from qscope_utils.repetition import pool_candidates, screen_candidates, select_feature

    cands = pool_candidates({1: _feats([(1, 0.3), (2, 0.2), (3, 0.1)])}, 3)
    # equal best ratio for ranks 2 and 3: rank 2 wins
    ratio, _ = _stub_screen({(1, 1): {1.0: 0.1}, (1, 2): {1.0: 0.5}, (1, 3): {1.0: 0.5}}, {1: {1.0: 0.0}})
    sel = select_feature(screen_candidates(cands, ratio, (1.0,), lambda L, f: 10.0))
    assert (sel["feature"], sel["rank"], sel["causal"]) == (2, 2, True)
    # nothing beats the random control: not causal, the rule still names the best (here the top by increase)
    ratio, _ = _stub_screen({(1, 1): {1.0: 0.2}, (1, 2): {1.0: 0.2}, (1, 3): {1.0: 0.0}}, {1: {1.0: 0.3}})
    sel = select_feature(screen_candidates(cands, ratio, (1.0,), lambda L, f: 10.0))
    assert (sel["feature"], sel["causal"], sel["n_passing"]) == (1, False, 0)
    # nothing raises the ratio above the unsteered model: not causal either
    ratio, _ = _stub_screen({(1, 1): {1.0: 0.0}, (1, 2): {1.0: 0.0}, (1, 3): {1.0: 0.0}}, {1: {1.0: 0.0}})
    sel = select_feature(screen_candidates(cands, ratio, (1.0,), lambda L, f: 10.0))
    assert (sel["feature"], sel["rank"], sel["causal"]) == (1, 1, False)
    with pytest.raises(ValueError):
        screen_candidates(cands, ratio, (0.0,), lambda L, f: 10.0)


def test_screen_ratio_fn_one_batch_per_call(tiny_model, monkeypatch):
    import qscope_utils.repetition as R

    model, tok = tiny_model
    d = model.config.hidden_size
    dirs = {(1, None): torch.ones(d) / d ** 0.5, (1, 4): torch.randn(d, generator=torch.Generator().manual_seed(0))}
    det = RepetitionDetector(max_unit=2, min_span=4, min_repeats=2, require_limit=False)
    seen = []
    real = R.sample_rollouts
    monkeypatch.setattr(R, "sample_rollouts", lambda m, t, batch, *a, **k: seen.append((len(batch), k.get("steer_vectors")))
                        or real(m, t, batch, *a, **k))
    fn = R.screen_ratio_fn(model, tok, ["The quick", "Hello", "1 + 2 ="], dirs, det, n_samples=2, max_new_tokens=6)
    r0, r1 = fn(None, None, 0.0), fn(1, 4, 30.0)
    assert 0 <= r0 <= 1 and 0 <= r1 <= 1
    assert [n for n, _ in seen] == [6, 6] and seen[0][1] is None
    torch.testing.assert_close(seen[1][1][1], 30.0 * dirs[(1, 4)])
    assert fn(None, None, 0.0) == r0                    # same prompts, same seed
