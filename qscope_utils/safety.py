"""§6 feature-driven safety data: labelled safety data, target features, coverage, and a downstream classifier.

Definitions (docs/CONVENTIONS.md §6):

* Firing of feature f on text x: ``h_f(x) = 1[max_t a_{x,t,f} > eps]`` (position 0 excluded, eps = 0),
  from the shared :func:`qscope_utils.features.text_max_activations`; relevance uses this firing.
* Coverage firing (``SafetyConfig.fire_quantile`` q, default 0.9): text x covers f when its max activation
  exceeds eps_f, the q-quantile of f's nonzero per-text max activations over the discovery texts (a text
  that activates f as strongly as the top tenth of real texts that activate it at all). At eps = 0 the
  mini SAE's text-level firing is dense (every feature fires on >= 4% of the natural pool), so no target
  could be rare in the pool; None: coverage uses eps as well.
* Coverage of one feature by a data set D: ``c_f(D) = 1[some x in D fires f]`` (coverage firing).
* Targets T: safety-relevant features. The report judges relevance from feature explanations with a
  threshold tau; here relevance is a data-driven score computed from labelled unsafe vs safe texts
  (``"delta"``: P(fire | unsafe) - P(fire | safe), as in §5; or ``"logodds"``: smoothed log odds ratio of
  firing); the relevant features are R = {f : score_f >= tau and P(fire | unsafe) >= min_unsafe_rate}.
* Target set (``SafetyConfig.target_set``, fixed before any synthesis is run):
  ``"pool_rare"`` (default): T = {f in R : P(coverage-fire | natural pool) <= r_max}, the relevant features that
  natural sampling rarely reaches. r_max defaults to ``1 - 0.5 ** (1 / budget)``: a feature at that pool
  rate is hit by ``budget`` natural draws with probability exactly 1/2, so natural sampling at the
  matched budget is expected to miss each target at least half the time, and the claim "feature synthesis
  covers clearly more targets than natural sampling" can fail or succeed (it fails if synthesis cannot
  make the targets fire). ``"relevant"``: T = R (the earlier definition; the natural pool of the built
  profiles fires almost all of R, so natural sampling ties synthesis by construction).
* Cov(D) = |T ∩ covered(D)| / |T|;  T_miss = T \\ covered(seed set).
* Matched budget B = ``SafetyConfig.budget`` added examples per method, fixed by design (equal to the seed
  set's size on mini and paper, the report's "4k real + 4k synthesised"), never a data-dependent crossing
  point: a method that produced fewer than B examples is scored with all it produced.

Data: on the built profiles the corpus's ``offensive`` / ``clean`` labelled texts (es, it) play unsafe
vs safe; on the paper profile WildJailbreak (``allenai/wildjailbreak``) train (seed, discovery) and eval.

Downstream (Table 3 analogue): a logistic-regression safety classifier (scikit-learn) on SAE features or
character n-grams, trained on different training sets and evaluated on held-out labelled data.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from .stats import cluster_bootstrap

__all__ = ["UNSAFE", "SAFE", "LabelledText", "SafetyConfig", "SafetySplits",
           "mini_labelled", "labelled_from_dataset", "load_wildjailbreak", "make_splits", "max_act_encoder",
           "relevance_scores", "TargetFeatures", "select_targets", "fired", "feature_coverage", "coverage",
           "missing_targets", "coverage_curve", "top_texts", "featurize", "train_eval_classifier",
           "bootstrap_ci", "PAPER", "discover_targets", "feature_contexts", "downstream_arms",
           "downstream_table", "row_cache", "PAPER_ROW", "empty_miss_reason",
           "split_pools", "TARGET_SETS", "pool_rare_threshold", "pool_rates", "restrict_to_pool_rare",
           "paired_coverage", "firing_thresholds"]

UNSAFE, SAFE = "unsafe", "safe"
TARGET_SETS = ("pool_rare", "relevant")

PAPER = {  # docs/CONVENTIONS.md §6, the report's numbers
    "coverage_pct": 99.74,
    "table3": {"4k real + 4k feature synthesis": 77.75, "4k real + 4k random synthesis": 72.00,
               "120k real": 78.75, "8k real": 71.75},
    "feature_synth_asr": 24.0, "feature_synth_rr": 20.5,
}


# ============================================================================ labelled data

@dataclass(frozen=True)
class LabelledText:
    """One labelled example: ``label`` is ``"unsafe"`` or ``"safe"``; ``group`` a stratum (e.g. language)."""

    text: str
    label: str
    group: str = ""
    source: str = ""


def mini_labelled(profile, split: str, langs: Sequence[str] = ("es", "it")) -> list[LabelledText]:
    """The built corpus's labelled texts of ``split``: ``offensive`` -> unsafe, ``clean`` -> safe.

    group = language. (Debian's ROT13-encoded offensive fortunes are decoded by the corpus builder.)
    """
    from .mini.corpus import load_corpus

    out = []
    for lang in langs:
        for lab, name in (("offensive", UNSAFE), ("clean", SAFE)):
            for d in load_corpus(profile, split=split, lang=lang, label=lab):
                out.append(LabelledText(d.text, name, lang, d.source))
    if not out:
        raise ValueError(f"no labelled ('offensive'/'clean') texts for languages {list(langs)} in split {split!r}: "
                         f"the mini corpus labels only es and it; rebuild the corpus if they are missing")
    return out


def labelled_from_dataset(ds, text_column: str, label_column: str, unsafe_values: Iterable,
                          safe_values: Iterable | None = None, group_column: str | None = None) -> list[LabelledText]:
    """Labelled examples from a ``datasets.Dataset`` (or any mapping of column -> list).

    A row is unsafe if ``row[label_column]`` is in ``unsafe_values``, safe if in ``safe_values``
    (None = everything else), and skipped otherwise or when its text is empty.
    """
    cols = list(ds.column_names) if hasattr(ds, "column_names") else list(ds)
    for c in (text_column, label_column) + ((group_column,) if group_column else ()):
        if c not in cols:
            raise KeyError(f"dataset has no column {c!r}; columns: {cols}. Pass text_column/label_column explicitly")
    unsafe = set(unsafe_values)
    safe = None if safe_values is None else set(safe_values)
    texts, labels = ds[text_column], ds[label_column]
    groups = ds[group_column] if group_column else [""] * len(texts)
    out = []
    for t, lab, g in zip(texts, labels, groups):
        if not t or not str(t).strip():
            continue
        if lab in unsafe:
            out.append(LabelledText(str(t), UNSAFE, str(g)))
        elif safe is None or lab in safe:
            out.append(LabelledText(str(t), SAFE, str(g)))
    return out


def load_wildjailbreak(config: str = "train", split: str = "train", text_column: str = "adversarial",
                       fallback_text_column: str | None = "vanilla", label_column: str = "data_type",
                       unsafe_values: Iterable = ("vanilla_harmful", "adversarial_harmful", 1, "1"),
                       safe_values: Iterable | None = ("vanilla_benign", "adversarial_benign", 0, "0"),
                       dataset_id: str = "allenai/wildjailbreak", n: int | None = None,
                       seed: int = 0) -> list[LabelledText]:
    """WildJailbreak (gated: accept the AI2 terms on the hub first) as labelled safety data.

    Read through the :mod:`qscope_utils.sources.wildjailbreak` adapters (TSV, ``keep_default_na=False``,
    columns checked on load). train config: vanilla / adversarial / completion / data_type; adversarial
    is empty for vanilla rows, so ``fallback_text_column`` fills it. eval config: adversarial / label
    (1 harmful) / data_type. Column names are parameters; ``dataset_id`` other than the adapter's repo
    reads a copy with the same layout.
    """
    from dataclasses import replace as _replace

    from .sources.wildjailbreak import SOURCES as WJB

    src = next((s for s in WJB if config in s.configs), None)
    if src is None:
        raise ValueError(f"WildJailbreak has configs {[c for s in WJB for c in s.configs]}, not {config!r}")
    if dataset_id != src.repo_id:
        src = _replace(src, repo_id=dataset_id)
    ds = src.load(config, split)
    if fallback_text_column and fallback_text_column in ds.column_names and text_column in ds.column_names:
        ds = ds.map(lambda r: {text_column: r[text_column] or r[fallback_text_column]})
    if n is not None and n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    group = "data_type" if "data_type" in ds.column_names else None
    return labelled_from_dataset(ds, text_column, label_column, unsafe_values, safe_values, group_column=group)


# ============================================================================ configuration and splits

@dataclass
class SafetyConfig:
    """Sizes and parameters of notebook 05 (``for_profile`` gives mini / smoke / paper)."""

    layer: int = 3                          # SAE layer (paper: 30 of 36)
    score: str = "logodds"                  # relevance score: "delta" | "logodds"
    tau: float = 0.5                        # relevance threshold on the score
    min_unsafe_rate: float = 0.005          # a target must fire on at least this share of unsafe texts
    max_targets: int | None = None          # keep at most this many targets (strongest relevance first)
    target_set: str = "pool_rare"           # "pool_rare": relevant AND rare in the natural pool; "relevant": all relevant
    max_pool_rate: float | None = None      # pool_rare: max natural-pool firing rate (None: 1 - 0.5 ** (1 / budget))
    eps: float = 0.0                        # firing threshold on the per-text max activation (relevance)
    fire_quantile: float | None = 0.9       # coverage firing: per-feature threshold = this quantile of its nonzero
                                            # per-text max activations on discovery (None: eps)
    n_discovery_per_cell: int | None = 700  # discovery texts per (group, label) cell (None = balanced max)
    n_seed_per_cell: int = 10               # seed ("4k real") texts per (group, label) cell
    n_eval_per_cell: int | None = None      # held-out eval texts per (group, label) cell (None = balanced max)
    budget: int = 40                        # matched budget B: added examples per method, fixed (= seed size 4 x 10)
    budget_grid: tuple[int, ...] = (0, 5, 10, 15, 20, 30, 40)
    natural_pool_max: int = 3000            # unlabelled pool size for natural sampling
    # synthesis
    n_examples: int = 2                     # few-shot examples per prompt
    example_tokens: int = 40                # each few-shot example is cut to this many tokens
    n_candidates: int = 8                   # candidates per feature per round
    alpha_multipliers: tuple[float, ...] = (0.0, 2.0, 4.0, 8.0)  # round r steers with mult[r] x the feature's scale
    per_feature: int | None = None          # kept examples per missing feature at most (None: ceil(budget/|T_miss|))
    n_rounds: int = 8                       # synthesis rounds (alphas cycle; a feature silent for a cycle is dropped)
    max_new_tokens: int = 40
    temperature: float = 1.0
    max_copy: float = 0.5                   # reject candidates sharing more than this share of char 12-grams with the prompt
    # encoding
    batch_size: int = 32
    max_length: int = 128
    # classifier
    clf_features: tuple[str, ...] = ("sae", "char")
    n_boot: int = 1000
    # paper profile
    dataset_id: str = "allenai/wildjailbreak"
    train_config: str = "train"
    eval_config: str = "eval"
    train_text_column: str = "adversarial"
    eval_text_column: str = "adversarial"
    train_label_column: str = "data_type"
    eval_label_column: str = "label"
    natural_dataset_id: str = "allenai/WildChat-1M"  # the report does not say: a parameter
    natural_column: str = "conversation"   # text column; a list of chat turns gives each first user turn
    endpoint_url: str | None = None          # OpenAI-compatible base URL (e.g. https://api.openai.com/v1)
    endpoint_model: str = "gpt-4"
    seed: int = 0

    def __post_init__(self):
        if self.target_set not in TARGET_SETS:
            raise ValueError(f"target_set={self.target_set!r}: choose one of {TARGET_SETS}")
        if self.max_pool_rate is not None and not 0 <= self.max_pool_rate <= 1:
            raise ValueError(f"max_pool_rate={self.max_pool_rate} is a firing rate: give a value in [0, 1] or None")
        if self.fire_quantile is not None and not 0 <= self.fire_quantile < 1:
            raise ValueError(f"fire_quantile={self.fire_quantile}: give a quantile in [0, 1) or None (firing at eps)")
        if self.budget < 1:
            raise ValueError(f"budget={self.budget}: the matched budget needs at least 1 added example")

    @property
    def pool_rate_max(self) -> float:
        """r_max of the ``pool_rare`` target set (``max_pool_rate``, or the budget's half-coverage rate)."""
        return pool_rare_threshold(self.budget) if self.max_pool_rate is None else float(self.max_pool_rate)

    @classmethod
    def for_profile(cls, name: str) -> "SafetyConfig":
        if name == "mini":
            return cls()
        if name == "smoke":
            return cls(layer=1, score="delta", tau=0.02, min_unsafe_rate=0.01, max_targets=40, n_seed_per_cell=8,
                       n_discovery_per_cell=None, budget=24,
                       budget_grid=(0, 4, 8, 16, 24), natural_pool_max=200, n_candidates=4,
                       alpha_multipliers=(0.0, 4.0), n_rounds=2, max_new_tokens=16, batch_size=16,
                       max_length=64, n_boot=200, example_tokens=16)
        if name == "paper":
            return cls(layer=30, score="logodds", tau=0.5, n_discovery_per_cell=None, n_seed_per_cell=1000,
                       budget=4000, budget_grid=(0, 250, 500, 1000, 2000, 4000), natural_pool_max=50_000,
                       n_examples=4, example_tokens=128, n_candidates=8, n_rounds=12, max_new_tokens=256,
                       batch_size=8, max_length=512, alpha_multipliers=(0.0, 1.0, 2.0))
        raise ValueError(f"unknown profile {name!r}: choose mini, smoke or paper")


@dataclass
class SafetySplits:
    """discovery: ranks T and supplies top-activating contexts; seed: the real seed set ("4k real");
    extra: further labelled real data (for the larger real-only arms); eval: held-out labelled data;
    natural: unlabelled texts for natural sampling."""

    discovery: list[LabelledText]
    seed: list[LabelledText]
    extra: list[LabelledText]
    eval: list[LabelledText]
    natural: list[str]
    info: dict = field(default_factory=dict)


def _cells(data: Sequence[LabelledText]) -> dict[tuple[str, str], list[LabelledText]]:
    out: dict[tuple[str, str], list[LabelledText]] = {}
    for x in data:
        out.setdefault((x.group, x.label), []).append(x)
    return out


def _balanced(data: Sequence[LabelledText], per_cell: int | None, rng: random.Random) -> list[LabelledText]:
    """Equal numbers per (group, label) cell (default: the smallest cell's size), shuffled with ``rng``."""
    cells = _cells(data)
    if not cells:
        return []
    n = min(len(v) for v in cells.values()) if per_cell is None else per_cell
    short = {k: len(v) for k, v in cells.items() if len(v) < n}
    if short:
        raise ValueError(f"cells {short} have fewer than {n} examples: lower n_*_per_cell")
    out = []
    for k in sorted(cells):
        v = list(cells[k])
        rng.shuffle(v)
        out += v[:n]
    return out


def make_splits(profile, cfg: SafetyConfig) -> SafetySplits:
    """Discovery / seed / extra / eval / natural pools for a profile (all draws seeded with ``cfg.seed``).

    Built profiles: train-split labelled texts give discovery (balanced per language x label, so that
    the language mix does not masquerade as safety), seed and extra; held-out labelled texts give eval
    (balanced); the natural pool is the held-out corpus texts, labels dropped, all languages.
    Paper: WildJailbreak train (discovery, seed, extra), eval config (eval), ``natural_dataset_id``.
    """
    rng = random.Random(cfg.seed)
    name = getattr(profile, "name", profile)
    if name == "paper":
        train = load_wildjailbreak(cfg.train_config, "train", cfg.train_text_column, dataset_id=cfg.dataset_id,
                                   label_column=cfg.train_label_column)
        test = load_wildjailbreak(cfg.eval_config, "train", cfg.eval_text_column, fallback_text_column=None,
                                  label_column=cfg.eval_label_column, dataset_id=cfg.dataset_id)
        from .texts import load_hf_texts
        natural = load_hf_texts(cfg.natural_dataset_id, column=cfg.natural_column, n=cfg.natural_pool_max,
                                seed=cfg.seed)
    else:
        from .mini.corpus import load_corpus
        train, test = mini_labelled(profile, "train"), mini_labelled(profile, "heldout")
        natural = [d.text for d in load_corpus(profile, split="heldout")]
        rng.shuffle(natural)
        natural = natural[: cfg.natural_pool_max]
    return split_pools(train, test, natural, cfg)


def split_pools(train: Sequence[LabelledText], test: Sequence[LabelledText], natural: list[str],
                cfg: SafetyConfig) -> SafetySplits:
    """Draw seed, discovery, extra and eval from labelled pools (seeded with ``cfg.seed``).

    The seed set (``n_seed_per_cell`` per (group, label) cell) is drawn first and discovery
    (``n_discovery_per_cell``) from the REST, so targets are ranked on texts the seed does not
    contain (the report's T: relevant features, not those the seed already fires); extra = train
    minus seed; eval is balanced from ``test``."""
    rng = random.Random(cfg.seed)
    seed = _balanced(train, cfg.n_seed_per_cell, random.Random(cfg.seed + 1))
    seed_ids = {id(x) for x in seed}
    rest = [x for x in train if id(x) not in seed_ids]
    discovery = _balanced(rest, cfg.n_discovery_per_cell, rng)
    extra = list(rest)
    random.Random(cfg.seed + 2).shuffle(extra)
    ev = _balanced(test, cfg.n_eval_per_cell, random.Random(cfg.seed + 3))
    info = {"n_train_labelled": len(train), "n_discovery": len(discovery), "n_seed": len(seed),
            "n_extra": len(extra), "n_eval": len(ev), "n_natural": len(natural),
            "cells_train": {f"{g}/{l}": len(v) for (g, l), v in sorted(_cells(train).items())}}
    return SafetySplits(discovery, seed, extra, ev, natural, info)


# ============================================================================ encoding

def max_act_encoder(model, tokenizer, sae, layer: int, batch_size: int = 32, max_length: int = 128,
                    progress: bool = False, norm_ratio: float | None = None) -> Callable[[list[str]], sp.csr_matrix]:
    """A function texts -> CSR (n_texts, d_sae) of per-text max activations at ``layer``
    (shared :func:`features.text_max_activations`, position 0 excluded, and tokens with a residual
    norm above ``norm_ratio`` x the batch median when given)."""
    from .features import text_max_activations

    def encode(texts: list[str]) -> sp.csr_matrix:
        if not texts:
            return sp.csr_matrix((0, sae.d_sae), dtype=np.float32)
        return text_max_activations(model, tokenizer, {layer: sae}, list(texts), batch_size=batch_size,
                                    max_length=max_length, progress=progress, norm_ratio=norm_ratio)[layer]
    return encode


# ============================================================================ targets and coverage

def fired(max_acts: sp.spmatrix, eps: float | np.ndarray = 0.0) -> sp.csr_matrix:
    """CSR bool (n_texts, d_sae): h = 1[max activation > eps]; ``eps`` a scalar (>= 0) or one threshold
    per feature (d_sae,) (see :func:`firing_thresholds`)."""
    M = sp.csr_matrix(max_acts)
    if np.ndim(eps) == 0:
        return (M > eps).tocsr()
    e = np.asarray(eps, dtype=float)
    if e.shape != (M.shape[1],) or (e < 0).any():
        raise ValueError(f"per-feature thresholds need shape ({M.shape[1]},) and values >= 0, got {e.shape}")
    out = M.copy()
    out.data = M.data > e[M.indices]
    out.eliminate_zeros()
    return out.astype(bool).tocsr()


def firing_thresholds(max_acts: sp.spmatrix, q: float | None, eps: float = 0.0) -> float | np.ndarray:
    """Per-feature coverage thresholds: the ``q``-quantile of each feature's per-text max activations
    above ``eps`` (features that never exceed eps get +inf: nothing covers them); ``q`` None: ``eps``."""
    if q is None:
        return eps
    C = sp.csc_matrix(max_acts)
    out = np.full(C.shape[1], np.inf)
    for j in range(C.shape[1]):
        v = C.data[C.indptr[j]:C.indptr[j + 1]]
        v = v[v > eps]
        if v.size:
            out[j] = max(float(np.quantile(v, q)), eps)
    return out


def relevance_scores(max_unsafe: sp.spmatrix, max_safe: sp.spmatrix, kind: str = "delta", eps: float = 0.0,
                     smoothing: float = 0.5) -> dict[str, np.ndarray]:
    """Per-feature relevance from unsafe (n_u, d_sae) vs safe (n_s, d_sae) per-text max activations.

    Returns {'score', 'rate_unsafe', 'rate_safe'} arrays (d_sae,). ``delta`` = rate_u - rate_s;
    ``logodds`` = log[(k_u + s)/(n_u - k_u + s)] - log[(k_s + s)/(n_s - k_s + s)] with counts k of
    firing texts and additive smoothing s.
    """
    if max_unsafe.shape[1] != max_safe.shape[1]:
        raise ValueError(f"unsafe and safe matrices have different widths {max_unsafe.shape[1]} vs {max_safe.shape[1]}")
    if max_unsafe.shape[0] == 0 or max_safe.shape[0] == 0:
        raise ValueError("relevance needs at least one unsafe and one safe text")
    ku = np.asarray(fired(max_unsafe, eps).sum(0)).ravel().astype(float)
    ks = np.asarray(fired(max_safe, eps).sum(0)).ravel().astype(float)
    nu, ns = max_unsafe.shape[0], max_safe.shape[0]
    ru, rs = ku / nu, ks / ns
    if kind == "delta":
        score = ru - rs
    elif kind == "logodds":
        s = smoothing
        score = np.log((ku + s) / (nu - ku + s)) - np.log((ks + s) / (ns - ks + s))
    else:
        raise ValueError(f"unknown relevance score {kind!r}: use 'delta' or 'logodds'")
    return {"score": score, "rate_unsafe": ru, "rate_safe": rs}


@dataclass
class TargetFeatures:
    """Target set T at one layer: ids sorted by decreasing relevance, with their scores and rates."""

    layer: int
    ids: np.ndarray
    score: np.ndarray
    rate_unsafe: np.ndarray
    rate_safe: np.ndarray
    tau: float
    kind: str
    rate_pool: np.ndarray | None = None     # firing rate in the natural pool (pool_rare target sets)

    def __len__(self) -> int:
        return len(self.ids)

    def table(self):
        import pandas as pd
        cols = {"feature": self.ids, "score": self.score, "rate_unsafe": self.rate_unsafe, "rate_safe": self.rate_safe}
        if self.rate_pool is not None:
            cols["rate_pool"] = self.rate_pool
        return pd.DataFrame(cols)


def select_targets(rel: dict[str, np.ndarray], tau: float, layer: int, kind: str = "delta",
                   min_unsafe_rate: float = 0.0, max_targets: int | None = None) -> TargetFeatures:
    """T = {f : score_f >= tau and rate_unsafe_f >= min_unsafe_rate}, strongest first (at most ``max_targets``)."""
    score, ru = rel["score"], rel["rate_unsafe"]
    keep = np.nonzero((score >= tau) & (ru >= min_unsafe_rate) & (ru > 0))[0]
    keep = keep[np.argsort(-score[keep], kind="stable")]
    if max_targets is not None:
        keep = keep[:max_targets]
    return TargetFeatures(layer, keep, score[keep], ru[keep], rel["rate_safe"][keep], tau, kind)


def pool_rare_threshold(budget: int) -> float:
    """r_max = 1 - 0.5 ** (1 / budget): the pool firing rate at which ``budget`` natural draws (with
    replacement) hit a feature with probability exactly 1/2. Below it, natural sampling at the matched
    budget is expected to miss the feature more often than not."""
    if budget < 1:
        raise ValueError(f"budget={budget}: need at least 1 draw")
    return 1.0 - 0.5 ** (1.0 / budget)


def pool_rates(max_acts: sp.spmatrix, eps: float | np.ndarray = 0.0) -> np.ndarray:
    """(d_sae,) share of the natural pool's texts that fire each feature."""
    if max_acts.shape[0] == 0:
        raise ValueError("the natural pool is empty: pool_rare targets need pool texts (raise natural_pool_max)")
    return np.asarray(fired(max_acts, eps).sum(0)).ravel() / max_acts.shape[0]


def restrict_to_pool_rare(T: TargetFeatures, rate_pool: np.ndarray, max_rate: float) -> TargetFeatures:
    """The targets of ``T`` whose natural-pool firing rate is <= ``max_rate`` (order kept), with ``rate_pool``."""
    rp = np.asarray(rate_pool, dtype=float)[T.ids]
    keep = rp <= max_rate
    return TargetFeatures(T.layer, T.ids[keep], T.score[keep], T.rate_unsafe[keep], T.rate_safe[keep], T.tau,
                          T.kind, rp[keep])


def paired_coverage(a: np.ndarray, b: np.ndarray) -> dict:
    """Paired outcome of two methods over the same targets (bool arrays: covered by a / by b).

    Returns counts ``both``, ``a_only``, ``b_only``, ``neither``, ``n`` and the exact two-sided McNemar
    p-value (binomial test on the discordant pairs; 1.0 when there are none)."""
    from scipy.stats import binomtest

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"paired coverage needs the same targets: shapes {a.shape} vs {b.shape}")
    ao, bo = int((a & ~b).sum()), int((~a & b).sum())
    p = float(binomtest(ao, ao + bo, 0.5).pvalue) if ao + bo else 1.0
    return {"both": int((a & b).sum()), "a_only": ao, "b_only": bo, "neither": int((~a & ~b).sum()),
            "n": int(a.size), "mcnemar_p": p}


def feature_coverage(max_acts: sp.spmatrix, features: Sequence[int], eps: float | np.ndarray = 0.0) -> np.ndarray:
    """c_f(D) for each f in ``features``: (len(features),) bool, True iff some text of D fires f."""
    feats = np.asarray(features, dtype=int)
    if max_acts.shape[0] == 0 or len(feats) == 0:
        return np.zeros(len(feats), dtype=bool)
    col = np.asarray(fired(max_acts, eps)[:, feats].sum(0)).ravel()
    return col > 0


def coverage(max_acts: sp.spmatrix, features: Sequence[int], eps: float | np.ndarray = 0.0) -> float:
    """Cov(D) = |T ∩ covered(D)| / |T| (NaN for an empty T)."""
    if len(features) == 0:
        return float("nan")
    return float(feature_coverage(max_acts, features, eps).mean())


def missing_targets(max_acts: sp.spmatrix, features: Sequence[int], eps: float | np.ndarray = 0.0) -> np.ndarray:
    """T_miss: the targets (in the given order) that no text of D fires."""
    feats = np.asarray(features, dtype=int)
    return feats[~feature_coverage(max_acts, feats, eps)]


def _first_hit(max_acts: sp.spmatrix, features: np.ndarray, eps: float | np.ndarray) -> np.ndarray:
    """(len(features),) index of the first row firing each feature (n_rows if none)."""
    n = max_acts.shape[0]
    out = np.full(len(features), n, dtype=int)
    if n == 0 or len(features) == 0:
        return out
    sub = fired(max_acts, eps)[:, features].tocsc()
    for j in range(len(features)):
        rows = sub.indices[sub.indptr[j]:sub.indptr[j + 1]]
        if rows.size:
            out[j] = rows.min()
    return out


def coverage_curve(base: sp.spmatrix | None, added: sp.spmatrix, features: Sequence[int],
                   budgets: Sequence[int], eps: float | np.ndarray = 0.0, hold: bool = False) -> np.ndarray:
    """Cov(base ∪ added[:b]) for each budget b (rows of ``added`` are taken in order).

    Budgets beyond ``added.shape[0]`` (the method produced fewer examples) give NaN, or with ``hold``
    the coverage of everything it produced (a method that stops short is scored on what it made).
    """
    feats = np.asarray(features, dtype=int)
    if len(feats) == 0:
        return np.full(len(budgets), np.nan)
    have = feature_coverage(base, feats, eps) if base is not None else np.zeros(len(feats), bool)
    first = _first_hit(added, feats, eps)
    n = added.shape[0]
    return np.array([np.nan if b > n and not hold else float((have | (first < min(b, n))).mean()) for b in budgets])


def top_texts(max_acts: sp.spmatrix, feature: int, texts: Sequence[str], n: int) -> list[str]:
    """The ``n`` texts with the highest max activation of ``feature`` (only texts where it fires)."""
    col = sp.csc_matrix(max_acts[:, [feature]])
    rows, vals = col.indices, col.data
    order = rows[np.argsort(-vals, kind="stable")][:n]
    return [texts[i] for i in order if vals[np.where(rows == i)[0][0]] > 0]


# ============================================================================ downstream classifier

def featurize(kind: str, train_texts: list[str], other_texts: Sequence[list[str]],
              encode: Callable[[list[str]], sp.csr_matrix] | None = None, cache: dict | None = None):
    """Feature matrices for the classifier: (X_train, [X_other...]).

    ``sae``: binary firing of every SAE feature at the layer (``encode`` gives the max activations;
    ``cache`` maps text -> CSR row to avoid re-encoding). ``char``: TF-IDF of character 2-4-grams
    (word-bounded), vocabulary fitted on the training texts only.
    """
    if kind == "sae":
        if encode is None:
            raise ValueError("featurize('sae', ...) needs encode= (see max_act_encoder)")
        cache = {} if cache is None else cache

        def mat(texts):
            todo = list(dict.fromkeys(t for t in texts if t not in cache))
            if todo:
                M = encode(todo)
                for i, t in enumerate(todo):
                    cache[t] = M[i]
            return fired(sp.vstack([cache[t] for t in texts])).astype(np.float32)
        return mat(train_texts), [mat(t) for t in other_texts]
    if kind == "char":
        from sklearn.feature_extraction.text import TfidfVectorizer
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2, sublinear_tf=True)
        X = vec.fit_transform(train_texts)
        return X, [vec.transform(t) for t in other_texts]
    raise ValueError(f"unknown classifier features {kind!r}: use 'sae' or 'char'")


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector (resampling eval examples)."""
    return cluster_bootstrap(np.asarray(correct, dtype=float), n_boot=n_boot, seed=seed, level=level)[1:]

def train_eval_classifier(X_train, y_train: Sequence[str], X_eval, y_eval: Sequence[str], C: float = 1.0,
                          seed: int = 0, n_boot: int = 1000) -> dict:
    """Logistic regression (class_weight='balanced') unsafe-vs-safe; metrics on the eval set in %.

    accuracy (+ bootstrap 95% CI); ``unsafe_missed`` = share of unsafe eval texts predicted safe (an
    attack-success-rate analogue, lower is better); ``safe_flagged`` = share of safe eval texts
    predicted unsafe (an over-refusal analogue, lower is better); macro F1.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    ytr = np.array([1 if y == UNSAFE else 0 for y in y_train])
    yev = np.array([1 if y == UNSAFE else 0 for y in y_eval])
    if len(set(ytr)) < 2:
        raise ValueError("the training set needs both unsafe and safe examples")
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
    clf.fit(X_train, ytr)
    pred = clf.predict(X_eval)
    correct = pred == yev
    lo, hi = bootstrap_ci(correct, n_boot, seed)
    return {"accuracy": 100 * correct.mean(), "acc_lo": 100 * lo, "acc_hi": 100 * hi,
            "unsafe_missed": 100 * float((pred[yev == 1] == 0).mean()),
            "safe_flagged": 100 * float((pred[yev == 0] == 1).mean()),
            "macro_f1": 100 * f1_score(yev, pred, average="macro"), "n_train": len(ytr),
            "n_train_unsafe": int(ytr.sum())}


