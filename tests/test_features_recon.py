"""Streaming feature statistics and reconstruction metrics against direct dense computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qscope_utils.features import (firing_rates, last_token_features, mean_activations, text_max_activations,
                                   top_contexts)
from qscope_utils.hooks import capture_residuals, iter_batches, position_mask
from qscope_utils.recon import ReconStats, evaluate_layer, splice_sae
from qscope_utils.sae import TopKSAE

from conftest import SENTENCES, make_sae_state

TEXTS = SENTENCES[:7] + ["a b c d e f g h i j k l", "x"]


def _sae(k=8):
    return TopKSAE.from_state_dict(make_sae_state(32, 1024, 5), k=k).requires_grad_(False)


def _dense_codes(model, tok, sae, texts, layer):
    """Reference: per-text dense codes (T, d_sae) of valid tokens, position 0 excluded."""
    out = []
    for t in texts:
        enc = tok([t], return_tensors="pt")
        h = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [layer])[layer][0]
        out.append(sae.encode(h)[1:])
    return out


def test_text_max_activations_and_rates_match_dense(tiny_model):
    model, tok = tiny_model
    sae = _sae()
    M = text_max_activations(model, tok, {1: sae}, TEXTS, batch_size=3, progress=False)[1]
    ref = _dense_codes(model, tok, sae, TEXTS, 1)
    for i, z in enumerate(ref):
        want = z.max(0).values.numpy() if len(z) else np.zeros(1024)
        assert np.allclose(M[i].toarray().ravel(), want, atol=1e-5)
    assert M.shape == (len(TEXTS), 1024)
    rates = firing_rates(M)
    assert np.allclose(rates, np.array([(z > 0).any(0).numpy() if len(z) else np.zeros(1024, bool) for z in ref]).mean(0))


def test_last_token_features_match_dense(tiny_model):
    model, tok = tiny_model
    sae = _sae()
    F = last_token_features(model, tok, {2: sae}, TEXTS, batch_size=4, progress=False)[2]
    for i, t in enumerate(TEXTS):
        enc = tok([t], return_tensors="pt")
        h = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [2])[2][0, -1]
        assert set(F[i].indices.tolist()) == set(torch.nonzero(sae.encode(h) > 0).ravel().tolist())


def test_mean_activations_and_pre_match_dense(tiny_model):
    model, tok = tiny_model
    sae = _sae()
    st = mean_activations(model, tok, {1: sae}, TEXTS, with_pre=True, batch_size=5, progress=False)[1]
    ref = torch.cat(_dense_codes(model, tok, sae, TEXTS, 1))
    assert st["n_tokens"] == ref.shape[0]
    assert torch.allclose(st["mean"], ref.mean(0), atol=1e-5)
    assert torch.allclose(st["rate"], (ref > 0).float().mean(0), atol=1e-6)


def test_top_contexts_are_sorted_and_marked(tiny_model):
    model, tok = tiny_model
    sae = _sae()
    M = text_max_activations(model, tok, {1: sae}, TEXTS, progress=False)[1]
    f = int(np.asarray((M > 0).sum(0)).ravel().argmax())
    tc = top_contexts(model, tok, sae, 1, TEXTS, [f], n=3, progress=False)[f]
    acts = [r["activation"] for r in tc]
    assert acts == sorted(acts, reverse=True) and len(tc) >= 1
    assert abs(acts[0] - M[:, f].max()) < 1e-5 and "[[" in tc[0]["context"]


def test_fvu_is_zero_for_a_perfect_reconstruction_and_one_for_the_mean():
    sae = _sae(k=1024)  # all latents active: with W_enc = 2 W_dec.T this is not identity, so build one
    d = 32
    sae = TopKSAE(d, 1024, 1024)
    with torch.no_grad():
        sae.W_enc.zero_(); sae.W_dec.zero_(); sae.b_enc.zero_(); sae.b_dec.zero_()
        sae.W_enc[:d] = torch.eye(d); sae.W_dec[:, :d] = torch.eye(d)
        sae.W_enc[d:2 * d] = -torch.eye(d); sae.W_dec[:, d:2 * d] = -torch.eye(d)
    x = torch.randn(200, d)
    st = ReconStats(1024, d)
    st.update(sae, x)
    r = st.result(0)
    assert r.fvu < 1e-10 and abs(r.cosine - 1) < 1e-6 and r.dead_fraction > 0.9
    mean_sae = TopKSAE(d, 1024, 1)
    with torch.no_grad():
        mean_sae.W_enc.zero_(); mean_sae.W_dec.zero_(); mean_sae.b_enc.fill_(-1.0)
        mean_sae.b_dec.copy_(x.mean(0))
    st = ReconStats(1024, d)
    st.update(mean_sae, x)
    assert abs(st.result(0).fvu - 1.0) < 1e-6 and st.result(0).l0 == 0


def test_evaluate_layer_reports_delta_loss_and_splice_is_removed(tiny_model):
    model, tok = tiny_model
    sae = _sae()
    batches = [enc for _, enc in iter_batches(tok, TEXTS, batch_size=4)]
    r = evaluate_layer(model, sae, batches, 1)
    assert r.n_tokens == sum(int(position_mask(b["attention_mask"]).sum()) for b in batches)
    assert r.delta_loss is not None and r.ce_spliced != pytest.approx(r.ce_clean)
    r2 = evaluate_layer(model, sae, batches, 1)
    assert r2.ce_clean == pytest.approx(r.ce_clean)  # the splice hook did not leak
    with pytest.raises(ValueError, match="hidden size"):
        evaluate_layer(model, TopKSAE(64, 1024, 8), batches, 1)


def _identity_sae(d: int = 32) -> TopKSAE:
    """W_enc = [I; -I], W_dec = [I, -I], k = d: ReLU(x) - ReLU(-x) = x, an exact reconstruction."""
    eye = torch.eye(d)
    sd = {"W_enc": torch.cat([eye, -eye]), "W_dec": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d),
          "b_dec": torch.zeros(d)}
    return TopKSAE.from_state_dict(sd, k=d).requires_grad_(False)


def test_spliced_delta_loss_known_answers(tiny_model):
    """An exact SAE gives delta loss 0; the all-zero SAE gives the loss of zeroing layer 1's output at
    positions 1.. (position 0, the sink, is left alone), computed here by hand."""
    import torch.nn.functional as F

    from qscope_utils.hooks import decoder_layers

    model, _ = tiny_model
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (3, 9), generator=g)
    am = torch.ones_like(ids)
    batches = [{"input_ids": ids, "attention_mask": am}]
    r = evaluate_layer(model, _identity_sae(), batches, 1)
    assert r.fvu < 1e-10 and r.delta_loss == pytest.approx(0.0, abs=1e-6)

    def ce(hook=None):
        h = decoder_layers(model)[1].register_forward_hook(hook) if hook else None
        try:
            with torch.no_grad():
                logits = model(input_ids=ids, attention_mask=am).logits
        finally:
            if h:
                h.remove()
        return float(F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1)))

    def zero_after_sink(_m, _i, out):
        hid = (out[0] if isinstance(out, tuple) else out).clone()
        hid[:, 1:] = 0
        return (hid,) + tuple(out[1:]) if isinstance(out, tuple) else hid

    zero = TopKSAE.from_state_dict({"W_enc": torch.zeros(64, 32), "W_dec": torch.zeros(32, 64),
                                    "b_enc": torch.zeros(64), "b_dec": torch.zeros(32)}, k=4)
    r = evaluate_layer(model, zero, batches, 1)
    clean, ablated = ce(), ce(zero_after_sink)
    assert r.ce_clean == pytest.approx(clean, rel=1e-5)
    assert r.ce_spliced == pytest.approx(ablated, rel=1e-5)
    assert r.delta_loss == pytest.approx(ablated - clean, rel=1e-4) and abs(ablated - clean) > 1e-3
