"""Reconstruction quality of an SAE on a backbone's residual stream (notebook 01).

All statistics are streamed over batches of tokens (memory flat in corpus size):

* FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 (fraction of variance unexplained);
  explained variance = 1 - FVU.
* L0 = mean number of latents > 0 per token (<= k).
* dead fraction = share of latents that never fired on the evaluated tokens;
  dense fraction = share firing on more than ``dense_threshold`` of tokens.
* cosine = mean cosine similarity between x and x_hat.
* delta LM loss = CE with the layer's output replaced by x_hat minus the clean CE (nats/token).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .batching import DEFAULT_CHUNK_TOKENS, sequence_nll
from .hooks import capture_residuals, decoder_layers, hidden_of, position_mask, with_hidden
from .sae import TopKSAE

__all__ = ["ReconStats", "ReconResult", "splice_sae", "lm_loss", "evaluate_layer", "evaluate_group",
           "DEC_NORM_QUANTILES"]


@dataclass
class ReconResult:
    layer: int
    n_tokens: int
    fvu: float
    explained_variance: float
    l0: float
    dead_fraction: float
    dense_fraction: float
    cosine: float
    ce_clean: float | None = None
    ce_spliced: float | None = None
    delta_loss: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class ReconStats:
    """Streaming accumulator of reconstruction statistics for one SAE (float64 sums)."""

    def __init__(self, d_sae: int, d_model: int, dense_threshold: float = 0.1):
        self.n = 0
        self.sum_x = torch.zeros(d_model, dtype=torch.float64)
        self.sum_x2 = torch.zeros((), dtype=torch.float64)
        self.sum_err2 = torch.zeros((), dtype=torch.float64)
        self.sum_cos = torch.zeros((), dtype=torch.float64)
        self.sum_l0 = torch.zeros((), dtype=torch.float64)
        self.fire_counts = torch.zeros(d_sae, dtype=torch.float64)
        self.dense_threshold = dense_threshold

    @torch.no_grad()
    def update(self, sae: TopKSAE, x: torch.Tensor) -> None:
        """x: (N, d_model) valid tokens only."""
        x = x.float().reshape(-1, sae.d_model)
        codes = sae.encode_sparse(x)
        x_hat = sae.decode_sparse(codes)
        act = codes.active()
        self.n += x.shape[0]
        xd = x.double().cpu()
        self.sum_x += xd.sum(0)
        self.sum_x2 += (xd ** 2).sum()
        self.sum_err2 += ((x - x_hat).double() ** 2).sum().cpu()
        self.sum_cos += F.cosine_similarity(x, x_hat, dim=-1).double().sum().cpu()
        self.sum_l0 += act.sum().double().cpu()
        self.fire_counts.index_add_(0, codes.indices[act].cpu(), torch.ones(int(act.sum()), dtype=torch.float64))

    def result(self, layer: int) -> ReconResult:
        if self.n == 0:
            raise ValueError("no tokens were evaluated")
        total_var = self.sum_x2 - (self.sum_x ** 2).sum() / self.n
        fvu = float(self.sum_err2 / total_var)
        rate = self.fire_counts / self.n
        return ReconResult(layer=layer, n_tokens=self.n, fvu=fvu, explained_variance=1 - fvu,
                           l0=float(self.sum_l0 / self.n), dead_fraction=float((rate == 0).double().mean()),
                           dense_fraction=float((rate > self.dense_threshold).double().mean()),
                           cosine=float(self.sum_cos / self.n))


@contextmanager
def splice_sae(model: nn.Module, layer: int, sae: TopKSAE, mask: torch.Tensor | None = None):
    """Replace the output of decoder layer ``layer`` by its SAE reconstruction.

    mask: optional (B, T) bool; only those positions are replaced (others pass through), so the
    attention-sink token can be left untouched, as when the SAEs were trained.
    """
    block = decoder_layers(model)[layer]

    def hook(_m, _i, out):
        h = hidden_of(out)
        h_hat = sae(h.float()).to(h.dtype)
        if mask is not None:
            h_hat = torch.where(mask[..., None].to(h.device), h_hat, h)
        return with_hidden(out, h_hat)

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def lm_loss(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            loss_mask: torch.Tensor | None = None, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> tuple[float, int]:
    """(sum of next-token CE in nats, number of predicted tokens) over positions where both the
    input and the target are real tokens (and ``loss_mask`` at the target, if given). The LM head runs on
    chunks of ``chunk_tokens`` positions (:func:`qscope_utils.batching.sequence_nll`): no
    (rows x length x vocab) logits."""
    return sequence_nll(model, input_ids, attention_mask, loss_mask, chunk_tokens)


@torch.no_grad()
def evaluate_layer(model: nn.Module, sae: TopKSAE, batches, layer: int, exclude_first: bool = True,
                   norm_ratio: float | None = None, with_loss: bool = True) -> ReconResult:
    """Reconstruction metrics of ``sae`` at ``layer`` over ``batches`` of tokenizer encodings
    (dicts with input_ids, attention_mask). Position 0 is excluded from statistics (and from
    the splice) by default; with_loss adds clean vs spliced CE and their difference."""
    if sae.d_model != model.config.hidden_size:
        raise ValueError(f"SAE d_model={sae.d_model} but the model's hidden size is {model.config.hidden_size}")
    stats = ReconStats(sae.d_sae, sae.d_model)
    ce0 = ce1 = 0.0
    ntok = 0
    for enc in batches:
        ids, am = enc["input_ids"], enc["attention_mask"]
        h = capture_residuals(model, ids, am, [layer])[layer]
        m = position_mask(am, exclude_first=exclude_first, hidden=h, norm_ratio=norm_ratio).to(h.device)
        stats.update(sae, h[m])
        if with_loss:
            c0, n = lm_loss(model, ids, am)
            with splice_sae(model, layer, sae, mask=m):
                c1, _ = lm_loss(model, ids, am)
            ce0, ce1, ntok = ce0 + c0, ce1 + c1, ntok + n
    res = stats.result(layer)
    if with_loss and ntok:
        res.ce_clean, res.ce_spliced = ce0 / ntok, ce1 / ntok
        res.delta_loss = res.ce_spliced - res.ce_clean
    return res


DEC_NORM_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def evaluate_group(scope, texts: list[str], layers: list[int] | None = None, batch_size: int = 16,
                   max_length: int = 128, with_loss: bool = True, exclude_first: bool = True,
                   norm_ratio: float | None = None):
    """Per-layer reconstruction table (pandas DataFrame, one row per layer) for a :class:`~qscope_utils.scope.Scope`.

    Columns: the :class:`ReconResult` fields plus ``load_seconds`` (wall time to read the layer
    file), ``dec_norm_mean`` / ``dec_norm_std`` and ``dec_norm_q05 … q95`` (L2 norms of the decoder
    columns, computed on the SAE's device and moved to the CPU), and ``norm_ratio`` (tokens whose
    residual norm exceeds norm_ratio x the batch median were excluded; NaN: none excluded).
    Each layer file is read exactly once; memory holds at most the loader's cache.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .hooks import iter_batches

    layers = scope.layers() if layers is None else list(layers)
    batches = [enc for _, enc in iter_batches(scope.tokenizer, texts, batch_size=batch_size, max_length=max_length)]
    rows = []
    for l in tqdm(layers, desc="layers"):
        sae = scope.saes[l]
        res = evaluate_layer(scope.model, sae, batches, l, exclude_first=exclude_first, norm_ratio=norm_ratio,
                             with_loss=with_loss).as_dict()
        norms = sae.W_dec.detach().norm(dim=0).float()
        qs = torch.quantile(norms, torch.tensor(DEC_NORM_QUANTILES, device=norms.device)).cpu()
        res.update(load_seconds=scope.saes.load_seconds.get(l, float("nan")),
                   dec_norm_mean=float(norms.mean()), dec_norm_std=float(norms.std()),
                   **{f"dec_norm_q{int(round(q * 100)):02d}": float(v) for q, v in zip(DEC_NORM_QUANTILES, qs)},
                   norm_ratio=float("nan") if norm_ratio is None else float(norm_ratio))
        rows.append(res)
        del sae, norms                 # only the loader's cache may keep the layer alive
    return pd.DataFrame(rows)
