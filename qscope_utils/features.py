"""Streaming SAE feature statistics over a corpus of texts (memory flat in corpus size).

Everything builds on :func:`iter_codes`, which runs the backbone once per batch, captures the
requested layers in one forward pass, and yields the TopK codes of the valid tokens only
(padding dropped; position 0 / attention-sink tokens excluded by default). Memory is bounded by the
micro-batch (``batch_size`` texts of at most ``max_length`` tokens) and by ``encode_budget``: the SAE
encodes at most ``encode_budget // d_sae`` tokens at a time, so the dense (tokens, d_sae)
pre-activation buffer never exceeds ``encode_budget`` floats (512 MiB by default) whatever the
batch; nothing kept grows with texts x length x d_sae. Pass a :meth:`qscope_utils.sae.SAELoader.view`
(not a dict) as ``saes`` so the loader's cache bounds the layers alive. Reducers:

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
from .sae import LayerView, SAELoader, SparseCodes, TopKSAE

__all__ = ["CodeBatch", "iter_codes", "encode_rows", "subset", "ENCODE_BUDGET", "text_max_activations",
           "last_token_features", "last_token_features_many", "mean_activations", "TopContexts", "top_contexts", "top_contexts_by_layer", "firing_rates"]


@dataclass
class CodeBatch:
    """One batch of texts encoded at several layers.

    start: index of the first text of the batch in the corpus; input_ids, attention_mask (B, T);
    mask (B, T) bool of tokens kept for statistics; codes[layer]: SparseCodes of the kept tokens
    (N = mask.sum() rows, in row-major (b, t) order); rows: (N,) text index in the batch;
    positions: (N,) token position; pre[layer]: (N, d_sae) pre-activations when asked for
    (``with_pre=True``), or their (d_sae,) float64 sum over the N tokens (``with_pre="sum"``).
    """

    start: int
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    mask: torch.Tensor
    rows: torch.Tensor
    positions: torch.Tensor
    codes: dict[int, SparseCodes]
    pre: dict[int, torch.Tensor] = field(default_factory=dict)


def subset(saes: Mapping[int, TopKSAE], layers: Iterable[int]) -> Mapping[int, TopKSAE]:
    """The SAEs of ``layers`` from a dict (a dict), or from a loader or loader view (a view: no layer
    held, so the loader's cache alone bounds the layers alive)."""
    layers = list(layers)
    if isinstance(saes, SAELoader):
        return saes.view(layers)
    return saes.loader.view(layers) if isinstance(saes, LayerView) else {l: saes[l] for l in layers}


ENCODE_BUDGET = 2 ** 27   # floats of dense pre-activations per SAE encode call (512 MiB in float32)


def encode_rows(sae: TopKSAE, x: torch.Tensor, with_pre: bool | str = False, budget: int = ENCODE_BUDGET
                ) -> tuple[SparseCodes, torch.Tensor | None]:
    """Top-k codes of the rows of x (N, d_model), encoded ``budget // d_sae`` rows at a time.

    Returns (codes, pre): pre is None, the (N, d_sae) pre-activations (``with_pre=True``) or their
    (d_sae,) float64 column sum (``with_pre="sum"``, which keeps memory at one chunk)."""
    if with_pre not in (False, True, "sum"):
        raise ValueError(f"with_pre={with_pre!r}: use False, True or 'sum'")
    step = max(1, int(budget) // sae.d_sae)
    if x.shape[0] <= step:                               # the common case: one call, no copies
        codes = sae.encode_sparse(x)
        if not with_pre:
            return codes, None
        pre = sae.pre_acts(x)
        return codes, (pre.double().sum(0) if with_pre == "sum" else pre)
    idx, val, pres = [], [], []
    for i in range(0, x.shape[0], step):
        c, p = encode_rows(sae, x[i:i + step], with_pre, budget)
        idx.append(c.indices)
        val.append(c.values)
        if p is not None:
            pres.append(p)
    codes = SparseCodes(torch.cat(idx), torch.cat(val), sae.d_sae)
    if not with_pre:
        return codes, None
    return codes, (torch.stack(pres).sum(0) if with_pre == "sum" else torch.cat(pres))


def iter_codes(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str], batch_size: int = 16,
               max_length: int = 128, exclude_first: bool = True, norm_ratio: float | None = None,
               with_pre: bool | str = False, progress: bool = True, desc: str = "encoding",
               encode_budget: int = ENCODE_BUDGET) -> Iterator[CodeBatch]:
    """Yield :class:`CodeBatch` es for ``texts`` with the SAEs of ``saes`` (layer -> TopKSAE, or a
    loader view): one forward pass per ``batch_size`` texts, SAE encodes of at most
    ``encode_budget // d_sae`` tokens (see :func:`encode_rows`)."""
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
                codes[l], p = encode_rows(saes[l], hs[l][mask].float(), with_pre, encode_budget)
                if with_pre:
                    pre[l] = p
            del hs
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
                        max_length: int = 128, progress: bool = True, layers: Iterable[int] | None = None
                        ) -> dict[int, sp.csr_matrix]:
    """layer -> CSR bool (n_texts, d_sae): F(x) = {j : z_j > 0} at each text's LAST real token (§4).

    :func:`last_token_features_many` for one text list."""
    return last_token_features_many(model, tokenizer, saes, {0: texts}, batch_size, max_length, progress, layers)[0]