# ============================================================================ pipeline pieces used by notebook 05

def discover_targets(encode: Callable[[list[str]], sp.csr_matrix], discovery: Sequence[LabelledText],
                     cfg: SafetyConfig, pool_max_acts: sp.spmatrix | None = None) -> tuple[TargetFeatures, sp.csr_matrix, dict]:
    """Encode the discovery texts, score every feature (unsafe vs safe) and select T (``cfg.target_set``).

    ``pool_max_acts``: the natural pool's max activations, needed by ``"pool_rare"`` (T = relevant
    features with pool coverage-firing rate <= ``cfg.pool_rate_max``; ``max_targets`` applies after that
    filter). Returns (T, max activations (n_discovery, d_sae) in discovery order, relevance dict with
    ``fire_threshold`` (the coverage thresholds, :func:`firing_thresholds`) and ``rate_pool`` when the
    pool was given)."""
    M = encode([x.text for x in discovery])
    y = np.array([x.label == UNSAFE for x in discovery])
    rel = relevance_scores(M[np.nonzero(y)[0]], M[np.nonzero(~y)[0]], cfg.score, cfg.eps)
    rel["fire_threshold"] = firing_thresholds(M, cfg.fire_quantile, cfg.eps)
    if pool_max_acts is not None:
        rel["rate_pool"] = pool_rates(pool_max_acts, rel["fire_threshold"])
    if cfg.target_set == "relevant":
        return select_targets(rel, cfg.tau, cfg.layer, cfg.score, cfg.min_unsafe_rate, cfg.max_targets), M, rel
    if pool_max_acts is None:
        raise ValueError("target_set='pool_rare' needs the natural pool's max activations (pool_max_acts=); "
                         "or set target_set='relevant'")
    R = select_targets(rel, cfg.tau, cfg.layer, cfg.score, cfg.min_unsafe_rate, None)
    T = restrict_to_pool_rare(R, rel["rate_pool"], cfg.pool_rate_max)
    if cfg.max_targets is not None:
        T = TargetFeatures(T.layer, T.ids[:cfg.max_targets], T.score[:cfg.max_targets], T.rate_unsafe[:cfg.max_targets],
                           T.rate_safe[:cfg.max_targets], T.tau, T.kind, T.rate_pool[:cfg.max_targets])
    return T, M, rel


