"""SASFT: SAE-guided supervised fine-tuning against unexpected code-switching (docs/CONVENTIONS.md §7, arXiv:2507.14894).

Pieces, in the order the notebook uses them:

1. Language features. Per-language mean activation (and mean PRE-activation) of every SAE feature
   from :func:`qscope_utils.features.mean_activations` (position 0 excluded);
   monolinguality ``nu_s(L) = mean_s(L) - mean_{L' != L} mean_s(L')`` (:func:`monolinguality`);
   the top-k features per unwanted language L at the chosen layers (default: the last two) and
   ``alpha_j(s)`` = mean pre-activation of s on language j (:func:`select_language_features`).
2. The regulariser (:class:`SASFTPenalty`): forward hooks on the decoder layers compute the selected
   features' PRE-activations ``f_s(x) = x . W_enc[s] + b_enc[s]`` (no ReLU, no top-k) from the LIVE
   residual of the training forward pass, through the FROZEN encoder (its parameters have
   ``requires_grad=False``: the gradient reaches the residual, hence the model, never the SAE).
   The official formula (``train.py`` of arXiv:2507.14894, :func:`official_layer_penalty`): per hooked
   layer ``sum ReLU((f_s(x) - alpha_j(s)) * lang_mask)`` over the response (label) tokens x selected
   features, divided by (response tokens x features + 1); the per-layer terms are SUMMED over layers.
   j = the example's response language; a feature of language L applies only to examples whose
   response is not in L ("x from non-L data").
3. Training: TRL's ``SFTTrainer`` with this penalty added in ``compute_loss``
   (:class:`qscope_utils.sasft_trainer.SASFTTrainer`); ``lambda = 0`` is the plain-SFT control.
4. Evaluation: sampled responses (several seeds per prompt, :func:`respond`), the code-switch flags
   of :mod:`qscope_utils.codeswitch`, held-out perplexity per language (:func:`perplexity_by_lang`).

The mini setup (``SASFTConfig.for_profile('mini')``): the assistant must answer in English; user
prompts are snippets in other languages of the mini corpus; a share of the answers to zh / ru / ja
prompts carry an injected snippet in the prompt's language (noisy SFT data, ``contamination``). The
base model continues in the prompt's language (heavy code-switching); plain SFT teaches it to answer
in English; SASFT adds the penalty on zh / ru / ja features (ja stands in for the paper's ko, absent
from the corpus).
"""
from __future__ import annotations

import json
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import codeswitch as cs
from .batching import DEFAULT_CHUNK_TOKENS, sequence_nll
from .features import mean_activations
from .generation import generate
from .hooks import decoder_layers, hidden_of, iter_batches, pad_ids
from .recon import lm_loss
from .sae import TopKSAE
from .stats import one_se_pick, se_from_interval

__all__ = ["SASFTConfig", "SFTExample", "PAPER_GROUPS", "PAPER_TABLE4", "CHAT_USER", "CHAT_END",
           "default_layers", "language_stats", "monolinguality", "select_language_features", "SASFTPenalty",
           "official_layer_penalty", "format_prompt", "clip_tokens", "encode_examples", "respond", "perplexity_by_lang",
           "response_ce", "mini_texts_by_lang", "make_mini_sft", "make_mini_eval_prompts", "load_sft_jsonl",
           "load_texts_jsonl", "eval_frame", "prompt_windows", "evaluate_model", "target_rows", "doc_groups",
           "ratio_table", "LAMBDA_RULE", "lambda_scores", "pick_lambda",
           "table4"]

CHAT_USER = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
CHAT_END = "<|im_end|>"

# Paper profile groups (docs/CONVENTIONS.md §2): the report's Table 4 models.
PAPER_GROUPS = {
    "Qwen3-1.7B-Base": ("Qwen/Qwen3-1.7B-Base", "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"),
    "Qwen3-8B-Base": ("Qwen/Qwen3-8B-Base", "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50"),
}
# The report's Table 4 (code-switch ratio, SFT -> SASFT; 210k SFT examples). docs/CONVENTIONS.md §7.
PAPER_TABLE4 = {
    ("Qwen3-1.7B-Base", "zh"): (0.81, 0.22), ("Qwen3-1.7B-Base", "ru"): (0.19, 0.03),
    ("Qwen3-1.7B-Base", "ko"): (0.36, 0.00),
    ("Qwen3-8B-Base", "zh"): (0.96, 0.66), ("Qwen3-8B-Base", "ru"): (0.16, 0.07), ("Qwen3-8B-Base", "ko"): (0.43, 0.07),
}