def last_token_features_many(model, tokenizer, saes, texts_by_name: Mapping, batch_size: int = 16,
                             max_length: int = 128, progress: bool = True, layers: Iterable[int] | None = None
                             ) -> dict:
    """name -> layer -> CSR bool (n_texts, d_sae): last-token active sets of several text lists.

    One forward pass per batch captures the last real token's residual at every layer (texts longer
    than ``max_length`` tokens are truncated on the LEFT so the last token stays the text's own; only
    that token is encoded: at paper sizes encoding every position would cost ~T times more). The
    residuals (n_texts x n_layers x d_model, on the CPU) are then encoded with the LAYER loop outside,
    so with a loader (``scope.saes``, or a view) each layer file is read once for all text lists and
    at most the loader's cache is alive. ``saes``: layer -> TopKSAE, a loader view, or an
    :class:`~qscope_utils.sae.SAELoader` (then ``layers`` is required).
    """
    if layers is None:
        if isinstance(saes, SAELoader):
            raise ValueError("last_token_features over a whole SAELoader needs layers=[...]")
        layers = list(saes)
    layers = sorted(int(l) for l in layers)
    resid = {name: _last_token_residuals(model, tokenizer, list(texts), layers, batch_size, max_length, progress)
             for name, texts in texts_by_name.items()}
    out: dict = {name: {} for name in texts_by_name}
    for l in layers:                                   # layers outer: one read per layer file
        sae = saes[l]
        for name, batches in resid.items():
            parts = []
            for hs in batches:
                c = sae.encode_sparse(hs[l].to(sae.W_enc.device).float())
                idx, val = c.indices.cpu(), c.values.cpu()
                r, k = torch.nonzero(val > 0, as_tuple=True)
                parts.append(sp.csr_matrix((np.ones(len(r), dtype=bool), (r.numpy(), idx[r, k].numpy())),
                                           shape=(hs[l].shape[0], sae.d_sae)))
            out[name][l] = (sp.vstack(parts).tocsr().astype(bool) if parts
                            else sp.csr_matrix((0, sae.d_sae), dtype=bool))
        del sae
    return out


@torch.no_grad()
def _last_token_residuals(model, tokenizer, texts: list[str], layers: list[int], batch_size: int, max_length: int,
                          progress: bool) -> list[dict[int, torch.Tensor]]:
    """Per batch: layer -> (B, d_model) residual at each text's last real token (model dtype, CPU)."""
    batches = []
    old = getattr(tokenizer, "truncation_side", "right")
    tokenizer.truncation_side = "left"
    try:
        bar = tqdm(total=len(texts), desc="last-token residuals", disable=not progress, leave=False)
        for _, enc in iter_batches(tokenizer, texts, batch_size=batch_size, max_length=max_length,
                                   padding_side="right"):
            am = enc["attention_mask"]
            hs = capture_residuals(model, enc["input_ids"], am, layers)
            last = am.shape[1] - 1 - am.flip(1).argmax(1)       # last real token of each row
            rows = torch.arange(am.shape[0])
            batches.append({l: hs[l][rows.to(hs[l].device), last.to(hs[l].device)].cpu() for l in layers})
            bar.update(am.shape[0])
        bar.close()
    finally:
        tokenizer.truncation_side = old
    return batches


def mean_activations(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str], with_pre: bool = False,
                     **kw) -> dict[int, dict[str, torch.Tensor]]:
    """layer -> {'mean': (d_sae,) mean code over kept tokens, 'rate': (d_sae,) firing rate,
    'n_tokens': scalar, and 'mean_pre': (d_sae,) mean pre-activation if ``with_pre``}."""
    acc = {l: {"sum": torch.zeros(s.d_sae, dtype=torch.float64), "cnt": torch.zeros(s.d_sae, dtype=torch.float64),
               "pre": torch.zeros(s.d_sae, dtype=torch.float64), "n": 0} for l, s in saes.items()}
    for b in iter_codes(model, tokenizer, saes, texts, with_pre="sum" if with_pre else False, **kw):
        for l, c in b.codes.items():
            a = acc[l]
            act = c.values > 0
            a["sum"].index_add_(0, c.indices.reshape(-1), c.values.reshape(-1).double())
            a["cnt"].index_add_(0, c.indices[act], torch.ones(int(act.sum()), dtype=torch.float64))
            a["n"] += c.indices.shape[0]
            if with_pre:
                a["pre"] += b.pre[l]
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
    return top_contexts_by_layer(model, tokenizer, {layer: sae}, texts, {layer: features}, n, window, **kw)[layer]


def top_contexts_by_layer(model, tokenizer, saes: Mapping[int, TopKSAE], texts: list[str],
                          features: Mapping[int, Iterable[int]], n: int = 8, window: int = 12,
                          **kw) -> dict[int, dict[int, list[dict]]]:
    """:func:`top_contexts` for several layers in one forward pass per batch: layer -> feature -> rows.

    saes: layer -> TopKSAE (or a loader view) for the layers of ``features`` (layer -> feature ids)."""
    trackers = {int(l): TopContexts(f, n) for l, f in features.items()}
    for b in iter_codes(model, tokenizer, subset(saes, list(trackers)), texts, **kw):
        for l, tc in trackers.items():
            tc.update(b.codes[l], b.rows, b.positions, b.start)
    enc_cache: dict[int, list[int]] = {}
    return {l: {f: _context_rows(tokenizer, texts, lst, window, kw.get("max_length", 128), enc_cache)
                for f, lst in tc.best.items()} for l, tc in trackers.items()}


def _context_rows(tokenizer, texts, best, window: int, max_length: int, enc_cache: dict) -> list[dict]:
    rows = []
    for act, ti, pos in best:
        if ti not in enc_cache:
            enc_cache[ti] = tokenizer(texts[ti], truncation=True, max_length=max_length)["input_ids"]
        ids = enc_cache[ti]
        left = tokenizer.decode(ids[max(0, pos - window):pos])
        tok = tokenizer.decode(ids[pos:pos + 1])
        rows.append({"activation": act, "text_index": ti, "position": pos, "token": tok,
                     "context": f"{left}[[{tok}]]"})
    return rows
