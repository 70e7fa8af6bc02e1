"""The mini SAE trainer's parts, with known answers: the dead-latent counters, AuxK on DEAD latents
only, the AuxK term in the loss with weight 1/32, and the radial-gradient projection."""
from __future__ import annotations

import pytest
import torch

from qscope_utils.mini.sae_train import (AUXK_ALPHA, auxk_loss, remove_radial_grad_, step_loss, train_sae,
                                         update_dead)
from qscope_utils.sae import TopKSAE

from conftest import make_sae_state


def test_update_dead_counts_tokens_since_a_latent_last_fired():
    since = torch.tensor([0, 5, 90, 200])
    idx = torch.tensor([[0, 2], [2, 3]])
    vals = torch.tensor([[1.0, 0.5], [0.2, 0.0]])     # latent 3 made the top-k with value 0: not fired
    dead = update_dead(since, idx, vals, n_tokens=10, dead_tokens=100)
    assert since.tolist() == [0, 15, 0, 210]
    assert dead.tolist() == [False, False, False, True]


def _sae_identity_dec(d=4, d_sae=6):
    """W_dec columns: e0..e3, then e0 and e1 again (unit norm), zero biases."""
    sd = {"W_enc": torch.zeros(d_sae, d), "b_enc": torch.zeros(d_sae), "b_dec": torch.zeros(d),
          "W_dec": torch.cat([torch.eye(d), torch.eye(d)[:, :2]], 1)}
    return TopKSAE.from_state_dict(sd, k=2)


def test_auxk_uses_the_top_dead_latents_only():
    sae = _sae_identity_dec()
    pre = torch.tensor([[9.0, 8.0, 0.0, 0.0, 3.0, 1.0]])   # ReLU'd pre-activations of one token
    err = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    total_var = torch.tensor(2.0)
    dead = torch.tensor([False, False, False, False, True, True])
    # k_aux = 1: the top dead latent is 4 (3.0 * e0) -> reconstructs err exactly
    assert auxk_loss(sae, pre, dead, err, 1, total_var).item() == pytest.approx(0.0)
    # k_aux = 2: latents 4 and 5: e_hat = (3, 1, 0, 0) -> ||(0, 1, 0, 0)||^2 / 2
    assert auxk_loss(sae, pre, dead, err, 2, total_var).item() == pytest.approx(0.5)
    # an inverted mask would use latents 0 and 1 (the alive ones): e_hat = (9, 8, 0, 0) -> (36 + 64) / 2
    assert auxk_loss(sae, pre, ~dead, err, 2, total_var).item() == pytest.approx(50.0)
    # k_aux above the number of dead latents: only the dead ones, never an alive one
    assert auxk_loss(sae, pre, dead, err, 5, total_var).item() == pytest.approx(0.5)


def test_step_loss_adds_auxk_with_weight_one_over_32():
    torch.manual_seed(0)
    d, d_sae, k = 8, 32, 2
    sae = TopKSAE.from_state_dict(make_sae_state(d, d_sae, seed=1), k=k)
    x = torch.randn(64, d)
    k_aux = d // 2
    since = torch.full((d_sae,), 1000)            # every latent dead unless it fires in this batch
    out = step_loss(sae, x, k, since, dead_tokens=100, k_aux=k_aux)
    # by hand
    pre = torch.relu(x @ sae.W_enc.T + sae.b_enc)
    vals, idx = pre.topk(k, dim=-1)
    fired = torch.zeros(d_sae, dtype=torch.bool)
    fired[idx[vals > 0]] = True
    dead = ~fired
    z = torch.zeros_like(pre).scatter(-1, idx, vals)
    err = x - (z @ sae.W_dec.T + sae.b_dec)
    tv = (x - x.mean(0)).pow(2).sum()
    fvu = err.pow(2).sum() / tv
    ka = min(k_aux, int(dead.sum()))
    av, ai = pre.masked_fill(~dead, float("-inf")).topk(ka, dim=-1)
    e_hat = torch.zeros_like(pre).scatter(-1, ai, av.clamp_min(0)) @ sae.W_dec.T
    aux = (e_hat - err).pow(2).sum() / tv
    n_dead = int(dead.sum())
    assert out.n_dead == n_dead and 0 < n_dead < d_sae
    assert out.fvu.item() == pytest.approx(fvu.item(), rel=1e-5)
    assert out.aux.item() == pytest.approx(aux.item(), rel=1e-5) and aux.item() > 0.01
    want = fvu + AUXK_ALPHA * min(1.0, n_dead / k_aux) * aux
    assert AUXK_ALPHA == 1 / 32
    assert out.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert abs(out.loss.item() - out.fvu.item()) > 1e-4        # the AuxK term is really in the loss
    # and it is what trains the dead latents: their encoder rows get gradient only through AuxK
    out.loss.backward()
    g = sae.W_enc.grad
    assert g[dead].abs().sum() > 0
    assert g[fired].abs().sum() > 0


def test_radial_gradient_is_removed_column_by_column():
    W = torch.nn.Parameter(torch.tensor([[1.0, 0.0, 0.6], [0.0, 1.0, 0.8]]))   # unit columns
    W.grad = torch.tensor([[2.0, 3.0, 1.0], [5.0, -1.0, 1.0]])
    remove_radial_grad_(W)
    # column j: g_j - (g_j . w_j) w_j
    want = torch.tensor([[0.0, 3.0, 1.0 - 1.4 * 0.6], [5.0, 0.0, 1.0 - 1.4 * 0.8]])
    assert torch.allclose(W.grad, want, atol=1e-6)
    assert torch.allclose((W.grad * W).sum(0), torch.zeros(3), atol=1e-6)


def test_train_sae_recovers_a_known_sparse_dictionary(one_thread):
    """Data made of 2-sparse positive combinations of 16 unit directions in 8 dims: a k=2 SAE with
    32 latents finds every direction (a decoder column within ~30 degrees), reconstructs the data
    (FVU < 0.15 from ~0.6 at the start) and keeps its decoder columns unit-norm."""
    g = torch.Generator().manual_seed(0)
    d, n_atoms, n = 8, 16, 60_000
    atoms = torch.randn(n_atoms, d, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    pick = torch.rand(n, n_atoms, generator=g).argsort(1)[:, :2]
    coef = torch.rand(n, 2, generator=g) * 2 + 0.5
    x = (coef[..., None] * atoms[pick]).sum(1)
    sae, log = train_sae(x, d_sae=32, k=2, lr=1e-2, batch_tokens=256, seed=0)
    assert log["train_steps"] == n // 256
    assert log["final_train_fvu"] < 0.15 and log["curve"][0]["fvu"] > 4 * log["final_train_fvu"]
    cos = (atoms @ sae.W_dec).max(1).values          # best decoder column per true direction
    assert cos.min() > 0.8 and cos.median() > 0.95
    assert torch.allclose(sae.W_dec.norm(dim=0), torch.ones(32), atol=1e-4)
