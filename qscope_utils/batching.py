"""Bounded-memory batching for inference: token budgets and chunked next-token log-probs.

Nothing here builds a (rows x length x vocab) tensor. The paper backbones have a 151,936-token
vocabulary, so full logits of a 512-row x 4,096-token batch would be ~1.3 TB in float32; instead:

* :func:`token_budget_batches` groups rows so that rows x (longest row) stays under a token budget
  (what a generation batch's KV cache or a forward pass's activations grow with);
* :func:`chosen_logprobs` applies the LM head to chunks of positions of a hidden-state matrix and keeps
  only the log-prob of the chosen token, so at most ``chunk_tokens x vocab`` logits exist at once
  (float32 log_softmax per chunk);
* :func:`token_logprobs` / :func:`sequence_nll` run the model body once and score next tokens with it;
* :class:`ChosenLogprobRecorder`, a ``generate`` logits processor that keeps each sampled token's
  log-prob under the processed (temperature-scaled) scores one decode step at a time, instead of
  ``output_scores=True`` (which keeps all T steps' (rows x vocab) scores).

Memory arithmetic (units in each docstring): a chunk of ``c`` positions costs ``c x vocab x 4`` bytes of
float32 log-probs (4,096 x 151,936 x 4 = 2.5 GB, plus the head's own output in the model dtype);
a generation batch costs ``rows x (prompt + max_new_tokens) x kv_bytes_per_token`` of KV cache
(:meth:`qscope_utils.model_shapes.BackboneShape.kv_bytes_per_token`: 147,456 bytes/token for
Qwen3-8B in bf16). This module is a core module: it imports no section module.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["DEFAULT_CHUNK_TOKENS", "token_budget_batches", "split_body_head", "body_of", "chosen_logprobs", "token_logprobs",
           "sequence_nll", "ChosenLogprobRecorder"]

#: positions per LM-head chunk: 4,096 x 151,936 (Qwen3 vocab) x 4 bytes = 2.5 GB of float32 log-probs at most
DEFAULT_CHUNK_TOKENS = 4096


def token_budget_batches(lengths: Sequence[int], max_tokens: int | None, max_rows: int | None = None) -> list[list[int]]:
    """Consecutive groups of row indices (original order, deterministic) with rows x longest <= ``max_tokens``.

    lengths: tokens per row (for generation: prompt + max_new_tokens, what the KV cache holds);
    max_tokens: the budget in tokens (padded rows x columns); None = no token limit;
    max_rows: at most this many rows per group (None = no row limit).
    A single row longer than the budget gets a group of its own (it cannot be split; the caller's
    budget is then exceeded by that one row only). Rows are never reordered, so concatenating the
    groups' outputs gives the unbatched order.
    """
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens={max_tokens} must be >= 1 (or None for no token budget)")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows={max_rows} must be >= 1 (or None for no row limit)")
    groups: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        n = int(n)
        if n < 0:
            raise ValueError(f"row {i} has negative length {n}")
        grow = max(longest, n)
        full = (max_rows is not None and len(cur) >= max_rows) or (
            max_tokens is not None and (len(cur) + 1) * grow > max_tokens)
        if cur and full:
            groups.append(cur)
            cur, grow = [], n
        cur.append(i)
        longest = grow
    if cur:
        groups.append(cur)
    return groups


def split_body_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(body giving ``last_hidden_state``, LM head) of a causal LM: ``get_decoder()`` (else ``base_model``)
    and ``get_output_embeddings()``. Hooks on decoder layers (steering, SAE splices) still apply."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = model.get_decoder() if hasattr(model, "get_decoder") else None
    if body is None or body is model:
        body = getattr(model, "base_model", None)
    if head is None or body is None or body is model:
        raise TypeError(f"{type(model).__name__} exposes no decoder body and LM head (get_decoder / "
                        f"get_output_embeddings): pass a transformers causal LM")
    if getattr(getattr(model, "config", None), "final_logit_softcapping", None):
        raise NotImplementedError("final_logit_softcapping models are not supported by the chunked LM head")
    return body, head


def body_of(model: nn.Module) -> nn.Module:
    """The decoder body of a causal LM (no LM head: hidden states, never logits); the model itself when it
    exposes none. For passes that only need residuals (capture up to the last layer)."""
    try:
        return split_body_head(model)[0]
    except (TypeError, NotImplementedError):
        return model


def chosen_logprobs(head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
                    chunk_tokens: int = DEFAULT_CHUNK_TOKENS, temperature: float = 1.0) -> torch.Tensor:
    """log p(targets[i] | hidden[i]) for N positions: hidden (N, d), targets (N,) -> (N,) float32.

    The head runs on at most ``chunk_tokens`` rows at a time; log_softmax in float32 per chunk, of
    ``logits / temperature``.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens={chunk_tokens} must be >= 1")
    if hidden.shape[0] != targets.shape[0]:
        raise ValueError(f"{hidden.shape[0]} hidden rows but {targets.shape[0]} targets")
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    tgt = targets.to(hidden.device)
    for s in range(0, hidden.shape[0], chunk_tokens):
        logits = head(hidden[s:s + chunk_tokens]).float()
        if temperature != 1.0:
            logits = logits / temperature
        out[s:s + chunk_tokens] = torch.log_softmax(logits, -1).gather(1, tgt[s:s + chunk_tokens, None]).squeeze(1)
        del logits
    return out


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   chunk_tokens: int = DEFAULT_CHUNK_TOKENS, positions: torch.Tensor | None = None,
                   position_ids: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T-1) float32: log-prob of token t+1 given tokens <= t, from one pass of the model body.

    The LM head runs on chunks of ``chunk_tokens`` positions (so at most chunk_tokens x vocab logits
    exist at once) and only where ``positions`` (B, T-1) bool is True (default: everywhere); other
    entries are 0. Equals ``log_softmax(model(input_ids, attention_mask).logits.float())`` gathered at the
    next tokens. Padding positions are scored like any other: mask them in the caller.
    """
    body, head = split_body_head(model)
    dev = next(model.parameters()).device
    ids = input_ids.to(dev)
    kw = {"attention_mask": attention_mask.to(dev) if attention_mask is not None else None, "use_cache": False}
    if position_ids is not None:
        kw["position_ids"] = position_ids.to(dev)
    h = body(input_ids=ids, **kw).last_hidden_state[:, :-1]
    sel = (torch.ones(h.shape[:2], dtype=torch.bool) if positions is None else positions.bool()).to(dev)
    out = torch.zeros(h.shape[:2], dtype=torch.float32, device=dev)
    out[sel] = chosen_logprobs(head, h[sel], ids[:, 1:][sel], chunk_tokens)
    return out


def sequence_nll(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 loss_mask: torch.Tensor | None = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[float, int]:
    """(sum of next-token CE in nats, number of predicted tokens) over positions where both the input
    and the target are real tokens (and ``loss_mask`` (B, T) is True at the target, if given)."""
    am = attention_mask.bool()
    valid = am[:, 1:] & am[:, :-1]
    if loss_mask is not None:
        valid &= loss_mask[:, 1:].bool().to(valid.device)
    if not bool(valid.any()):
        return 0.0, 0
    lp = token_logprobs(model, input_ids, attention_mask, chunk_tokens, positions=valid)
    return float(-lp[valid.to(lp.device)].sum()), int(valid.sum())


class ChosenLogprobRecorder:
    """``generate`` logits processor: per decode step, the log-prob of the token that step emitted.

    Put it LAST in the processor list (after any temperature warper), so it sees the processed scores the
    sampler draws from. It keeps one step's (rows x vocab) float32 log_softmax at a time and, on the
    next step (whose ``input_ids`` end with the emitted token), keeps only that token's entry; call
    :meth:`finish` with the final sequences after ``generate``. ``logprobs()`` is then (rows, steps),
    equal to ``log_softmax(gen.scores[t].float()).gather(sequences[:, P + t])`` of ``output_scores=True``
    without keeping every step's scores.
    """

    def __init__(self):
        self._pending: torch.Tensor | None = None
        self._steps: list[torch.Tensor] = []

    def _flush(self, emitted: torch.Tensor) -> None:
        if self._pending is not None:
            self._steps.append(self._pending.gather(1, emitted[:, None].to(self._pending.device)).squeeze(1))
            self._pending = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._flush(input_ids[:, -1])
        self._pending = torch.log_softmax(scores.float(), -1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """Record the last step's token (``sequences[:, -1]``); returns (rows, steps) float32 log-probs."""
        self._flush(sequences[:, -1])
        return self.logprobs()

    def logprobs(self) -> torch.Tensor:
        if not self._steps:
            return torch.zeros(0, 0)
        return torch.stack(self._steps, 1)
