"""§5 SAE-feature toxicity classification: discovery, OR-rule classifier, layer choice, transfer, baselines.

Definitions (docs/CONVENTIONS.md §5, normative):

* firing ``h_{i,f} = 1[max_t a_{i,t,f} > eps]`` (eps = 0) over the kept tokens of text i
  (position 0 excluded, as everywhere in this package);
* score ``Delta_f = P(h_f = 1 | toxic) - P(h_f = 1 | clean)`` on the discovery split;
* top-K features per layer (K in {1, 2, 5, 10}; ties broken by the lower feature id);
* OR rule: predict toxic iff any selected feature fires anywhere in the text (no trained head);
* top1-diff layer choice ``d(l) = max_f Delta_f(l)``, ``l* = argmax_l d(l)``; multi-layer: the best
  single feature of each of the top-m layers by d(l), OR-ed;
* picks made on noisy scores use the one-standard-error rule (:func:`qscope_utils.stats.one_se_pick`):
  the reported K is the smallest K whose held-out F1 is within one SE of the best (:func:`pick_k`);
  for the layer, the earliest layer whose d(l) is within one SE of the largest is recorded beside
  the top1-diff layer, with the top1-diff margin in SEs (:func:`layer_selection`);
* cross-lingual transfer: features discovered on one language, applied to another's evaluation set;
  Jaccard of top-10 sets between languages per layer; data efficiency: the whole pipeline re-run on
  balanced nested subsets (10/25/50/100 %) of the discovery split, F1 on the fixed evaluation split.

Discovery is streamed (:class:`FiringCounts`): chunks of texts go through the shared
:func:`qscope_utils.features.text_max_activations` and only per-class firing counts (d_sae,) per layer
and per discovery subset are kept, so memory does not grow with the discovery size. Evaluation
splits are fixed-size (paper: 1,000 texts) and kept as CSR max-activation matrices.

Baselines that DO train a head, to put the OR rule in context (scikit-learn logistic regression,
same splits): on the max-pooled SAE codes of a layer, on mean-pooled raw residuals of that layer,
and on text length alone (a confound check: on the mini corpus offensive and clean texts come from
different Debian packages).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from .features import firing_rates, subset, text_max_activations, top_contexts_by_layer
from .stats import bootstrap_stat, one_se_pick, se_from_interval
from .hooks import capture_residuals, iter_batches, position_mask

__all__ = ["ToxicityConfig", "PAPER_CLAIMS", "FiringCounts", "nested_subsets", "delta_scores", "top_features",
           "fired", "or_predict", "prf", "bootstrap_f1_ci", "evaluate_layers", "top1_diff", "layer_agreement",
           "multi_layer_eval", "pick_k", "K_RULE", "top1_diff_se", "layer_selection", "LAYER_RULE", "language_layer_selection", "jaccard", "jaccard_by_layer", "transfer_table", "data_efficiency_table",
           "LanguageResult", "stream_max_activations", "discover_from_chunks", "run_language", "run_languages",
           "mean_pooled_residuals", "logreg_eval", "baseline_table", "length_features"]

PAPER_CLAIMS = {
    "english_f1": "English held-out F1 > 0.90 on Qwen3-1.7B (W32K) and Qwen3-8B (W64K), middle-to-late layers",
    "transfer": "English features transfer well to ru/fr, poorly to ar/zh/am; 8B transfers better",
    "data_efficiency": "10% of discovery data (200 vs 2,000 per class) keeps about 99% of macro F1",
    "english_f1_threshold": 0.90,
    "data_efficiency_ratio_at_10pct": 0.99,
}


@dataclass
class ToxicityConfig:
    """Sizes and knobs of notebook 04.

    eps: firing threshold on the per-text max activation. ks: sizes K of the top-K sets.
    fractions / n_repeats: discovery fractions for the data-efficiency curve (balanced per class,
    nested within a repeat); fraction 1.0 is run once. n_disc / n_eval: texts per class (None = all
    available; paper 2000 / 500). m_values: top-m layers for multi-layer composition (capped at the
    number of layers). jaccard_k: size of the sets compared across languages (paper 10).
    layers: analysed layers (None = all). layers_per_pass: SAE layers held at once (one forward pass
    per group and text chunk; the loader's cache must hold as many, see :func:`run_languages`). baseline_layers: layers for the trained baselines (None = all analysed layers).
    chunk_texts: discovery texts per streaming chunk. logreg_Cs: inverse regularisation grid
    of the trained baselines (chosen by cross-validation on the discovery split). n_boot: bootstrap resamples for F1 intervals.
    """

    eps: float = 0.0
    ks: tuple[int, ...] = (1, 2, 5, 10)
    fractions: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0)
    n_repeats: int = 3
    n_disc: int | None = None
    n_eval: int | None = None
    m_values: tuple[int, ...] = (1, 2, 3, 4, 5)
    jaccard_k: int = 10
    layers: tuple[int, ...] | None = None
    layers_per_pass: int = 8
    baseline_layers: tuple[int, ...] | None = None
    max_length: int = 128
    batch_size: int = 16
    chunk_texts: int = 256
    norm_ratio: float | None = None
    logreg_Cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
    n_boot: int = 1000
    seed: int = 0
    dataset_id: str = "textdetox/multilingual_toxicity_dataset"
    langs: tuple[str, ...] | None = None

    @classmethod
    def for_profile(cls, name: str) -> "ToxicityConfig":
        """mini: labelled es/it documents, 400 discovery + up to 150 held-out per class; smoke: tiny; paper: SPEC §5."""
        if name == "smoke":
            return cls(n_disc=32, n_eval=10, n_repeats=1, fractions=(0.25, 0.5, 1.0), batch_size=32,
                       max_length=32, chunk_texts=64, n_boot=100, m_values=(1, 2), logreg_Cs=(0.1, 1.0, 10.0))
        if name == "mini":
            return cls(n_disc=400, n_eval=150, n_repeats=5, batch_size=32, max_length=128, chunk_texts=256,
                       logreg_Cs=(0.1, 1.0, 10.0))
        if name == "paper":
            return _paper_config()
        raise ValueError(f"unknown profile {name!r}: choose mini, smoke or paper")


def _paper_config() -> ToxicityConfig:
    """SPEC §5 sizes; baseline layers at 1/2 and 3/4 depth of the paper profile's SAE group; tokens with
    L2 norm > 10x the batch median (attention sinks, SPEC §2) are dropped besides position 0."""
    from .profiles import get_profile
    from .registry import get_group

    paper = get_profile("paper")
    n_layers = get_group(paper.sae_repo).n_layers
    return ToxicityConfig(n_disc=2000, n_eval=500, n_repeats=5, batch_size=32, max_length=256, chunk_texts=512,
                          layers_per_pass=4, m_values=(1, 2, 3, 5, 8), norm_ratio=paper.norm_ratio,
                          baseline_layers=(n_layers // 2, (3 * n_layers) // 4),
                          langs=("en", "ru", "uk", "de", "es", "am", "zh", "ar", "hi", "it", "fr", "tt", "ja"))


# ----------------------------------------------------------------------------- streaming discovery

def nested_subsets(labels: np.ndarray, fractions: Sequence[float], n_repeats: int, seed: int = 0
                   ) -> tuple[list[tuple[float, int]], np.ndarray]:
    """Balanced nested discovery subsets.

    labels: (n,) 0/1. Returns (keys, masks): keys[s] = (fraction, repeat), masks (S, n) bool.
    Per repeat, each class is permuted once and the first ``ceil(fraction * n_class)`` texts of the
    permutation are taken, so smaller fractions are subsets of larger ones. Fraction 1.0 appears once
    (repeat 0), always as subset 0.
    """
    labels = np.asarray(labels)
    fr = sorted({float(f) for f in fractions} | {1.0}, reverse=True)
    if any(not 0 < f <= 1 for f in fr):
        raise ValueError(f"fractions must lie in (0, 1], got {fractions}")
    keys, masks = [(1.0, 0)], [np.ones(len(labels), dtype=bool)]
    rng = np.random.default_rng(seed)
    for r in range(n_repeats):
        perms = {c: rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)}
        for f in fr[1:]:
            m = np.zeros(len(labels), dtype=bool)
            for idx in perms.values():
                m[idx[: max(1, math.ceil(f * len(idx)))]] = True
            keys.append((f, r))
            masks.append(m)
    return keys, np.stack(masks)


class FiringCounts:
    """Streaming per-class firing counts of one layer for several discovery subsets.

    masks: (S, n_texts) bool subset membership (subset 0 = all texts); labels: (n_texts,) 0/1.
    After all chunks: ``counts`` (S, 2, d_sae) int64 = number of texts of class c in subset s on
    which feature f fired, ``n`` (S, 2) = class sizes. Memory is O(S * d_sae), independent of n_texts.
    """

    def __init__(self, d_sae: int, labels: np.ndarray, masks: np.ndarray | None = None, eps: float = 0.0):
        self.labels = np.asarray(labels).astype(np.int64)
        self.masks = np.ones((1, len(self.labels)), dtype=bool) if masks is None else np.asarray(masks, dtype=bool)
        if self.masks.shape[1] != len(self.labels):
            raise ValueError(f"masks cover {self.masks.shape[1]} texts but labels {len(self.labels)}")
        self.eps, self.d_sae = eps, d_sae
        S = self.masks.shape[0]
        self.counts = np.zeros((S, 2, d_sae), dtype=np.int64)
        self.n = np.zeros((S, 2), dtype=np.int64)
        for c in (0, 1):
            self.n[:, c] = (self.masks & (self.labels == c)[None]).sum(1)
        self.seen = 0

    def update(self, start: int, max_acts: sp.spmatrix) -> None:
        """Add the texts ``start .. start + rows`` given their (rows, d_sae) max-activation CSR."""
        m = max_acts.shape[0]
        if start + m > len(self.labels):
            raise ValueError(f"chunk rows {start}..{start + m} exceed the {len(self.labels)} labelled texts")
        h = fired(max_acts, self.eps).astype(np.float64)                      # (m, d_sae)
        lab = self.labels[start:start + m]
        sel = self.masks[:, start:start + m]                                    # (S, m)
        W = np.stack([sel & (lab == 0)[None], sel & (lab == 1)[None]], 1)      # (S, 2, m)
        W = W.reshape(-1, m).astype(np.float64)
        add = np.asarray((h.T @ W.T)).T                                         # (S*2, d_sae)
        self.counts += np.rint(add).astype(np.int64).reshape(self.counts.shape)
        self.seen += m

    def rates(self, subset: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(P(fire | toxic), P(fire | clean)) per feature, each (d_sae,)."""
        n = np.maximum(self.n[subset], 1)
        return self.counts[subset, 1] / n[1], self.counts[subset, 0] / n[0]

    def delta(self, subset: int = 0) -> np.ndarray:
        """(d_sae,) Delta_f = P(fire | toxic) - P(fire | clean) on discovery subset ``subset``."""
        if self.n[subset].min() == 0:
            raise ValueError(f"subset {subset} lacks a class (sizes clean/toxic = {self.n[subset].tolist()})")
        pt, pc = self.rates(subset)
        return pt - pc


def delta_scores(max_acts: sp.spmatrix, labels: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """(d_sae,) Delta_f from a whole (n_texts, d_sae) max-activation matrix (non-streaming helper,
    via the shared :func:`qscope_utils.features.firing_rates`)."""
    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        raise ValueError("delta_scores needs both toxic (1) and clean (0) texts")
    M = sp.csr_matrix(max_acts)
    return firing_rates(M[labels], eps) - firing_rates(M[~labels], eps)


def top_features(delta: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` features with the largest Delta (descending; ties -> lower feature id)."""
    return np.argsort(-np.asarray(delta), kind="stable")[:k]


# ----------------------------------------------------------------------------- OR rule and metrics

def fired(max_acts: sp.spmatrix, eps: float = 0.0) -> sp.csr_matrix:
    """(n, d_sae) bool CSR: h = 1[max_t a > eps]."""
    return sp.csr_matrix(sp.csr_matrix(max_acts) > eps)


def or_predict(max_acts: sp.spmatrix, features: Iterable[int], eps: float = 0.0) -> np.ndarray:
    """(n,) bool: toxic iff any of ``features`` fires (max activation > eps) anywhere in the text."""
    feats = np.asarray(list(features), dtype=np.int64)
    if feats.size == 0:
        return np.zeros(max_acts.shape[0], dtype=bool)
    sub = sp.csr_matrix(max_acts)[:, feats]
    return np.asarray((sub > eps).sum(1)).ravel() > 0


def prf(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Precision, recall, F1 of the toxic class (1), with counts; 0 where undefined."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    tp, fp, fn = int((y & p).sum()), int((~y & p).sum()), int((y & ~p).sum())
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"precision": prec, "recall": rec, "f1": f1, "tp": tp, "fp": fp, "fn": fn,
            "accuracy": float((y == p).mean()) if len(y) else 0.0}


def bootstrap_f1_ci(y_true: np.ndarray, y_pred: np.ndarray, n_boot: int = 1000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of F1 over evaluation texts."""
    y, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    _, lo, hi = bootstrap_stat(lambda a, b: prf(a, b)["f1"], y, p, n_boot=n_boot, seed=seed, level=level)
    return lo, hi

def evaluate_layers(deltas: Mapping[int, np.ndarray], eval_acts: Mapping[int, sp.spmatrix], y_eval: np.ndarray,
                    ks: Sequence[int], eps: float = 0.0) -> pd.DataFrame:
    """OR-rule precision/recall/F1 for every layer and K: rows (layer, K, features, d_l, precision, ...).

    deltas: layer -> (d_sae,) discovery Delta; eval_acts: layer -> (n_eval, d_sae) max activations.
    """
    rows = []
    for l in sorted(deltas):
        order = top_features(deltas[l], max(ks))
        for k in ks:
            feats = order[:k]
            rows.append({"layer": l, "K": k, "features": feats.tolist(), "d_l": float(np.max(deltas[l])),
                         "delta_kth": float(deltas[l][feats[-1]]), **prf(y_eval, or_predict(eval_acts[l], feats, eps))})
    return pd.DataFrame(rows)


def top1_diff(deltas: Mapping[int, np.ndarray]) -> dict[int, float]:
    """layer -> d(l) = max_f Delta_f(l)."""
    return {l: float(np.max(d)) for l, d in deltas.items()}


def _argmax_layer(scores: Mapping[int, float]) -> int:
    """Layer with the largest score (ties -> the lower layer)."""
    return min(scores, key=lambda l: (-scores[l], l))


def layer_agreement(grid: pd.DataFrame) -> pd.DataFrame:
    """Per K: the top1-diff layer l* = argmax d(l), the best held-out layer, agreement, and the
    held-out F1 at each (``f1_regret`` = F1 lost by trusting top1-diff)."""
    rows = []
    for k, g in grid.groupby("K"):
        d = dict(zip(g.layer, g.d_l))
        f1 = dict(zip(g.layer, g.f1))
        ls, lb = _argmax_layer(d), _argmax_layer(f1)
        rows.append({"K": k, "layer_top1diff": ls, "layer_best_heldout": lb, "agree": ls == lb,
                     "f1_at_top1diff": f1[ls], "f1_best": f1[lb], "f1_regret": f1[lb] - f1[ls]})
    return pd.DataFrame(rows)


K_RULE = ("smallest K whose held-out F1 is within one standard error (from its 95% bootstrap interval over "
          "evaluation texts) of the best K's F1")
LAYER_RULE = ("top1-diff layer l* = argmax d(l) (the method under test, used); beside it the earliest layer whose "
              "d(l) is within one standard error of d(l*) (binomial SE of the top feature's Delta on the "
              "discovery split), not used")


def pick_k(by_k: Mapping[str, Mapping]) -> dict:
    """The reported K of one language by the one-SE rule (:data:`K_RULE`).

    by_k: ``{"K=1": {"f1": ..., "f1_ci95": [lo, hi]}, ...}`` (the summary's per-K rows). Returns
    ``{"pick": "K=2", "argmax": "K=10", "rule": K_RULE}``; the argmax (ties: smaller K) is recorded
    beside the pick, it flips between near-tied K with noise in the 5th digit, the pick does not.
    """
    if not by_k:
        raise ValueError("pick_k needs at least one K row")
    keys = sorted(by_k, key=lambda k: int(str(k).split("=")[-1]))
    f1 = [float(by_k[k]["f1"]) for k in keys]
    ses = [se_from_interval(*by_k[k]["f1_ci95"]) for k in keys]
    pick, best = one_se_pick(keys, f1, ses, maximize=True)
    return {"pick": pick, "argmax": best, "rule": K_RULE}


def top1_diff_se(delta: np.ndarray, p_toxic: np.ndarray, p_clean: np.ndarray, n_toxic: int, n_clean: int) -> float:
    """Binomial SE of d(l) = Delta of the layer's top feature (difference of two independent
    proportions over ``n_toxic`` / ``n_clean`` discovery texts)."""
    f = int(top_features(delta, 1)[0])
    pt, pc = float(p_toxic[f]), float(p_clean[f])
    return math.sqrt(pt * (1 - pt) / max(n_toxic, 1) + pc * (1 - pc) / max(n_clean, 1))


def layer_selection(d: Mapping[int, float], se: Mapping[int, float]) -> dict:
    """The top1-diff layer and, beside it, the one-SE layer (:data:`LAYER_RULE`).

    d / se: layer -> d(l) and its SE. Returns ``{"top1diff", "one_se", "runner_up", "margin_se", "rule"}``:
    ``margin_se`` = (d(l*) - d(runner-up)) / SE(l*), how far the argmax is from flipping (< 1: a
    different build may well pick the runner-up). One layer only: runner_up None, margin inf.
    """
    layers = sorted(d)
    ls = _argmax_layer(d)
    one_se, _ = one_se_pick(layers, [d[l] for l in layers], [se[l] for l in layers], maximize=True)
    rest = [l for l in layers if l != ls]
    ru = _argmax_layer({l: d[l] for l in rest}) if rest else None
    gap = math.inf if ru is None else d[ls] - d[ru]
    margin = gap / se[ls] if se[ls] > 0 and ru is not None else (0.0 if gap == 0 else math.inf)
    return {"top1diff": int(ls), "one_se": int(one_se), "runner_up": None if ru is None else int(ru),
            "margin_se": float(margin), "rule": LAYER_RULE}


def language_layer_selection(r: "LanguageResult") -> dict:
    """:func:`layer_selection` of one language's discovery result (full discovery split)."""
    n_clean, n_toxic = (int(x) for x in np.asarray(r.subset_n)[0])
    d = top1_diff(r.delta)
    se = {l: top1_diff_se(r.delta[l], r.p_toxic[l], r.p_clean[l], n_toxic, n_clean) for l in r.layers}
    return layer_selection(d, se)


def multi_layer_eval(deltas: Mapping[int, np.ndarray], eval_acts: Mapping[int, sp.spmatrix], y_eval: np.ndarray,
                     m_values: Sequence[int], eps: float = 0.0) -> pd.DataFrame:
    """OR over the best single feature of each of the top-m layers (ranked by d(l)), for each m."""
    d = top1_diff(deltas)
    ranked = sorted(d, key=lambda l: (-d[l], l))
    rows = []
    for m in sorted({min(m, len(ranked)) for m in m_values}):
        layers = ranked[:m]
        pred = np.zeros(len(y_eval), dtype=bool)
        feats = []
        for l in layers:
            f = int(top_features(deltas[l], 1)[0])
            feats.append((l, f))
            pred |= or_predict(eval_acts[l], [f], eps)
        rows.append({"m": m, "layers": layers, "features": feats, **prf(y_eval, pred)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- cross-lingual

def jaccard(a: Iterable[int], b: Iterable[int]) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    A, B = set(int(x) for x in a), set(int(x) for x in b)
    return len(A & B) / len(A | B) if A | B else 1.0


def jaccard_by_layer(deltas: Mapping[str, Mapping[int, np.ndarray]], k: int = 10) -> pd.DataFrame:
    """Long table (layer, lang_a, lang_b, jaccard) of top-k sets, every ordered pair (diagonal = 1)."""
    langs = sorted(deltas)
    layers = sorted(set.intersection(*(set(deltas[l]) for l in langs)))
    tops = {(g, l): top_features(deltas[g][l], k) for g in langs for l in layers}
    return pd.DataFrame([{"layer": l, "lang_a": a, "lang_b": b, "jaccard": jaccard(tops[a, l], tops[b, l])}
                         for l in layers for a in langs for b in langs])


def transfer_table(results: Mapping[str, "LanguageResult"], ks: Sequence[int], eps: float = 0.0) -> pd.DataFrame:
    """Source x target F1: top-K features discovered on the source's discovery split, at the
    SOURCE's top1-diff layer (nothing is chosen on the target), applied with the OR rule to the
    target's evaluation split. Rows: source, target, layer, K, precision, recall, f1, f1_in_target
    (the target's own features at the target's top1-diff layer, for reference)."""
    rows = []
    for src, tgt in itertools.product(sorted(results), sorted(results)):
        rs, rt = results[src], results[tgt]
        ls, lt = _argmax_layer(top1_diff(rs.delta)), _argmax_layer(top1_diff(rt.delta))
        for k in ks:
            own = prf(rt.y_eval, or_predict(rt.eval_acts[lt], top_features(rt.delta[lt], k), eps))["f1"]
            m = prf(rt.y_eval, or_predict(rt.eval_acts[ls], top_features(rs.delta[ls], k), eps))
            rows.append({"source": src, "target": tgt, "layer": ls, "K": k, **m, "f1_in_target": own})
    return pd.DataFrame(rows)


def data_efficiency_table(results: Mapping[str, "LanguageResult"], ks: Sequence[int], eps: float = 0.0
                          ) -> pd.DataFrame:
    """Per language, discovery subset (fraction, repeat) and K: held-out F1 of the pipeline re-run on
    that subset alone (layer by top1-diff on the subset, its top-K features). Rows: lang, fraction,
    repeat, n_per_class, layer, K, f1."""
    rows = []
    for lang, r in results.items():
        for s, (frac, rep) in enumerate(r.subset_keys):
            d = {l: float(r.subset_top1[l][s]) for l in r.layers}
            l = _argmax_layer(d)
            for k in ks:
                f1 = prf(r.y_eval, or_predict(r.eval_acts[l], r.subset_top[l][s, :k], eps))["f1"]
                rows.append({"lang": lang, "fraction": frac, "repeat": rep, "n_per_class": int(r.subset_n[s].min()),
                             "layer": l, "K": k, "f1": f1})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- model-driven pipeline

@dataclass
class LanguageResult:
    """Everything kept for one language (memory: O(n_layers * d_sae) + the evaluation CSRs).

    delta[l]: (d_sae,) full-discovery Delta; p_toxic / p_clean[l]: (d_sae,) firing rates.
    subset_keys: (fraction, repeat) per discovery subset; subset_n: (S, 2) class sizes;
    subset_top[l]: (S, max K) top features per subset; subset_top1[l]: (S,) d(l) per subset.
    eval_acts[l]: (n_eval, d_sae) CSR max activations; y_eval: (n_eval,) 0/1.
    disc_acts[l]: discovery max activations, kept only for the baseline layers.
    """

    lang: str
    layers: list[int]
    delta: dict[int, np.ndarray]
    p_toxic: dict[int, np.ndarray]
    p_clean: dict[int, np.ndarray]
    subset_keys: list[tuple[float, int]]
    subset_n: np.ndarray
    subset_top: dict[int, np.ndarray]
    subset_top1: dict[int, np.ndarray]
    eval_acts: dict[int, sp.csr_matrix] = field(default_factory=dict)
    y_eval: np.ndarray | None = None
    disc_acts: dict[int, sp.csr_matrix] = field(default_factory=dict)
    y_disc: np.ndarray | None = None
    contexts: dict[int, dict] = field(default_factory=dict)


def _groups(layers: Sequence[int], size: int) -> list[list[int]]:
    return [list(layers[i:i + size]) for i in range(0, len(layers), max(1, size))]


def stream_max_activations(model, tokenizer, saes, texts: list[str], layers: Sequence[int], chunk_texts: int = 256,
                           layers_per_pass: int = 8, desc: str = "texts", **kw
                           ) -> Iterator[tuple[list[int], int, dict[int, sp.csr_matrix]]]:
    """Yield (layer group, start, {layer: (rows, d_sae) CSR max activations}) chunk by chunk.

    saes: layer -> TopKSAE mapping or a lazy loader / loader view (``scope.saes``): each group of
    ``layers_per_pass`` layers is taken once (a loader view, so a loader's cache must hold that many)
    and serves every chunk (one forward pass per group and chunk). ``kw`` goes to
    :func:`qscope_utils.features.text_max_activations` (batch_size, max_length, norm_ratio, ...).
    """
    kw = {"progress": False, **kw}
    groups = _groups(list(layers), layers_per_pass)
    bar = tqdm(total=len(texts) * len(groups), desc=desc, leave=False)
    for grp in groups:
        sub = subset(saes, grp)
        for s in range(0, len(texts), chunk_texts):
            chunk = texts[s:s + chunk_texts]
            yield grp, s, text_max_activations(model, tokenizer, sub, chunk, **kw)
            bar.update(len(chunk))
    bar.close()


def discover_from_chunks(chunks: Iterable[tuple[list[int], int, Mapping[int, sp.spmatrix]]], labels: np.ndarray,
                         d_sae: int, layers: Sequence[int], fractions: Sequence[float] = (1.0,), n_repeats: int = 1,
                         max_k: int = 10, eps: float = 0.0, seed: int = 0, keep_layers: Sequence[int] = ()) -> dict:
    """Streamed discovery from (group, start, {layer: CSR}) chunks (any source: model or synthetic).

    Returns dict with delta / p_toxic / p_clean (layer -> (d_sae,)), subset_keys, subset_n (S, 2),
    subset_top (layer -> (S, max_k)), subset_top1 (layer -> (S,)), kept (layer -> CSR of the whole
    discovery split for ``keep_layers`` only). Counts of a layer are reduced and dropped as soon as
    its group is finished, so at most one group's FiringCounts exist at a time.
    """
    keys, masks = nested_subsets(labels, fractions, n_repeats, seed)
    out = {"delta": {}, "p_toxic": {}, "p_clean": {}, "subset_keys": keys, "subset_top": {}, "subset_top1": {},
           "kept": {}}
    counts: dict[int, FiringCounts] = {}
    kept: dict[int, list] = {}

    def finish(l):
        fc = counts.pop(l)
        if fc.seen != len(labels):
            raise ValueError(f"layer {l}: saw {fc.seen} discovery texts, expected {len(labels)}")
        out["delta"][l] = fc.delta(0).astype(np.float32)
        pt, pc = fc.rates(0)
        out["p_toxic"][l], out["p_clean"][l] = pt.astype(np.float32), pc.astype(np.float32)
        deltas = [fc.delta(s) for s in range(len(keys))]
        out["subset_top"][l] = np.stack([top_features(d, max_k) for d in deltas])
        out["subset_top1"][l] = np.array([d.max() for d in deltas])
        out["subset_n"] = fc.n.copy()
        if l in kept:
            out["kept"][l] = sp.vstack(kept.pop(l)).tocsr()

    for grp, start, acts in chunks:
        for l in grp:
            if l not in counts and l not in out["delta"]:
                for done in [x for x in counts if x not in grp]:
                    finish(done)
                counts[l] = FiringCounts(d_sae, labels, masks, eps)
            counts[l].update(start, acts[l])
            if l in keep_layers:
                kept.setdefault(l, []).append(sp.csr_matrix(acts[l]))
    for l in list(counts):
        finish(l)
    missing = [l for l in layers if l not in out["delta"]]
    if missing:
        raise ValueError(f"no activations streamed for layers {missing}")
    return out


def _encode_all(model, tokenizer, saes, texts, layers, cfg: ToxicityConfig, desc: str,
                layers_per_pass: int | None = None) -> dict[int, sp.csr_matrix]:
    parts: dict[int, list] = {l: [] for l in layers}
    for grp, _s, acts in stream_max_activations(model, tokenizer, saes, texts, layers, cfg.chunk_texts,
                                                layers_per_pass or cfg.layers_per_pass, desc=desc, **_enc_kw(cfg)):
        for l in grp:
            parts[l].append(acts[l])
    return {l: sp.vstack(p).tocsr() for l, p in parts.items()}


def _enc_kw(cfg: ToxicityConfig) -> dict:
    return {"batch_size": cfg.batch_size, "max_length": cfg.max_length, "norm_ratio": cfg.norm_ratio}


def run_language(scope, split, cfg: ToxicityConfig, layers: Sequence[int] | None = None) -> LanguageResult:
    """:func:`run_languages` for one language (no top contexts)."""
    return run_languages(scope, {split.lang: split}, cfg, layers, context_texts=0)[split.lang]


def run_languages(scope, splits: Mapping, cfg: ToxicityConfig, layers: Sequence[int] | None = None,
                  context_texts: int = 100, context_n: int = 5) -> dict[str, LanguageResult]:
    """Discovery (streamed) on each split's ``disc_texts`` and encoding of its ``eval_texts`` at ``layers``.

    scope: a :class:`qscope_utils.scope.Scope` (model, tokenizer, saes). splits: lang ->
    :class:`qscope_utils.toxicity_data.ToxicSplit`. Layers are the OUTER loop: each group of
    ``cfg.layers_per_pass`` layers is read once (``scope.saes`` must cache that many:
    ``open_scope(..., cache_size=cfg.layers_per_pass)``) and serves every language in turn, so a run
    reads each layer file once whatever the number of languages. Discovery max activations are kept
    only for ``cfg.baseline_layers`` (for the trained baselines). With ``context_texts`` > 0, each
    layer's top feature (largest Delta) gets its ``context_n`` top-activating tokens on the first
    ``context_texts`` evaluation texts (:func:`qscope_utils.features.top_contexts`, same pass).
    """
    layers = list(layers if layers is not None else (cfg.layers or scope.layers()))
    keep = [l for l in (cfg.baseline_layers if cfg.baseline_layers is not None else layers) if l in layers]
    model, tok, d_sae = scope.model, scope.tokenizer, scope.group.d_sae
    parts = {lang: {"disc": [], "eval": {}, "ctx": {}} for lang in splits}
    for grp in _groups(layers, cfg.layers_per_pass):
        saes = subset(scope.saes, grp)                     # a loader view: the group is read once
        for lang, split in splits.items():
            chunks = stream_max_activations(model, tok, saes, split.disc_texts, grp, cfg.chunk_texts, len(grp),
                                            desc=f"{lang} discovery", **_enc_kw(cfg))
            d = discover_from_chunks(chunks, split.disc_labels, d_sae, grp, cfg.fractions, cfg.n_repeats,
                                     max(max(cfg.ks), cfg.jaccard_k), cfg.eps, cfg.seed,
                                     keep_layers=[l for l in keep if l in grp])
            parts[lang]["disc"].append(d)
            parts[lang]["eval"].update(_encode_all(model, tok, saes, split.eval_texts, grp, cfg, f"{lang} eval",
                                                   len(grp)))
            if context_texts > 0:
                best = {l: int(top_features(d["delta"][l], 1)[0]) for l in grp}
                ctx = top_contexts_by_layer(model, tok, saes, split.eval_texts[:context_texts],
                                            {l: [f] for l, f in best.items()}, n=context_n,
                                            max_length=cfg.max_length, progress=False)
                parts[lang]["ctx"].update({l: {"feature": f, "contexts": ctx[l][f]} for l, f in best.items()})
        del saes
    return {lang: _language_result(split, layers, parts[lang]) for lang, split in splits.items()}


def _language_result(split, layers: list[int], part: dict) -> LanguageResult:
    """Merge the per-group discovery dicts of one language into its :class:`LanguageResult`."""
    d = {k: {l: v for g in part["disc"] for l, v in g[k].items()}
         for k in ("delta", "p_toxic", "p_clean", "subset_top", "subset_top1", "kept")}
    first = part["disc"][0]
    return LanguageResult(split.lang, layers, d["delta"], d["p_toxic"], d["p_clean"], first["subset_keys"],
                          first["subset_n"], d["subset_top"], d["subset_top1"],
                          {l: part["eval"][l] for l in layers}, split.eval_labels, d["kept"], split.disc_labels,
                          part["ctx"])


# ----------------------------------------------------------------------------- trained baselines

@torch.no_grad()
def mean_pooled_residuals(model, tokenizer, texts: list[str], layers: Sequence[int], batch_size: int = 16,
                          max_length: int = 128, exclude_first: bool = True, norm_ratio: float | None = None
                          ) -> dict[int, np.ndarray]:
    """layer -> (n_texts, d_model) float32 mean of the raw residual over each text's kept tokens
    (same token mask as the SAE statistics: padding and position 0 dropped)."""
    layers = list(layers)
    parts: dict[int, list] = {l: [] for l in layers}
    for _s, enc in tqdm(list(iter_batches(tokenizer, texts, batch_size, max_length)), desc="residuals", leave=False):
        hs = capture_residuals(model, enc["input_ids"], enc["attention_mask"], layers)
        ref = hs[layers[-1]]
        mask = position_mask(enc["attention_mask"], exclude_first, hidden=ref if norm_ratio else None,
                             norm_ratio=norm_ratio).to(ref.device)
        w = mask.float() / mask.float().sum(1, keepdim=True).clamp_min(1)
        for l in layers:
            parts[l].append(torch.einsum("bt,btd->bd", w, hs[l].float()).cpu().numpy())
    return {l: np.concatenate(p).astype(np.float32) for l, p in parts.items()}


def length_features(tokenizer, texts: list[str]) -> np.ndarray:
    """(n, 2) [log(1 + characters), log(1 + tokens)]: the text-length confound."""
    n_tok = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return np.log1p(np.array([[len(t), n] for t, n in zip(texts, n_tok)], dtype=np.float64))


def logreg_eval(X_train, y_train: np.ndarray, X_test, y_test: np.ndarray, Cs: Sequence[float] = (0.01, 0.1, 1, 10, 100),
                seed: int = 0, cv: int = 3) -> dict:
    """Fit scikit-learn logistic regression (L2; features scaled: MaxAbs for sparse, standard for dense;
    C chosen by ``cv``-fold cross-validated F1 on the discovery split only) and report
    precision/recall/F1 on the evaluation split, plus the chosen ``C``."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    y_train = np.asarray(y_train)
    folds = StratifiedKFold(n_splits=min(cv, int(np.bincount(y_train).min())), shuffle=True, random_state=seed)
    scaler = MaxAbsScaler() if sp.issparse(X_train) else StandardScaler()
    clf = make_pipeline(scaler, LogisticRegressionCV(Cs=list(Cs), cv=folds, scoring="f1", max_iter=2000,
                                                     l1_ratios=(0.0,), use_legacy_attributes=False,
                                                     random_state=seed))
    clf.fit(X_train, y_train)
    return {**prf(y_test, clf.predict(X_test)), "C": float(np.ravel(clf[-1].C_)[0])}


def baseline_table(scope, splits: Mapping, results: Mapping[str, LanguageResult], cfg: ToxicityConfig) -> pd.DataFrame:
    """Trained baselines per language: logistic regression on max-pooled SAE codes and on mean-pooled
    residuals (each baseline layer), and on text length; rows lang, method, layer, precision, recall, f1."""
    rows = []
    for lang, r in results.items():
        sp_ = splits[lang]
        layers = sorted(r.disc_acts)
        for l in layers:
            m = logreg_eval(r.disc_acts[l], r.y_disc, r.eval_acts[l], r.y_eval, cfg.logreg_Cs, cfg.seed)
            rows.append({"lang": lang, "method": "logreg: SAE codes (max-pooled)", "layer": l, **m})
        if layers:
            kw = {"batch_size": cfg.batch_size, "max_length": cfg.max_length, "norm_ratio": cfg.norm_ratio}
            Xd = mean_pooled_residuals(scope.model, scope.tokenizer, sp_.disc_texts, layers, **kw)
            Xe = mean_pooled_residuals(scope.model, scope.tokenizer, sp_.eval_texts, layers, **kw)
            for l in layers:
                m = logreg_eval(Xd[l], r.y_disc, Xe[l], r.y_eval, cfg.logreg_Cs, cfg.seed)
                rows.append({"lang": lang, "method": "logreg: residual (mean-pooled)", "layer": l, **m})
        m = logreg_eval(length_features(scope.tokenizer, sp_.disc_texts), r.y_disc,
                        length_features(scope.tokenizer, sp_.eval_texts), r.y_eval, cfg.logreg_Cs, cfg.seed)
        rows.append({"lang": lang, "method": "logreg: text length only", "layer": -1, **m})
    return pd.DataFrame(rows)
