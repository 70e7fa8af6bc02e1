"""Forward hooks on Hugging Face decoder layers: read the residual stream after block n.

Hook point (docs/CONVENTIONS.md §2): the OUTPUT of ``model.model.layers[n]``. Newer transformers return a
plain tensor from a decoder layer, older ones a tuple whose first item is the hidden state; both
are handled. A vision-language wrapper keeps its layers under ``model.language_model.layers``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch
from torch import nn

from .batching import body_of

__all__ = ["decoder_layers", "hidden_of", "with_hidden", "capture_residuals", "position_mask", "iter_batches",
           "pad_ids"]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder-layer list of a causal LM (Qwen3, Qwen3-MoE, Qwen3.5 VL wrappers ...)."""
    for path in ("model.layers", "model.language_model.layers", "language_model.model.layers",
                 "model.model.layers", "layers"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise AttributeError(f"cannot find decoder layers on {type(model).__name__}: expected model.model.layers "
                         f"or model.model.language_model.layers")


def hidden_of(output) -> torch.Tensor:
    """The hidden state in a decoder layer's output (tensor, or tuple/list whose first item it is)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def with_hidden(output, hidden: torch.Tensor):
    """Rebuild a decoder layer's output with a new hidden state, keeping its container type."""
    if isinstance(output, tuple):
        return (hidden,) + tuple(output[1:])
    if isinstance(output, list):
        return [hidden] + list(output[1:])
    return hidden


def _check_layers(model: nn.Module, layers: Iterable[int]) -> list[int]:
    n = len(decoder_layers(model))
    out = []
    for l in layers:
        if not 0 <= int(l) < n:
            raise IndexError(f"layer {l} is out of range: the model has decoder layers 0..{n - 1}")
        out.append(int(l))
    return out


@contextmanager
def capture(model: nn.Module, layers: Iterable[int], fn: Callable[[int, torch.Tensor], None] | None = None):
    """Context manager: record (or pass to ``fn``) the residual after each of ``layers``.

    Yields a dict layer -> last captured hidden state (B, T, d_model), detached. Hooks are
    removed on exit, also on exceptions.
    """
    layers = _check_layers(model, layers)
    blocks = decoder_layers(model)
    store: dict[int, torch.Tensor] = {}
    handles = []

    def make(l):
        def hook(_mod, _inp, out):
            h = hidden_of(out).detach()
            if fn is None:
                store[l] = h
            else:
                fn(l, h)
        return hook

    try:
        for l in layers:
            handles.append(blocks[l].register_forward_hook(make(l)))
        yield store
    finally:
        for h in handles:
            h.remove()


class _StopForward(Exception):
    pass


@torch.no_grad()
def capture_residuals(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                      layers: Iterable[int] = (0,), stop_early: bool = True) -> dict[int, torch.Tensor]:
    """Residuals after each of ``layers`` in ONE forward pass: dict layer -> (B, T, d_model).

    With ``stop_early`` the forward pass is cut after the deepest requested layer (saves the
    remaining blocks). The LM head never runs (the decoder body, :func:`qscope_utils.batching.body_of`),
    so no (rows x length x vocab) logits are built. Padding is not removed here: use ``attention_mask`` /
    :func:`position_mask` to select valid tokens.
    """
    layers = _check_layers(model, layers)
    last = max(layers)
    blocks = decoder_layers(model)
    stopper = None
    with capture(model, layers) as store:
        if stop_early and last < len(blocks) - 1:
            def halt(_m, _i, _o):
                raise _StopForward
            stopper = blocks[last].register_forward_hook(halt)
        try:
            body_of(model)(input_ids=input_ids.to(model.device),
                           attention_mask=None if attention_mask is None else attention_mask.to(model.device),
                           use_cache=False)
        except _StopForward:
            pass
        finally:
            if stopper is not None:
                stopper.remove()
    return {l: store[l] for l in layers}


def position_mask(attention_mask: torch.Tensor, exclude_first: bool = True,
                  hidden: torch.Tensor | None = None, norm_ratio: float | None = None) -> torch.Tensor:
    """(B, T) bool mask of tokens to use in feature statistics.

    Drops padding, the first real token of each row (position 0: the attention sink) when
    ``exclude_first``, and, given ``hidden`` (B, T, d) and ``norm_ratio``, any token whose L2 norm
    exceeds ``norm_ratio`` x the median norm of valid tokens (massive-activation outliers).
    Works for left and right padding.
    """
    mask = attention_mask.bool().clone()
    if hidden is not None:                # one device for the mask and the norms (GPU runs)
        mask = mask.to(hidden.device)
    if exclude_first:
        first = mask.int().argmax(dim=1)  # index of first real token per row
        mask[torch.arange(mask.shape[0], device=mask.device), first] = False
    if hidden is not None and norm_ratio is not None:
        norms = hidden.float().norm(dim=-1)
        med = norms[mask].median() if mask.any() else norms.new_tensor(0.0)
        mask &= norms <= norm_ratio * med
    return mask


def iter_batches(tokenizer, texts: list[str], batch_size: int = 16, max_length: int = 128,
                 padding_side: str = "right"):
    """Tokenize ``texts`` in batches: yields (start_index, encoding with input_ids / attention_mask)."""
    old = tokenizer.padding_side
    tokenizer.padding_side = padding_side
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length)
            yield i, enc
    finally:
        tokenizer.padding_side = old


def pad_ids(rows, pad: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token-id lists into (input_ids, attention_mask), both (len(rows), max_len) int64,
    on the right (default) or the left."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    am = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        sl = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, sl] = torch.tensor(list(r), dtype=torch.long)
        am[i, sl] = 1
    return ids, am