# ============================================================================ config
@dataclass
class SASFTConfig:
    """Sizes and settings of §7 for one profile.

    response_lang: the language the assistant must answer in (alpha_j is estimated on it).
    targets: unwanted languages (penalised features; code-switch measured by their script).
    stat_langs: languages whose mean activations define nu (>= 2).
    sft_prompt_langs: languages of the user prompts in the SFT data (mini; paper reads files).
    eval_prompt_langs: per target, the languages of the evaluation prompts (default: the target).
    layers: SAE layers (None = the last two of the model). top_k: features per language and layer.
    lambdas: the sweep; 0 (plain SFT) is always run; every lambda > 0 is one run PER TARGET language
    (its own features), as the official code. The penalty is the official formula (per layer: sum over
    response tokens x features / (tokens x features + 1), summed over layers), so lambda means what the
    paper's 5e-4..1e-3 means; the mini model's activation scale differs, hence the sweep.
    """

    response_lang: str = "en"
    targets: tuple[str, ...] = ("zh", "ru", "ja")
    stat_langs: tuple[str, ...] = ("en", "zh", "ru", "fr", "de", "es", "it", "ja")
    sft_prompt_langs: tuple[str, ...] = ("fr", "de", "es", "it", "zh", "ru", "ja")
    eval_prompt_langs: dict = field(default_factory=dict)
    layers: tuple[int, ...] | None = None
    top_k: int = 2
    stat_docs_per_lang: int = 64
    stat_max_length: int = 128
    n_train: int = 1024
    prompt_tokens: int = 24
    response_tokens: int = 32
    steps: int | None = 150                  # optimizer steps (None: one epoch, as the official runs)
    batch_size: int = 8                      # per-device micro-batch
    effective_batch: int = 8                 # examples per optimizer step (official 32, by accumulation)
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.0
    scheduler: str = "linear"                # official: cosine
    max_length: int = 2048                   # tokens: prompt + response cut to this (official 2,048); one
                                             # micro-batch is batch_size x max_length tokens at most
    gpu_memory_gb: float | None = None       # check the run fits a GPU of this size first (None: the CUDA device's)
    grad_clip: float = 1.0
    lambdas: tuple[float, ...] = (0.0, 1.0, 10.0)
    eval_prompts_per_lang: int = 240         # split by document: validation (picks lambda) / test (reported)
    val_every: int = 3                       # every val_every-th document is val (2: halves), the others test
    prompt_windows: int = 8                  # mini: prompts cut from one held-out document (consecutive windows of
                                             # prompt_tokens tokens): more prompts from a pool of few, long documents
    n_seeds: int = 12                        # samples per prompt (mini design: docs/06_sasft.md, "Minimum detectable effect")
    max_new_tokens: int = 24
    temperature: float = 1.0
    gen_batch_size: int = 256                # rows per generate call (mini: 256 decodes ~30% faster than 64 on 2 cores)
    ppl_docs_per_lang: int = 32
    ppl_max_length: int = 128
    n_boot: int = 2000
    min_chars: int = 1                       # characters of the unwanted script that make a switch
    contamination: float = 0.6               # mini: share of target-language-prompt examples with a snippet
    snippet_tokens: tuple[int, int] = (3, 8)  # mini: snippet length range (tokens)
    seed: int = 0
    paper_model: str = "Qwen3-1.7B-Base"     # which Table 4 column to print beside ours
    sft_file: str | None = None              # paper: JSONL {prompt, response, response_lang}
    eval_file: str | None = None             # paper: JSONL {prompt, lang}
    stats_file: str | None = None            # paper: JSONL {text, lang} for nu / alpha / perplexity

    @classmethod
    def for_profile(cls, name: str, **overrides) -> "SASFTConfig":
        if name == "mini":
            cfg = cls()
        elif name == "smoke":
            cfg = cls(stat_docs_per_lang=8, stat_max_length=32, n_train=32, prompt_tokens=8, response_tokens=8,
                      steps=6, batch_size=4, effective_batch=4, warmup=2, lambdas=(0.0, 1.0), eval_prompts_per_lang=4,
                      val_every=2, prompt_windows=2, n_seeds=2, max_new_tokens=6, ppl_docs_per_lang=4, ppl_max_length=32, n_boot=200)
        elif name == "paper":
            # Official: last two layers, top-2 per language, lambda 5e-4..1e-3 (sum over features).
            # Official schedule (train.py): batch 1 x accumulation 32, lr 5e-5 (1.7B) / 5e-6 (8B), wd 0.1, cosine,
            # warm-up 100, 2,048 tokens, one epoch.
            lr = 5e-6 if "8B" in overrides.get("paper_model", "Qwen3-1.7B-Base") else 5e-5
            cfg = cls(targets=("zh", "ru", "ko"), stat_langs=("en", "zh", "ru", "ko", "fr", "de", "es", "ja"),
                      stat_docs_per_lang=2000, stat_max_length=512, n_train=0, steps=None, batch_size=1,
                      effective_batch=32, lr=lr, weight_decay=0.1, scheduler="cosine", max_length=2048,
                      warmup=100, lambdas=(0.0, 5e-4, 1e-3), eval_prompts_per_lang=200, val_every=2, n_seeds=4,
                      max_new_tokens=512, temperature=0.7, gen_batch_size=32, ppl_docs_per_lang=200,
                      ppl_max_length=512)   # sft_file / eval_file / stats_file: required (not public)
        else:
            raise ValueError(f"unknown profile {name!r}: choose mini, smoke or paper")
        return replace(cfg, **overrides) if overrides else cfg

    def eval_langs_for(self, target: str) -> tuple[str, ...]:
        return tuple(self.eval_prompt_langs.get(target, (target,)))


