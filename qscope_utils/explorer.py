"""The explorer's logic (notebook 08_explore): Analyze, Compare, Steer and a feature card.

Plain functions over a backbone, its tokenizer and one layer's SAE, returning DataFrames; the
notebook only wires them to ipywidgets. Conventions are the package's (docs/CONVENTIONS.md §2): the code of
a token is ``TopK(ReLU(x @ W_enc.T + b_enc))`` of the raw residual after block ``layer``;
statistics exclude position 0 (the attention sink); steering adds ``alpha * W_dec[:, f]`` at
every prompt position and every generated token (:func:`qscope_utils.steering.steer`).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import pandas as pd
import torch

from .features import mean_activations, top_contexts
from .generation import generate
from .hooks import capture_residuals
from .sae import TopKSAE
from .steering import feature_vector, steer

__all__ = ["Analysis", "FeatureCard", "analyze", "compare", "steer_side_by_side", "logit_lens", "feature_card"]


class Analysis(NamedTuple):
    """One prompt through one SAE layer.

    tokens: the prompt's tokens (decoded one by one); heat: features (rows, the ``n_features``
    with the largest activation on any token after position 0) x token positions (columns
    ``"i:token"``); per_token: for each position, its ``top_per_token`` features (position,
    token, rank, feature, activation)."""

    tokens: list[str]
    heat: pd.DataFrame
    per_token: pd.DataFrame


class FeatureCard(NamedTuple):
    """contexts: top-activating corpus contexts (activation, text_index, position, token, context);
    logits_up / logits_down: the tokens whose unembedding aligns most / least with W_dec[:, f]."""

    feature: int
    layer: int
    contexts: pd.DataFrame
    logits_up: pd.DataFrame
    logits_down: pd.DataFrame


@torch.no_grad()
def _codes(model, tokenizer, sae: TopKSAE, layer: int, prompt: str, max_length: int = 128):
    enc = tokenizer(prompt, return_tensors="pt", truncation=True, max_length=max_length)
    h = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [layer])[layer][0]
    ids = enc["input_ids"][0].tolist()
    return [tokenizer.decode([i]) for i in ids], sae.encode(h.float()).cpu()       # (T, d_sae)


def analyze(model, tokenizer, sae: TopKSAE, layer: int, prompt: str, n_features: int = 20, top_per_token: int = 3,
            exclude_first: bool = True, max_length: int = 128) -> Analysis:
    """Feature x token activations of ``prompt`` and the top features of each token."""
    tokens, z = _codes(model, tokenizer, sae, layer, prompt, max_length)
    start = 1 if exclude_first and len(tokens) > 1 else 0
    peak = z[start:].max(0).values
    n = min(n_features, int((peak > 0).sum()))
    feats = peak.topk(n).indices.tolist() if n else []
    cols = [f"{i}:{t}" for i, t in enumerate(tokens)]
    heat = pd.DataFrame(z[:, feats].T.numpy(), index=pd.Index(feats, name="feature"), columns=cols)
    rows = []
    for pos in range(start, len(tokens)):
        v, i = z[pos].topk(min(top_per_token, z.shape[1]))
        rows += [{"position": pos, "token": tokens[pos], "rank": r + 1, "feature": int(f), "activation": float(a)}
                 for r, (a, f) in enumerate(zip(v.tolist(), i.tolist())) if a > 0]
    return Analysis(tokens, heat, pd.DataFrame(rows, columns=["position", "token", "rank", "feature", "activation"]))


def compare(model, tokenizer, sae: TopKSAE, layer: int, positive: Sequence[str], negative: Sequence[str],
            top: int = 20, max_length: int = 128, batch_size: int = 16) -> pd.DataFrame:
    """Features ranked by mean activation per token on ``positive`` minus on ``negative`` (first token
    of every text excluded): rank, feature, diff, mean_pos, mean_neg, rate_pos, rate_neg."""
    if not positive or not negative:
        raise ValueError("compare needs at least one positive and one negative prompt")
    kw = dict(max_length=max_length, batch_size=batch_size, exclude_first=True, progress=False)
    p = mean_activations(model, tokenizer, {layer: sae}, list(positive), **kw)[layer]
    n = mean_activations(model, tokenizer, {layer: sae}, list(negative), **kw)[layer]
    diff = p["mean"] - n["mean"]
    idx = diff.topk(min(top, diff.numel())).indices
    return pd.DataFrame({"rank": range(1, len(idx) + 1), "feature": idx.tolist(), "diff": diff[idx].tolist(),
                         "mean_pos": p["mean"][idx].tolist(), "mean_neg": n["mean"][idx].tolist(),
                         "rate_pos": p["rate"][idx].tolist(), "rate_neg": n["rate"][idx].tolist()})


def steer_side_by_side(model, tokenizer, sae: TopKSAE, layer: int, prompts: Sequence[str], features: Sequence[int],
                       alphas: float | Sequence[float], max_new_tokens: int = 32, do_sample: bool = False,
                       temperature: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Unsteered and steered continuations of each prompt (same seed): prompt, unsteered, steered.

    Steering adds sum_i alpha_i W_dec[:, f_i] after block ``layer`` at every prompt position and at
    every generated token (KV cache on)."""
    kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, seed=seed)
    base = generate(model, tokenizer, list(prompts), **kw)
    vec = feature_vector(sae, [int(f) for f in features], alphas)
    with steer(model, {layer: vec}):
        steered = generate(model, tokenizer, list(prompts), **kw)
    return pd.DataFrame({"prompt": list(prompts), "unsteered": base, "steered": steered})


@torch.no_grad()
def logit_lens(model, tokenizer, sae: TopKSAE, feature: int, n: int = 10) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tokens promoted / suppressed by the feature's decoder direction: W_U @ W_dec[:, f] (no final
    norm, raw column), top and bottom ``n``: token, token_id, logit."""
    d = sae.direction(int(feature)).float()
    W_U = model.get_output_embeddings().weight.float()                              # (vocab, d_model)
    if W_U.shape[1] != d.shape[0]:
        raise ValueError(f"decoder width {d.shape[0]} != model hidden size {W_U.shape[1]}: pair the SAE with its backbone")
    logits = (W_U @ d.to(W_U.device)).cpu()

    def table(vals, ids):
        return pd.DataFrame({"token": [tokenizer.decode([i]) for i in ids.tolist()], "token_id": ids.tolist(),
                             "logit": vals.tolist()})

    up, down = logits.topk(n), (-logits).topk(n)
    return table(up.values, up.indices), table(-down.values, down.indices)


def feature_card(model, tokenizer, sae: TopKSAE, layer: int, feature: int, texts: Sequence[str], n: int = 8,
                 n_logits: int = 10, max_length: int = 128) -> FeatureCard:
    """Top-activating contexts of ``feature`` over ``texts`` and its decoder-direction logit lens."""
    sae.direction(int(feature))                                                     # range check
    ctx = top_contexts(model, tokenizer, sae, layer, list(texts), [int(feature)], n=n, max_length=max_length,
                       progress=False)[int(feature)]
    up, down = logit_lens(model, tokenizer, sae, feature, n_logits)
    cols = ["activation", "text_index", "position", "token", "context"]
    return FeatureCard(int(feature), layer, pd.DataFrame(ctx, columns=cols), up, down)
