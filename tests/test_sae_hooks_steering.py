"""Encode/decode against a dense reference, hooks on tensor and tuple outputs, steering and its cleanup."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from qscope_utils.hooks import capture, capture_residuals, decoder_layers, position_mask
from qscope_utils.sae import TopKSAE
from qscope_utils.steering import clamp_features, feature_vector, steer

from conftest import make_sae_state


def _sae(d_model=32, d_sae=1024, k=8, seed=0):
    return TopKSAE.from_state_dict(make_sae_state(d_model, d_sae, seed), k=k)


def _reference_encode(sd, x, k):
    pre = x @ sd["W_enc"].T + sd["b_enc"]
    pre = torch.relu(pre)
    thr = pre.topk(k, dim=-1).values[..., -1:]
    return torch.where(pre >= thr, pre, torch.zeros_like(pre))


def test_encode_matches_dense_reference_and_no_bdec_subtraction():
    sd = make_sae_state(32, 1024, 3)
    sae = TopKSAE.from_state_dict(sd, k=8)
    x = torch.randn(4, 5, 32) * 3
    z = sae.encode(x)
    assert torch.allclose(z, _reference_encode(sd, x, 8), atol=1e-6)
    assert ((z > 0).sum(-1) <= 8).all()
    shifted = _reference_encode(sd, x - sd["b_dec"], 8)
    assert not torch.allclose(z, shifted)  # the convention matters and we follow the spec's


def test_sparse_decode_equals_dense_decode_and_pre_acts():
    sae = _sae()
    x = torch.randn(10, 32)
    z, pre = sae.encode(x, return_pre=True)
    assert torch.allclose(pre, x @ sae.W_enc.T + sae.b_enc, atol=1e-5)
    codes = sae.encode_sparse(x)
    assert torch.allclose(codes.to_dense(), z, atol=1e-6)
    assert torch.allclose(sae.decode_sparse(codes), z @ sae.W_dec.T + sae.b_dec, atol=1e-5)
    assert torch.allclose(sae(x), sae.decode(z), atol=1e-5)


def test_wrong_width_and_feature_id_give_clear_errors():
    sae = _sae()
    with pytest.raises(ValueError, match="d_model=32"):
        sae.encode(torch.randn(3, 64))
    with pytest.raises(IndexError, match="out of range"):
        sae.direction(5000)


class TupleLayer(nn.Module):
    """An old-style decoder layer returning (hidden, attn_weights)."""

    def __init__(self, d):
        super().__init__()
        self.lin = nn.Linear(d, d)

    def forward(self, h):
        return (h + self.lin(h), None)


class TupleModel(nn.Module):
    def __init__(self, d=32, n=3):
        super().__init__()
        self.model = nn.Module()
        self.model.layers = nn.ModuleList(TupleLayer(d) for _ in range(n))
        self.config = type("C", (), {"hidden_size": d})()

    def forward(self, h):
        for layer in self.model.layers:
            h = layer(h)[0]
        return h


def _n_hooks(model):
    return sum(len(b._forward_hooks) for b in decoder_layers(model))


def test_capture_on_tuple_outputs_and_tensor_outputs(tiny_model):
    tm = TupleModel()
    x = torch.randn(3, 4, 32)
    with capture(tm, [0, 2]) as store:
        out = tm(x)
    assert torch.allclose(store[2], out) and store[0].shape == (3, 4, 32)
    model, _ = tiny_model
    ids = torch.randint(0, 300, (3, 6))
    full = model(input_ids=ids, output_hidden_states=True).hidden_states  # transformers adds its own hooks here
    before = _n_hooks(model)
    hs = capture_residuals(model, ids, torch.ones_like(ids), [0, 2])
    assert torch.allclose(hs[0], full[1], atol=1e-5)  # hidden_states[n+1] == output of block n
    assert _n_hooks(model) == before


def test_capture_respects_padding_any_batch_size(tiny_model):
    model, _ = tiny_model
    ids = torch.randint(0, 300, (1, 5))
    alone = capture_residuals(model, ids, torch.ones_like(ids), [1])[1]
    padded = torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1)
    batch = torch.cat([padded, torch.randint(0, 300, (1, 8))])
    am = torch.ones_like(batch)
    am[0, 5:] = 0
    both = capture_residuals(model, batch, am, [1])[1]
    assert torch.allclose(both[0, :5], alone[0], atol=1e-5)
    m = position_mask(am)
    assert m[0].tolist() == [False, True, True, True, True, False, False, False]


def test_position_mask_left_padding_and_norm_filter():
    am = torch.tensor([[0, 0, 1, 1, 1]])
    assert position_mask(am).tolist() == [[False, False, False, True, True]]
    h = torch.ones(1, 5, 4)
    h[0, 3] *= 100
    assert position_mask(am, hidden=h, norm_ratio=5).tolist() == [[False, False, False, False, True]]


def test_steering_alpha_zero_is_identity_and_alpha_changes_generation(tiny_model):
    model, tok = tiny_model
    sae = _sae()
    ids = tok(["The quick brown"], return_tensors="pt")["input_ids"]
    base = model.generate(ids, max_new_tokens=8, do_sample=False)
    with steer(model, {1: feature_vector(sae, 3, 0.0)}):
        same = model.generate(ids, max_new_tokens=8, do_sample=False)
    with steer(model, {1: feature_vector(sae, [3, 7], [40.0, 40.0])}):
        moved = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert torch.equal(base, same)
    assert not torch.equal(base, moved)


def test_steering_applies_on_every_decode_step_with_kv_cache(tiny_model):
    model, _ = tiny_model
    seen = []
    vec = torch.zeros(32)
    vec[0] = 1000.0
    with steer(model, {1: vec}):
        # registered after the steering hook, so it sees the steered output of block 1
        rec = decoder_layers(model)[1].register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
        try:
            model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, do_sample=False, use_cache=True)
        finally:
            rec.remove()
    assert [h.shape[1] for h in seen] == [3, 1, 1, 1]  # prompt pass, then one cached token per step
    assert all((h[..., 0] > 500).all() for h in seen)


def test_steering_targets_selected_rows_only(tiny_model):
    model, _ = tiny_model
    ids = torch.randint(0, 300, (3, 5))
    am = torch.ones_like(ids)
    base = capture_residuals(model, ids, am, [2])[2]
    vec = torch.randn(32) * 5
    with steer(model, {1: vec}, rows=[1]):
        hs = capture_residuals(model, ids, am, [1, 2])
    assert torch.allclose(hs[2][0], base[0], atol=1e-5) and torch.allclose(hs[2][2], base[2], atol=1e-5)
    assert not torch.allclose(hs[2][1], base[1], atol=1e-3)


def test_hooks_are_removed_after_an_exception(tiny_model):
    model, _ = tiny_model
    before = _n_hooks(model)
    sae = _sae()
    with pytest.raises(RuntimeError):
        with steer(model, {0: torch.ones(32)}), clamp_features(model, 1, sae, [1, 2]):
            raise RuntimeError("boom")
    assert _n_hooks(model) == before
    with pytest.raises(ValueError, match="hidden size"):
        with steer(model, {0: torch.ones(64)}):
            pass
    assert _n_hooks(model) == before


def test_clamping_to_zero_removes_the_feature(tiny_model):
    model, _ = tiny_model
    sae = _sae(k=32)
    ids = torch.randint(0, 300, (2, 6))
    am = torch.ones_like(ids)
    h = capture_residuals(model, ids, am, [1])[1]
    z = sae.encode(h)
    f = int(z.reshape(-1, 1024).gt(0).sum(0).argmax())
    with clamp_features(model, 1, sae, [f], value=0.0):
        h2 = capture_residuals(model, ids, am, [1])[1]
    z2 = sae.encode(h2)
    assert z[..., f].gt(0).any() and z2[..., f].max() < z[..., f].max() * 0.5


def test_pad_ids_left_and_right():
    from qscope_utils.hooks import pad_ids

    ids, am = pad_ids([[5, 6, 7], [8]], pad=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and am.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, am = pad_ids([[5, 6, 7], [8]], pad=9, left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and am.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_relu_before_topk_with_fewer_positive_pre_activations_than_k():
    """Only 3 latents can be positive for any token, k = 8: exactly 3 nonzero codes, never 8 with
    negative values (TopK without the ReLU), and the reconstruction uses those 3 only."""
    d, n, k = 32, 1024, 8
    sd = make_sae_state(d, n, seed=5)
    live = [3, 17, 400]
    sd["b_enc"] = torch.full((n,), -100.0)
    sd["b_enc"][live] = 100.0              # |W_enc x| < 100 for these inputs: the sign is the bias's
    sae = TopKSAE.from_state_dict(sd, k=k)
    x = torch.randn(6, d)
    pre = x @ sd["W_enc"].T + sd["b_enc"]
    assert ((pre > 0).sum(-1) == 3).all()
    z = sae.encode(x)
    assert ((z != 0).sum(-1) == 3).all() and (z >= 0).all()
    assert torch.allclose(z[:, live], pre[:, live], atol=1e-4)
    codes = sae.encode_sparse(x)
    assert (codes.active().sum(-1) == 3).all() and (codes.values >= 0).all()
    want = pre[:, live] @ sd["W_dec"][:, live].T + sd["b_dec"]
    assert torch.allclose(sae(x), want, atol=1e-3)


def test_steering_changes_the_layer_output_by_exactly_alpha_times_the_column(tiny_model):
    """The OUTPUT of decoder layer n moves by alpha * W_dec[:, i] at every position; layer n-1 is
    untouched. (A pre-hook on layer n's input, or a hook on layer n-1, fails this.)"""
    model, _ = tiny_model
    sae = _sae()
    ids = torch.randint(0, 300, (2, 7))
    am = torch.ones_like(ids)
    base = capture_residuals(model, ids, am, [0, 1, 2])
    alpha, f = 7.5, 11
    with steer(model, {1: feature_vector(sae, f, alpha)}):
        hs = capture_residuals(model, ids, am, [0, 1, 2])
    want = (alpha * sae.W_dec[:, f]).expand(2, 7, 32)
    assert torch.equal(hs[0], base[0])
    assert torch.allclose(hs[1] - base[1], want, atol=1e-5)
    assert not torch.allclose(hs[2] - base[2], want, atol=1e-2)   # downstream the change is transformed
    with steer(model, {1: feature_vector(sae, [f, 20], [2.0, -3.0])}):
        hs = capture_residuals(model, ids, am, [1])
    two = (2.0 * sae.W_dec[:, f] - 3.0 * sae.W_dec[:, 20]).expand(2, 7, 32)
    assert torch.allclose(hs[1] - base[1], two, atol=1e-5)