def default_layers(n_layers: int, layers: Sequence[int] | None = None) -> list[int]:
    """The chosen layers, by default the last two (the official SASFT setting)."""
    if layers is None:
        return list(range(max(0, n_layers - 2), n_layers))
    bad = [l for l in layers if not 0 <= l < n_layers]
    if bad:
        raise IndexError(f"layers {bad} out of range 0..{n_layers - 1}")
    return list(layers)


# ============================================================================ language features
def language_stats(model, tokenizer, saes: Mapping[int, TopKSAE], texts_by_lang: Mapping[str, list[str]],
                   batch_size: int = 16, max_length: int = 128, progress: bool = True,
                   norm_ratio: float | None = None) -> dict[str, dict[int, dict]]:
    """lang -> layer -> {'mean', 'mean_pre', 'rate': (d_sae,), 'n_tokens'} via features.mean_activations.

    ``norm_ratio``: tokens whose residual norm exceeds this multiple of the batch median are left out
    (massive-norm exclusion, docs/CONVENTIONS.md §2; None keeps them), besides position 0."""
    out = {}
    for lang, texts in texts_by_lang.items():
        if not texts:
            raise ValueError(f"no texts for language {lang!r}: language statistics need some")
        out[lang] = mean_activations(model, tokenizer, saes, list(texts), with_pre=True, batch_size=batch_size,
                                     max_length=max_length, progress=progress, desc=f"stats {lang}",
                                     norm_ratio=norm_ratio)
    return out


