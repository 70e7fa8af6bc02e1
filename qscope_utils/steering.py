"""Activation steering with SAE decoder directions (docs/CONVENTIONS.md §2).

``h <- h + alpha * W_dec[:, i]`` (the raw column) is added to the output of decoder layer n at
every prompt position and at every decode step (the hook runs on each forward call, so it works
with the KV cache on). Several features and layers can be steered at once, and steering can be
restricted to selected batch rows (the DAPO section steers one rollout per group).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .hooks import decoder_layers, hidden_of, with_hidden
from .sae import TopKSAE

__all__ = ["feature_vector", "steer", "clamp_features", "row_mask"]


def feature_vector(sae: TopKSAE, features: int | Sequence[int], alphas: float | Sequence[float]) -> torch.Tensor:
    """sum_i alpha_i * W_dec[:, f_i] as a (d_model,) float32 vector. Raises on out-of-range ids."""
    feats = [features] if isinstance(features, int) else list(features)
    al = [float(alphas)] * len(feats) if isinstance(alphas, (int, float)) else [float(a) for a in alphas]
    if len(al) != len(feats):
        raise ValueError(f"{len(feats)} features but {len(al)} alphas")
    cols = sae.direction(feats)  # (n, d_model); validates ids
    return (torch.tensor(al, dtype=cols.dtype, device=cols.device)[:, None] * cols).sum(0).float()


def row_mask(rows, batch: int, device) -> torch.Tensor | None:
    """(B, 1, 1) float mask of the batch rows to steer, or None for every row."""
    if rows is None:
        return None
    m = torch.zeros(batch, dtype=torch.bool, device=device)
    rows_t = torch.as_tensor(rows, device=device)
    if rows_t.dtype == torch.bool:
        if rows_t.numel() != batch:
            raise ValueError(f"row mask has {rows_t.numel()} entries for a batch of {batch}")
        m = rows_t
    else:
        if rows_t.numel() and (rows_t.min() < 0 or rows_t.max() >= batch):
            raise IndexError(f"steering rows {rows_t.tolist()} out of range for a batch of {batch}")
        m[rows_t.long()] = True
    return m[:, None, None]


def _check_vec(model: nn.Module, vec: torch.Tensor) -> None:
    d = model.config.hidden_size if hasattr(model, "config") else None
    if vec.ndim != 1 or (d is not None and vec.shape[0] != d):
        raise ValueError(f"steering vector has shape {tuple(vec.shape)}; expected ({d},) = the model's hidden size. "
                         f"Use the decoder of the SAE paired with this backbone.")


@contextmanager
def steer(model: nn.Module, vectors: Mapping[int, torch.Tensor], rows=None):
    """Add ``vectors[layer]`` (d_model,) to the residual after each given layer, at every position.

    rows: None (all), a list of batch-row indices, or a bool mask (B,). Hooks are removed on
    exit, also when the body raises. A zero vector leaves the forward pass unchanged.
    """
    blocks = decoder_layers(model)
    handles = []

    def make(vec: torch.Tensor):
        def hook(_m, _i, out):
            h = hidden_of(out)
            add = vec.to(device=h.device, dtype=h.dtype)
            m = row_mask(rows, h.shape[0], h.device)
            h = h + (add if m is None else add * m.to(h.dtype))
            return with_hidden(out, h)
        return hook

    try:
        for layer, vec in vectors.items():
            if not 0 <= layer < len(blocks):
                raise IndexError(f"layer {layer} out of range 0..{len(blocks) - 1}")
            _check_vec(model, vec)
            handles.append(blocks[layer].register_forward_hook(make(vec.detach())))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def clamp_features(model: nn.Module, layer: int, sae: TopKSAE, features: Iterable[int], value: float = 0.0,
                   rows=None, only_active: bool = True):
    """Clamp SAE features to ``value`` at one layer: h <- h + sum_f (value - z_f(h)) * W_dec[:, f].

    z is the TopK code of the current residual (float32). With ``only_active`` the edit touches
    only tokens where the feature fires (the usual ablation: clamping to 0 removes the feature's
    contribution and nothing else).
    """
    feats = list(features)
    for f in feats:
        sae.direction(f)  # range check
    blocks = decoder_layers(model)
    if not 0 <= layer < len(blocks):
        raise IndexError(f"layer {layer} out of range 0..{len(blocks) - 1}")
    idx = torch.tensor(feats, dtype=torch.long)

    def hook(_m, _i, out):
        h = hidden_of(out)
        z = sae.encode(h.float())[..., idx.to(h.device)]                       # (B, T, n)
        delta = value - z
        if only_active:
            delta = torch.where(z > 0, delta, torch.zeros_like(delta))
        edit = delta @ sae.W_dec[:, idx.to(h.device)].T                         # (B, T, d)
        m = row_mask(rows, h.shape[0], h.device)
        if m is not None:
            edit = edit * m
        return with_hidden(out, h + edit.to(h.dtype))

    handle = blocks[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