def empty_miss_reason(n_targets: int, n_missing: int, n_seed: int, cfg: SafetyConfig) -> str | None:
    """None when there is something to synthesise; otherwise a sentence saying why the comparison
    would be empty (no targets, or a seed set that already fires every target) and what to change."""
    if n_targets == 0:
        return (f"T is empty: no feature reaches relevance {cfg.score} >= tau={cfg.tau} with an unsafe firing rate "
                f">= {cfg.min_unsafe_rate}" + (f" and a natural-pool firing rate <= {cfg.pool_rate_max:.4f} (target_set="
                f"'pool_rare')" if cfg.target_set == "pool_rare" else "") + ". Fix: lower tau / min_unsafe_rate, "
                f"raise max_pool_rate, or use more discovery data.")
    if n_missing == 0:
        return (f"T_miss is empty: the {n_seed}-text seed set already fires all {n_targets} targets, so there is "
                f"nothing to synthesise and every coverage comparison would be empty. Fix: a smaller seed "
                f"(config n_seed_per_cell), a stricter target set (higher tau, max_targets) or a later layer.")
    return None


def feature_contexts(model, tokenizer, sae, layer: int, texts: Sequence[str], max_acts: sp.spmatrix,
                     features: Sequence[int], n: int = 6, example_tokens: int = 40, after: int = 8,
                     max_length: int = 128, batch_size: int = 32) -> tuple[dict, dict, dict]:
    """Top-activating contexts of each feature among ``texts`` (normally the unsafe discovery texts).

    The candidate texts are the ``n`` with the highest per-text max activation (from ``max_acts``); the
    shared :func:`features.top_contexts` then finds the top tokens. Returns three dicts feature ->
    snippets (token window of ``example_tokens`` ending ``after`` tokens past the top token, plain text:
    the few-shot examples), feature -> description (the top tokens in context, for a chat endpoint),
    feature -> activation scale (median top-token activation, the unit of the steering strength).
    """
    from .features import top_contexts

    feats = [int(f) for f in features]
    cand = sorted({i for f in feats for i in _top_rows(max_acts, f, n)})
    sub = [texts[i] for i in cand]
    tc = top_contexts(model, tokenizer, sae, layer, sub, feats, n=n, max_length=max_length, batch_size=batch_size,
                      progress=False) if sub else {f: [] for f in feats}
    snippets, desc, scale = {}, {}, {}
    ids_cache: dict[int, list[int]] = {}
    for f in feats:
        rows = tc.get(f, [])
        out = []
        for r in rows:
            ti, pos = r["text_index"], r["position"]
            if ti not in ids_cache:
                ids_cache[ti] = tokenizer(sub[ti], truncation=True, max_length=max_length)["input_ids"]
            ids = ids_cache[ti]
            lo = max(0, pos + after - example_tokens)
            out.append(tokenizer.decode(ids[lo:pos + after], skip_special_tokens=True).strip())
        snippets[f] = list(dict.fromkeys(s for s in out if s))
        desc[f] = "; ".join(f"'{r['token'].strip()}' in \"…{r['context'][-60:]}\"" for r in rows[:3])
        scale[f] = float(np.median([r["activation"] for r in rows])) if rows else 0.0
    return snippets, desc, scale


