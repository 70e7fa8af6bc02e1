"""Streaming SAE feature statistics over a corpus of texts (memory flat in corpus size).

Everything builds on :func:`iter_codes`, which runs the backbone once per batch, captures the
requested layers in one forward pass, and yields the TopK codes of the valid tokens only
(padding dropped; position 0 / attention-sink tokens excluded by default). Reducers:

* :func:`text_max_activations` — per text, max over tokens of each feature: a scipy CSR matrix
  (n_texts, d_sae); firing ``h = 1[max_t a > eps]`` is ``M > eps`` (§5, §6).
* :func:`last_token_features` — per text, the active set at the last real token (§4).
* :func:`mean_activations` — mean code (and optionally mean pre-activation) per feature (§3, §7).
* :class:`TopContexts` / :func:`top_contexts` — the top-n activating (text, position) pairs of
  chosen features, for dashboards.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .hooks import capture_residuals, iter_batches, position_mask
from .sae import SparseCodes, TopKSAE

__all__ = ["CodeBatch", "iter_codes", "text_max_activations", "last_token_features", "mean_activations",
           "TopContexts", "top_contexts", "firing_rates"]


@dataclass
class CodeBatch:
    """One batch of texts encoded at several layers.

    start: index of the first text of the batch in the corpus; input_ids, attention_mask (B, T);
    mask (B, T) bool of tokens kept for statistics; codes[layer]: SparseCodes of the kept tokens
    (N = mask.sum() rows, in row-major (b, t) order); rows: (N,) text index in the batch;
    positions: (N,) token position; pre[layer]: (N, d_sae) pre-activations when asked for.
    """

    start: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor
    positions: torch.Tensor
    codes: dict[int, SparseCodes]
    pre: dict[int, torch.Tensor] = field(default_factory=dict)


def iter_codes(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str], batch_size: int = 16,
               max_length: int = 128, exclude_first: bool = True, norm_ratio: float | None = None,
               with_pre: bool = False, progress: bool = True, desc: str = "encoding") -> Iterator[CodeBatch]:
    """Yield :class:`CodeBatch` es for ``texts`` with the SAEs of ``saes`` (layer -> TopKSAE)."""
    layers = sorted(saes)
    bar = tqdm(total=len(texts), desc=desc, disable=not progress, leave=False)
    for start, enc in iter_batches(tokenizer, texts, batch_size=batch_size, max_length=max_length):
        ids, am = enc["input_ids"], enc["attention_mask"]
        with torch.no_grad():
            hs = capture_residuals(model, ids, am, layers)
            ref = hs[layers[-1]]
            mask = position_mask(am, exclude_first=exclude_first, hidden=ref if norm_ratio else None,
                                 norm_ratio=norm_ratio).to(ref.device)
            rows, positions = mask.nonzero(as_tuple=True)
            codes, pre = {}, {}
            for l in layers:
                x = hs[l][mask].float()
                codes[l] = saes[l].encode_sparse(x)
                if with_pre:
                    pre[l] = saes[l].pre_acts(x)
        yield CodeBatch(start, ids, am, mask.cpu(), rows.cpu(), positions.cpu(),
                        {l: SparseCodes(c.indices.cpu(), c.values.cpu(), c.d_sae) for l, c in codes.items()},
                        {l: p.cpu() for l, p in pre.items()})
        bar.update(ids.shape[0])
    bar.close()


def _batch_max(codes: SparseCodes, rows: torch.Tensor, n_rows: int) -> sp.csr_matrix:
    """(n_rows, d_sae) CSR of per-row max activation from sparse token codes."""
    act = codes.values > 0
    r = rows[:, None].expand_as(codes.indices)[act]
    c = codes.indices[act]
    v = codes.values[act]
    if v.numel() == 0:
        return sp.csr_matrix((n_rows, codes.d_sae), dtype=np.float32)
    key = r * codes.d_sae + c
    uniq, inv = key.unique(return_inverse=True)
    mx = torch.zeros(uniq.numel(), dtype=v.dtype).scatter_reduce_(0, inv, v, reduce="amax", include_self=False)
    return sp.csr_matrix((mx.numpy(), ((uniq // codes.d_sae).numpy(), (uniq % codes.d_sae).numpy())),
                         shape=(n_rows, codes.d_sae), dtype=np.float32)


def text_max_activations(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str],
                         **kw) -> dict[int, sp.csr_matrix]:
    """layer -> CSR (n_texts, d_sae): max over each text's kept tokens of every feature's code."""
    parts: dict[int, list] = {l: [] for l in saes}
    for b in iter_codes(model, tokenizer, saes, texts, **kw):
        n = b.input_ids.shape[0]
        for l, c in b.codes.items():
            parts[l].append(_batch_max(c, b.rows, n))
    return {l: sp.vstack(p).tocsr() if p else sp.csr_matrix((0, saes[l].d_sae)) for l, p in parts.items()}


def last_token_features(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str], batch_size: int = 16,
                        max_length: int = 128, progress: bool = True) -> dict[int, sp.csr_matrix]:
    """layer -> CSR bool (n_texts, d_sae): F(x) = {j : z_j > 0} at each text's LAST real token (§4).

    One forward pass per batch for all layers; only the last token's residual is encoded (at paper
    sizes, 64K-wide SAEs on long prompts, encoding every position would cost ~T times more). Texts
    longer than ``max_length`` tokens are truncated on the LEFT so the last token stays the text's own.
    """
    layers = sorted(saes)
    parts: dict[int, list] = {l: [] for l in layers}
    old = getattr(tokenizer, "truncation_side", "right")
    tokenizer.truncation_side = "left"
    try:
        bar = tqdm(total=len(texts), desc="last-token features", disable=not progress, leave=False)
        for _, enc in iter_batches(tokenizer, list(texts), batch_size=batch_size, max_length=max_length,
                                   padding_side="right"):
            am = enc["attention_mask"]
            with torch.no_grad():
                hs = capture_residuals(model, enc["input_ids"], am, layers)
                last = am.shape[1] - 1 - am.flip(1).argmax(1)       # last real token of each row
                rows = torch.arange(am.shape[0])
                for l in layers:
                    x = hs[l][rows.to(hs[l].device), last.to(hs[l].device)].float()
                    c = saes[l].encode_sparse(x)
                    idx, val = c.indices.cpu(), c.values.cpu()
                    r, k = torch.nonzero(val > 0, as_tuple=True)
                    parts[l].append(sp.csr_matrix((np.ones(len(r), dtype=bool), (r.numpy(), idx[r, k].numpy())),
                                                  shape=(am.shape[0], saes[l].d_sae)))
            bar.update(am.shape[0])
        bar.close()
    finally:
        tokenizer.truncation_side = old
    return {l: sp.vstack(p).tocsr().astype(bool) if p else sp.csr_matrix((0, saes[l].d_sae), dtype=bool)
            for l, p in parts.items()}


def mean_activations(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str], with_pre: bool = False,
                     **kw) -> dict[int, dict[str, torch.Tensor]]:
    """layer -> {'mean': (d_sae,) mean code over kept tokens, 'rate': (d_sae,) firing rate,
    'n_tokens': scalar, and 'mean_pre': (d_sae,) mean pre-activation if ``with_pre``}."""
    acc = {l: {"sum": torch.zeros(s.d_sae, dtype=torch.float64), "cnt": torch.zeros(s.d_sae, dtype=torch.float64),
               "pre": torch.zeros(s.d_sae, dtype=torch.float64), "n": 0} for l, s in saes.items()}
    for b in iter_codes(model, tokenizer, saes, texts, with_pre=with_pre, **kw):
        for l, c in b.codes.items():
            a = acc[l]
            act = c.values > 0
            a["sum"].index_add_(0, c.indices.reshape(-1), c.values.reshape(-1).double())
            a["cnt"].index_add_(0, c.indices[act], torch.ones(int(act.sum()), dtype=torch.float64))
            a["n"] += c.indices.shape[0]
            if with_pre:
                a["pre"] += b.pre[l].double().sum(0)
    out = {}
    for l, a in acc.items():
        n = max(a["n"], 1)
        out[l] = {"mean": (a["sum"] / n).float(), "rate": (a["cnt"] / n).float(), "n_tokens": a["n"]}
        if with_pre:
            out[l]["mean_pre"] = (a["pre"] / n).float()
    return out


def firing_rates(max_acts: sp.csr_matrix, eps: float = 0.0) -> np.ndarray:
    """(d_sae,) share of texts on which each feature fires (max activation > eps)."""
    fired = max_acts > eps
    return np.asarray(fired.sum(0)).ravel() / max(max_acts.shape[0], 1)


class TopContexts:
    """Running top-n (activation, text index, position) per chosen feature, streamed over batches."""

    def __init__(self, features: Iterable[int], n: int = 10):
        self.features = [int(f) for f in features]
        self.n = n
        self.best = {f: [] for f in self.features}

    def update(self, codes: SparseCodes, rows: torch.Tensor, positions: torch.Tensor, start: int) -> None:
        for f in self.features:
            hit = (codes.indices == f) & (codes.values > 0)
            tok = hit.any(1).nonzero(as_tuple=True)[0]
            if tok.numel() == 0:
                continue
            vals = (codes.values * hit).sum(1)[tok]
            cand = [(float(v), int(start + rows[t]), int(positions[t])) for v, t in zip(vals, tok)]
            self.best[f] = sorted(self.best[f] + cand, reverse=True)[: self.n]


def top_contexts(model, tokenizer, sae: TopKSAE, layer: int, texts: list[str], features: Iterable[int],
                 n: int = 8, window: int = 12, **kw) -> dict[int, list[dict]]:
    """feature -> list of {activation, text_index, position, context, token} for its top-n tokens.

    ``context`` is the decoded window of ``window`` tokens before the token, with the token
    itself marked as ``[[token]]``.
    """
    tc = TopContexts(features, n)
    enc_cache = {}
    for b in iter_codes(model, tokenizer, {layer: sae}, texts, **kw):
        tc.update(b.codes[layer], b.rows, b.positions, b.start)
    out = {}
    for f, lst in tc.best.items():
        rows = []
        for act, ti, pos in lst:
            if ti not in enc_cache:
                enc_cache[ti] = tokenizer(texts[ti], truncation=True, max_length=kw.get("max_length", 128))["input_ids"]
            ids = enc_cache[ti]
            left = tokenizer.decode(ids[max(0, pos - window):pos])
            tok = tokenizer.decode(ids[pos:pos + 1])
            rows.append({"activation": act, "text_index": ti, "position": pos, "token": tok,
                         "context": f"{left}[[{tok}]]"})
        out[f] = rows
    return out