def monolinguality(means: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """nu_s(L) = mean_s(L) - (1/(n-1)) sum_{L' != L} mean_s(L') for every language L.

    means: lang -> (d_sae,) mean activation. Returns lang -> (d_sae,) nu (same units as the codes).
    """
    langs = list(means)
    if len(langs) < 2:
        raise ValueError(f"monolinguality needs at least two languages, got {langs}")
    M = torch.stack([means[l].double() for l in langs])          # (n_lang, d_sae)
    others = (M.sum(0, keepdim=True) - M) / (len(langs) - 1)
    nu = M - others
    return {l: nu[i].float() for i, l in enumerate(langs)}


def select_language_features(stats: Mapping[str, Mapping[int, dict]], targets: Sequence[str], layers: Sequence[int],
                             top_k: int = 2, alpha_langs: Sequence[str] | None = None) -> pd.DataFrame:
    """The top-``top_k`` features by nu per (target language, layer), with alpha_j per language j.

    Returns one row per selected feature: target, layer, feature, nu, mean_target (mean activation
    on the target), rate_target, and ``alpha_<j>`` = mean PRE-activation on language j for every j
    in ``alpha_langs`` (default: all languages in ``stats``).
    """
    langs = list(stats)
    miss = [t for t in targets if t not in stats]
    if miss:
        raise KeyError(f"targets {miss} have no statistics; stat languages are {langs}")
    alpha_langs = list(alpha_langs or langs)
    rows = []
    for l in layers:
        nu = monolinguality({g: stats[g][l]["mean"] for g in langs})
        for t in targets:
            vals, idx = nu[t].topk(top_k)
            for v, i in zip(vals.tolist(), idx.tolist()):
                row = {"target": t, "layer": int(l), "feature": int(i), "nu": float(v),
                       "mean_target": float(stats[t][l]["mean"][i]), "rate_target": float(stats[t][l]["rate"][i])}
                for j in alpha_langs:
                    row[f"alpha_{j}"] = float(stats[j][l]["mean_pre"][i])
                rows.append(row)
    return pd.DataFrame(rows)


class SASFTPenalty:
    """The SASFT regulariser over a set of (layer, feature) pairs, computed inside the training pass.

    table: rows with ``layer``, ``feature``, ``target`` and ``alpha_<j>`` columns (from
    :func:`select_language_features`). Features are concatenated over layers in table order, M in all.
    Use ``with penalty.attach(model): out = model(...); p = penalty.loss(mask, langs)``.
    """

    def __init__(self, saes: Mapping[int, TopKSAE], table: pd.DataFrame):
        need = {"layer", "feature", "target"}
        if not need <= set(table.columns):
            raise KeyError(f"feature table needs columns {sorted(need)}, has {list(table.columns)}")
        if table.empty:
            raise ValueError("feature table is empty: select some language features first")
        self.table = table.reset_index(drop=True)
        self.layers = sorted(int(l) for l in self.table.layer.unique())
        self.saes = {}
        for l in self.layers:
            sae = saes[l]
            sae.requires_grad_(False)          # frozen: gradients stop at the residual
            self.saes[l] = sae
        self.idx = {l: torch.tensor(self.table.feature[self.table.layer == l].tolist(), dtype=torch.long)
                    for l in self.layers}
        order = [i for l in self.layers for i in self.table.index[self.table.layer == l]]
        self.targets = [self.table.target[i] for i in order]        # (M,) target language per column
        self.alpha = {c[len("alpha_"):]: torch.tensor([float(self.table[c][i]) for i in order])
                      for c in self.table.columns if c.startswith("alpha_")}
        self._pre: dict[int, torch.Tensor] = {}
        self._paused = False

    @property
    def n_features(self) -> int:
        return len(self.targets)

    def _hook(self, layer: int):
        sae, idx = self.saes[layer], self.idx[layer].to(self.saes[layer].W_enc.device)

        def hook(_m, _i, out):
            if self._paused:
                return
            h = hidden_of(out)
            W, b = sae.W_enc[idx].to(h.device), sae.b_enc[idx].to(h.device)   # (m, d_model), (m,) - no grad
            with torch.autocast(device_type=h.device.type, enabled=False):     # encode in float32 (SPEC §2)
                self._pre[layer] = F.linear(h.float(), W.float(), b.float())   # (B, T, m), grad -> h
        return hook

    @contextmanager
    def attach(self, model: nn.Module):
        """Register the pre-activation hooks on ``model``'s decoder layers (removed on exit)."""
        blocks = decoder_layers(model)
        if max(self.layers) >= len(blocks):
            raise IndexError(f"penalty layers {self.layers} but the model has {len(blocks)} decoder layers")
        handles = [blocks[l].register_forward_hook(self._hook(l)) for l in self.layers]
        try:
            yield self
        finally:
            for h in handles:
                h.remove()
            self._pre.clear()

    def pre_acts(self) -> torch.Tensor:
        """(B, T, M) pre-activations of the selected features from the last forward pass."""
        if set(self._pre) != set(self.layers):
            raise RuntimeError("no pre-activations captured: call the model inside `with penalty.attach(model):`")
        return torch.cat([self._pre[l] for l in self.layers], dim=-1)

    def alphas_for(self, response_langs: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M) alpha_j per example and (B, M) bool applicability (feature's target != response lang)."""
        miss = sorted(set(response_langs) - set(self.alpha))
        if miss:
            raise KeyError(f"no alpha for response language(s) {miss}: estimate language statistics on them "
                           f"(alpha languages: {sorted(self.alpha)})")
        a = torch.stack([self.alpha[j] for j in response_langs])
        app = torch.tensor([[t != j for t in self.targets] for j in response_langs], dtype=torch.bool)
        return a, app

    def layer_terms(self, response_mask: torch.Tensor, response_langs: Sequence[str]) -> dict[int, torch.Tensor]:
        """layer -> the official per-layer term :func:`official_layer_penalty` from the last forward pass."""
        if set(self._pre) != set(self.layers):
            raise RuntimeError("no pre-activations captured: call the model inside `with penalty.attach(model):`")
        a, app = self.alphas_for(response_langs)
        out, start = {}, 0
        for l in self.layers:
            m = len(self.idx[l])
            pre = self._pre[l]
            out[l] = official_layer_penalty(pre, a[:, start:start + m].to(pre.device), app[:, start:start + m].to(pre.device),
                                            response_mask.to(pre.device))
            start += m
        self._pre.clear()
        return out

    def loss(self, response_mask: torch.Tensor, response_langs: Sequence[str]) -> torch.Tensor:
        """The SASFT penalty of the official code: the per-layer terms SUMMED over the hooked layers."""
        return torch.stack(list(self.layer_terms(response_mask, response_langs).values())).sum()


def official_layer_penalty(pre: torch.Tensor, alpha: torch.Tensor, apply: torch.Tensor,
                           response_mask: torch.Tensor) -> torch.Tensor:
    """One hooked layer's SASFT term, exactly as the official ``train.py`` (arXiv:2507.14894) computes it.

    pre: (B, T, m) pre-activations of the layer's m selected features; alpha: (B, m) alpha_j(s) for each
    example's response language j; apply: (B, m) bool, False where the feature's target language is
    the example's own language (the official ``lang_mask``); response_mask: (B, T) bool, the response
    (label) tokens. Returns ``sum ReLU((pre - alpha) * apply) * mask / (n_response_tokens * m + 1)``:
    the denominator counts every response token of the batch times m, plus one (official), whether or
    not ``apply`` masks the example.
    """
    if pre.ndim != 3 or alpha.shape != (pre.shape[0], pre.shape[2]) or apply.shape != alpha.shape \
            or response_mask.shape != pre.shape[:2]:
        raise ValueError(f"shapes: pre {tuple(pre.shape)} (B,T,m), alpha {tuple(alpha.shape)} (B,m), "
                         f"apply {tuple(apply.shape)} (B,m), response_mask {tuple(response_mask.shape)} (B,T)")
    excess = F.relu((pre - alpha[:, None, :]) * apply[:, None, :].to(pre.dtype))
    mask = response_mask.to(pre.dtype)[:, :, None]
    count = response_mask.sum() * pre.shape[2] + 1
    return (excess * mask).sum() / count


# ============================================================================ data
@dataclass(frozen=True)
class SFTExample:
    """One SFT pair. ``contaminated``: the response has an injected snippet in another language."""

    prompt: str
    response: str
    prompt_lang: str
    response_lang: str
    contaminated: bool = False


def format_prompt(prompt: str) -> str:
    """The chat-style prompt the assistant answers (Qwen's im_start/im_end markup)."""
    return CHAT_USER.format(prompt=prompt)


def clip_tokens(tokenizer, text: str, n: int) -> str:
    """The first ``n`` tokens of ``text`` as a string (broken trailing bytes dropped)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n]
    return tokenizer.decode(ids, skip_special_tokens=True).replace("\ufffd", "").strip()


def encode_examples(tokenizer, examples: Sequence[SFTExample]) -> dict:
    """Right-padded batch of (B, T) tensors: input_ids, attention_mask, labels (-100 off the response),
    response_mask (the response tokens) and predict_mask (the positions whose NEXT token is a response
    token: the last prompt position, where the answer's language is decided, up to the token before
    <|im_end|>). The SASFT penalty is taken over predict_mask: the residuals that generate the response.

    A sequence is ``tok(format_prompt(p))`` (with the tokenizer's own bos, if any) followed by
    ``tok(response + <|im_end|>, add_special_tokens=False)``; only the latter is trained on.
    """
    seqs, n_prompt = [], []
    for ex in examples:
        p = tokenizer(format_prompt(ex.prompt))["input_ids"]
        r = tokenizer(ex.response + CHAT_END, add_special_tokens=False)["input_ids"]
        seqs.append(p + r)
        n_prompt.append(len(p))
    T = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids, am = pad_ids(seqs, pad)
    rm = torch.zeros((len(seqs), T), dtype=torch.bool)
    for i, (s, n) in enumerate(zip(seqs, n_prompt)):
        rm[i, n:len(s)] = True
    labels = ids.masked_fill(~rm, -100)
    pm = torch.zeros_like(rm)
    pm[:, :-1] = rm[:, 1:]
    return {"input_ids": ids, "attention_mask": am, "labels": labels, "response_mask": rm, "predict_mask": pm}


# ============================================================================ evaluation
def _stop_ids(tokenizer) -> list[int]:
    ids = [tokenizer.convert_tokens_to_ids(CHAT_END)]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return [i for i in ids if i is not None and i != tokenizer.unk_token_id]


@torch.no_grad()
def respond(model: nn.Module, tokenizer, prompts: Sequence[str], seeds: Sequence[int], max_new_tokens: int = 32,
            temperature: float = 1.0, batch_size: int = 64) -> list[list[str]]:
    """Sampled assistant responses, (n_prompts) lists of (n_seeds) strings, cut at <|im_end|> / eos.

    One :func:`qscope_utils.generation.generate` call per seed over all prompts (seeded per call).
    """
    stops = _stop_ids(tokenizer)
    chat = [format_prompt(p) for p in prompts]
    gc = model.generation_config
    old = gc.eos_token_id
    gc.eos_token_id = stops
    out = [[None] * len(seeds) for _ in prompts]
    try:
        for si, s in enumerate(seeds):
            _, ids = generate(model, tokenizer, chat, max_new_tokens=max_new_tokens, do_sample=True,
                              temperature=temperature, seed=int(s), batch_size=batch_size, return_ids=True)
            for pi, row in enumerate(ids):
                row = row.tolist()
                cut = next((k for k, t in enumerate(row) if t in stops), len(row))
                out[pi][si] = tokenizer.decode(row[:cut], skip_special_tokens=True)
    finally:
        gc.eos_token_id = old
    return out


@torch.no_grad()
def perplexity_by_lang(model: nn.Module, tokenizer, texts_by_lang: Mapping[str, list[str]], batch_size: int = 16,
                       max_length: int = 128) -> dict[str, float]:
    """lang -> held-out perplexity exp(mean next-token CE in nats) over all tokens of its texts.
    ``batch_size`` texts of at most ``max_length`` tokens per pass, chunked LM head (:func:`~qscope_utils.recon.lm_loss`)."""
    out = {}
    for lang, texts in texts_by_lang.items():
        nll, n = 0.0, 0
        for _, enc in iter_batches(tokenizer, list(texts), batch_size=batch_size, max_length=max_length):
            s, c = lm_loss(model, enc["input_ids"], enc["attention_mask"])
            nll, n = nll + s, n + c
        out[lang] = math.exp(nll / max(n, 1))
    return out


@torch.no_grad()
def response_ce(model: nn.Module, tokenizer, examples: Sequence[SFTExample], batch_size: int = 16,
                chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> float:
    """Mean response-token CE (nats) of held-out SFT examples: what the task itself costs or gains.
    ``batch_size`` examples per forward pass; the LM head runs only at response positions, on chunks of
    ``chunk_tokens`` positions (:func:`qscope_utils.batching.sequence_nll`)."""
    tot, n = 0.0, 0
    for i in range(0, len(examples), batch_size):
        enc = encode_examples(tokenizer, examples[i:i + batch_size])
        s, c = sequence_nll(model, enc["input_ids"], enc["attention_mask"], enc["response_mask"], chunk_tokens)
        tot, n = tot + s, n + c
    return tot / max(n, 1)


# ============================================================================ data sources
def mini_texts_by_lang(profile, langs: Sequence[str], split: str, n: int, seed: int = 0) -> dict[str, list[str]]:
    """Up to ``n`` corpus documents per language from one split, shuffled with a fixed seed."""
    from .mini.corpus import load_corpus

    out = {}
    for lang in langs:
        docs = [d.text for d in load_corpus(profile, split=split, lang=lang)]
        if not docs:
            raise ValueError(f"the {getattr(profile, 'name', profile)} corpus has no {split} documents in {lang!r}")
        random.Random(f"{seed}:{lang}:{split}").shuffle(docs)
        out[lang] = docs[:n]
    return out


def _splice(tokenizer, response: str, snippet: str, rng: random.Random, n_tokens: int) -> str:
    """``response`` with ``snippet`` inserted after 1..4 of its tokens, cut to ``n_tokens`` tokens in all."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    k = rng.randint(1, 4)
    head = tokenizer.decode(ids[:k], skip_special_tokens=True).replace("\ufffd", "")
    tail = tokenizer.decode(ids[k:], skip_special_tokens=True).replace("\ufffd", "")
    return clip_tokens(tokenizer, f"{head} {snippet} {tail}", n_tokens)


def make_mini_sft(profile, tokenizer, cfg: SASFTConfig, split: str = "train", n: int | None = None) -> list[SFTExample]:
    """SFT pairs: a user prompt (first ``prompt_tokens`` tokens of a document in one of
    ``sft_prompt_langs``, languages cycled) and a response in ``response_lang`` (first
    ``response_tokens`` tokens of an unrelated document: the task is 'answer in that language').

    Noisy data (``cfg.contamination``): when the prompt is in an unwanted language (a target), the
    response gets, with that probability, a snippet of ``snippet_tokens`` tokens of another document
    in the prompt's language spliced in after its first 1-4 tokens, like multilingual SFT data whose
    answers sometimes echo the user's language. The example keeps ``response_lang`` (it is labelled
    English data: exactly where SASFT applies its penalty) and is marked ``contaminated``.
    """
    n = cfg.n_train if n is None else n
    k = n // len(cfg.sft_prompt_langs) + 1
    prompts = mini_texts_by_lang(profile, cfg.sft_prompt_langs, split, 2 * k, cfg.seed)
    resp = mini_texts_by_lang(profile, [cfg.response_lang], split, 10 ** 9, cfg.seed + 1)[cfg.response_lang]
    rng = random.Random(f"contamination:{cfg.seed}:{split}")
    out = []
    for i in range(n):
        lang = cfg.sft_prompt_langs[i % len(cfg.sft_prompt_langs)]
        pool = prompts[lang]
        j = i // len(cfg.sft_prompt_langs)
        p = clip_tokens(tokenizer, pool[j % len(pool)], cfg.prompt_tokens)
        r = clip_tokens(tokenizer, resp[i % len(resp)], cfg.response_tokens)
        dirty = lang in cfg.targets and rng.random() < cfg.contamination
        if dirty:
            lo, hi = cfg.snippet_tokens
            snip = clip_tokens(tokenizer, pool[(j + k) % len(pool)], rng.randint(lo, hi))
            r = _splice(tokenizer, r, snip, rng, cfg.response_tokens)
        if p and r:
            out.append(SFTExample(p, r, lang, cfg.response_lang, dirty))
    return out


def eval_frame(prompts_by_lang: Mapping[str, Sequence], n: int, val_every: int = 2) -> pd.DataFrame:
    """Evaluation prompts: columns lang, prompt, doc, part ('val' | 'test'), at most ``n`` per language.

    ``prompts_by_lang``: lang -> documents, each a prompt string or a list of prompts cut from one
    document. Parts are given by DOCUMENT within a language (all prompts of a document share a part):
    every ``val_every``-th document is val (2: alternating halves; 3: a third val, two thirds test), so
    the val part that picks lambda shares no document with the test part that is reported."""
    if val_every < 2:
        raise ValueError(f"val_every must be >= 2 (one val document in val_every), got {val_every}")
    rows = []
    for lang, docs in prompts_by_lang.items():
        kept, part = [], {}
        for d, doc in enumerate(docs):
            ps = [p for p in ([doc] if isinstance(doc, str) else doc) if p]
            if ps and len(kept) < n:
                part[d] = "val" if len(part) % val_every == 0 else "test"
                kept += [(d, p) for p in ps[:n - len(kept)]]
        if len(part) < 2:
            raise ValueError(f"only {len(part)} usable evaluation documents in {lang!r}: need at least 2 (val + test)")
        rows += [{"lang": lang, "prompt": p, "doc": d, "part": part[d]} for d, p in kept]
    return pd.DataFrame(rows)


def prompt_windows(tokenizer, text: str, n_tokens: int, k: int) -> list[str]:
    """Up to ``k`` consecutive non-overlapping windows of ``n_tokens`` tokens of ``text`` (the first one
    always, as :func:`clip_tokens`; later ones only when they are full length)."""
    if k < 1:
        raise ValueError(f"prompt_windows needs k >= 1 windows per document, got {k}")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = []
    for i in range(k):
        w = ids[i * n_tokens:(i + 1) * n_tokens]
        if i and len(w) < n_tokens:
            break
        out.append(tokenizer.decode(w, skip_special_tokens=True).replace("\ufffd", "").strip())
    return out


def make_mini_eval_prompts(profile, tokenizer, cfg: SASFTConfig) -> pd.DataFrame:
    """Held-out corpus prompts in each evaluation language (:func:`eval_frame`): one window of
    ``prompt_tokens`` tokens per document, more (up to ``cfg.prompt_windows``, :func:`prompt_windows`)
    only where the language has fewer documents than ``eval_prompts_per_lang`` (mini ja: 34 documents)."""
    langs = sorted({l for t in cfg.targets for l in cfg.eval_langs_for(t)})
    n = cfg.eval_prompts_per_lang
    texts = mini_texts_by_lang(profile, langs, "heldout", 4 * n, cfg.seed + 2)
    k = {l: min(cfg.prompt_windows, -(-n // len(texts[l]))) for l in langs}
    return eval_frame({l: [prompt_windows(tokenizer, t, cfg.prompt_tokens, k[l]) for t in texts[l]] for l in langs}, n,
                      cfg.val_every)


def load_sft_jsonl(path: str | Path | None, n: int | None = None) -> list[SFTExample]:
    """Paper profile: SFT examples from JSONL {prompt, response, response_lang[, prompt_lang]}
    (the :mod:`qscope_utils.sources.sasft_files` adapter: a local path or ``org/name:file.jsonl``)."""
    from .sources.sasft_files import SFT

    rows = SFT.read_rows(path)[:n]
    return [SFTExample(r["prompt"], r["response"], r.get("prompt_lang", r["response_lang"]), r["response_lang"])
            for r in rows]


def load_texts_jsonl(path: str | Path | None, langs: Sequence[str] | None = None, n: int | None = None,
                     kind: str = "stats") -> dict[str, list[str]]:
    """Paper profile: lang -> texts from JSONL {text, lang} (``kind`` 'stats': statistics / perplexity
    texts, ``stats_file``; 'eval': evaluation prompts, ``eval_file``)."""
    from .sources.sasft_files import EVAL, STATS

    out: dict[str, list[str]] = {}
    for r in {"stats": STATS, "eval": EVAL}[kind].read_rows(path):
        if langs is None or r["lang"] in langs:
            lst = out.setdefault(r["lang"], [])
            if n is None or len(lst) < n:
                lst.append(r["text"])
    return out


# ============================================================================ evaluation of one model
def evaluate_model(model: nn.Module, tokenizer, prompts: pd.DataFrame, cfg: SASFTConfig,
                   ppl_texts: Mapping[str, list[str]] | None = None,
                   heldout: Sequence[SFTExample] | None = None, targets: Sequence[str] | None = None) -> dict:
    """Sample ``cfg.n_seeds`` responses per prompt (seeds cfg.seed ..), flag code-switches per target,
    and measure held-out perplexity per language and held-out response CE.

    ``targets`` (default: all of ``cfg.targets``): only the prompts of these targets are sampled (a
    SASFT run for one target is scored on that target only); other prompts get ``None`` responses.
    Returns {'responses': (P) lists of (S) str | None, 'flags': target -> (P, S) bool over ALL prompts
    (read only at that target's rows, :func:`target_rows`), 'ppl': lang -> float, 'response_ce': float | None}.
    """
    targets = list(cfg.targets if targets is None else targets)
    seeds = list(range(cfg.seed, cfg.seed + cfg.n_seeds))
    rows = np.flatnonzero(np.logical_or.reduce([target_rows(prompts, cfg, t) for t in targets]))
    got = respond(model, tokenizer, prompts.prompt.iloc[rows].tolist(), seeds, cfg.max_new_tokens, cfg.temperature,
                  cfg.gen_batch_size)
    R: list = [None] * len(prompts)
    for i, r in zip(rows, got):
        R[i] = r
    flags = {t: np.array([[r is not None and cs.code_switched(r, t, cfg.min_chars) for r in (row or [None] * len(seeds))]
                          for row in R], dtype=bool) for t in targets}
    ppl = perplexity_by_lang(model, tokenizer, ppl_texts, max_length=cfg.ppl_max_length) if ppl_texts else {}
    ce = response_ce(model, tokenizer, heldout) if heldout else None
    return {"responses": R, "flags": flags, "ppl": ppl, "response_ce": ce}


def target_rows(prompts: pd.DataFrame, cfg: SASFTConfig, target: str, part: str | None = None) -> np.ndarray:
    """(P,) bool: the prompts on which code-switching into ``target`` is measured (its eval languages)."""
    m = prompts.lang.isin(cfg.eval_langs_for(target)).to_numpy().copy()
    if part is not None:
        m &= (prompts.part == part).to_numpy()
    return m


def doc_groups(prompts: pd.DataFrame, rows: np.ndarray) -> np.ndarray | None:
    """(n,) document label of the selected prompts, for the cluster bootstrap (None without a ``doc`` column)."""
    if "doc" not in prompts:
        return None
    return (prompts.lang.astype(str) + ":" + prompts.doc.astype(str)).to_numpy()[rows]


def ratio_table(evals: Mapping[str, dict], prompts: pd.DataFrame, cfg: SASFTConfig, part: str | None) -> pd.DataFrame:
    """One row per (model, evaluated target): code-switch ratio with its two-stage bootstrap interval."""
    rows = []
    for name, ev in evals.items():
        for t in (t for t in cfg.targets if t in ev["flags"]):     # a SASFT run is scored on its own target
            rows_t = target_rows(prompts, cfg, t, part)
            r = cs.bootstrap_ratio(ev["flags"][t][rows_t], cfg.n_boot, cfg.seed, groups=doc_groups(prompts, rows_t))
            rows.append({"model": name, "target": t, "part": part or "all", "ratio": r.value, "lo": r.lo, "hi": r.hi,
                         "n_prompts": r.n_prompts, "n_seeds": r.n_seeds})
    return pd.DataFrame(rows)


LAMBDA_RULE = ("one-SE rule (qscope_utils.stats.one_se_pick): the smallest lambda > 0 whose validation code-switch "
               "ratio is within one bootstrap SE of the lowest one")


def lambda_scores(val: pd.DataFrame, lambdas: Sequence[float], names: Mapping[float, str]) -> pd.DataFrame:
    """Per lambda > 0 (ascending): mean validation ratio over the rows of ``val`` of its run (``names``) and
    its SE from the rows' 95% bootstrap interval (root mean square over targets, as for a mean of them)."""
    cand = sorted(l for l in lambdas if l > 0)
    if not cand:
        raise ValueError("the sweep has no lambda > 0: add one to compare SASFT with plain SFT")
    rows = []
    for l in cand:
        sub = val[val.model == names[l]]
        if sub.empty:
            raise KeyError(f"no validation rows for lambda {l:g} (run {names[l]!r}): evaluate it on val first")
        se = [se_from_interval(lo, hi) for lo, hi in zip(sub.lo, sub.hi)]
        rows.append({"lambda": l, "ratio": float(sub.ratio.mean()),
                     "se": float(np.sqrt(np.mean(np.square(se))) / np.sqrt(len(se)))})
    return pd.DataFrame(rows)


def pick_lambda(val: pd.DataFrame, lambdas: Sequence[float], names: Mapping[float, str]) -> float:
    """The lambda > 0 chosen on validation by the one-SE rule (:data:`LAMBDA_RULE`): the argmin would
    flip between near-tied lambdas with noise in the 5th digit; this moves only when a larger lambda is
    better by more than its own SE."""
    sc = lambda_scores(val, lambdas, names)
    pick, _ = one_se_pick(list(sc["lambda"]), list(sc.ratio), list(sc.se), maximize=False)
    return float(pick)


# ============================================================================ table
def table4(ours: Mapping[str, Mapping[str, "object"]], paper_model: str = "Qwen3-1.7B-Base",
           paper_target: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Table 4's shape: one row per unwanted language, ours (base, SFT, SASFT with intervals) beside the
    report's SFT -> SASFT for both Qwen3 models.

    ours: target -> {'base': RatioCI, 'sft': RatioCI, 'sasft': RatioCI, 'diff': RatioCI (SFT - SASFT)}.
    paper_target: our target -> the paper's language in the same row (mini: ja -> ko).
    """
    paper_target = dict(paper_target or {})
    rows = []
    for t, r in ours.items():
        pt = paper_target.get(t, t)
        row = {"target": t, "base": str(r["base"]), "SFT": str(r["sft"]), "SASFT": str(r["sasft"]),
               "SFT - SASFT": str(r["diff"]), "paper_lang": pt}
        for m in PAPER_GROUPS:
            if (m, pt) in PAPER_TABLE4:
                a, b = PAPER_TABLE4[(m, pt)]
                row[f"paper {m} SFT->SASFT"] = f"{a:.2f} -> {b:.2f}"
        rows.append(row)
    return pd.DataFrame(rows)