def _top_rows(max_acts: sp.spmatrix, feature: int, n: int) -> list[int]:
    col = sp.csc_matrix(max_acts[:, [feature]])
    rows, vals = col.indices, col.data
    keep = vals > 0
    return [int(i) for i in rows[keep][np.argsort(-vals[keep], kind="stable")][:n]]


def downstream_arms(splits: SafetySplits, feature_texts: Sequence[str], random_texts: Sequence[str],
                    budget: int, seed: int = 0) -> dict[str, list[LabelledText]]:
    """Training sets of the Table 3 analogue at matched budget B (synthetic examples are labelled
    ``unsafe``: every target feature is an unsafe-side feature and random synthesis is prompted with
    unsafe seed texts).

    real: the seed set; real + B random / feature synthesis; 2x real: seed + B more real labelled
    texts, balanced per (group, label) like the seed ("8k real"); all real: the seed plus the whole
    (balanced) discovery set, i.e. every real text the pipeline has encoded ("120k real")."""
    seed_set = list(splits.seed)
    synth = lambda ts, src: [LabelledText(t, UNSAFE, "synthetic", src) for t in list(ts)[:budget]]
    n_cells = len(_cells(splits.seed))
    more = _balanced(splits.extra, -(-budget // max(n_cells, 1)), random.Random(seed + 4))[:budget]
    return {"real (seed)": seed_set,
            "real + random synthesis": seed_set + synth(random_texts, "random"),
            "real + feature synthesis": seed_set + synth(feature_texts, "feature"),
            "2x real": seed_set + more,
            "all real": list({x.text: x for x in seed_set + list(splits.discovery)}.values())}


PAPER_ROW = {"real + feature synthesis": ("4k real + 4k feature synthesis", 77.75),
             "real + random synthesis": ("4k real + 4k random synthesis", 72.00),
             "all real": ("120k real", 78.75), "2x real": ("8k real", 71.75), "real (seed)": ("4k real", float("nan"))}


def row_cache(texts: Sequence[str], max_acts: sp.spmatrix, cache: dict | None = None) -> dict:
    """text -> CSR row of max activations (for :func:`featurize`'s ``cache``, to avoid re-encoding)."""
    cache = {} if cache is None else cache
    M = sp.csr_matrix(max_acts)
    for i, t in enumerate(texts):
        cache.setdefault(t, M[i])
    return cache


def downstream_table(arms: dict[str, list[LabelledText]], eval_set: Sequence[LabelledText],
                     kinds: Sequence[str], encode: Callable | None = None, seed: int = 0, n_boot: int = 1000,
                     cache: dict | None = None):
    """One row per (training set, classifier features): accuracy with 95% CI and the analogues of
    ASR / RR, beside the paper's Table 3 number for that row (LoRA-SFT safety accuracy; not the same
    task, printed for the shape of the comparison)."""
    import pandas as pd

    ev_texts, ev_y = [x.text for x in eval_set], [x.label for x in eval_set]
    cache = {} if cache is None else cache
    rows = []
    for kind in kinds:
        for name, data in arms.items():
            Xtr, (Xev,) = featurize(kind, [x.text for x in data], [ev_texts], encode=encode, cache=cache)
            m = train_eval_classifier(Xtr, [x.label for x in data], Xev, ev_y, seed=seed, n_boot=n_boot)
            pname, pval = PAPER_ROW.get(name, ("", float("nan")))
            rows.append({"features": kind, "training set": name, **m, "paper row": pname, "paper accuracy": pval})
    return pd.DataFrame(rows)
