"""Steering case studies (docs/CONVENTIONS.md §3): generate under steering, measure, and put intervals on it.

* Code-switch metrics by script (:func:`script_metrics`): per continuation, whether it contains
  any character of the unwanted script (``has_script``) and the share of such characters among
  script-bearing characters (``script_share``).
* Conditions (:func:`additive`, :func:`clamped`, :data:`BASELINE`) wrap the shared
  :func:`qscope_utils.steering.steer` / :func:`~qscope_utils.steering.clamp_features`;
  :func:`run_conditions` samples every prompt x seed under every condition (same seeds, so
  baseline and steered samples are paired).
* :func:`continuation_nll`: the cost of steering, mean negative log-likelihood (nats/token) of a
  continuation under the UNSTEERED model; perplexity = exp(NLL).
* :func:`cluster_bootstrap` / :func:`summarise`: bootstrap over prompts (all seeds of a prompt
  resampled together), for a metric and for its paired change against the baseline.
* :func:`pick_alpha`: the operating point of a sweep by a rule stated in advance (the weakest
  |alpha| whose change is within one standard error of the best change, among alphas whose
  fluency cost is within budget), with the plain argmax recorded beside it.
* :class:`ClassicalnessClassifier`: character n-gram logistic regression trained on classical
  (``lzh``) vs modern (``zh``) Chinese windows, validated on held-out documents, and
  :func:`style_stats` (share of classical function characters, mean clause length).
"""
from __future__ import annotations

import random
import re
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .batching import DEFAULT_CHUNK_TOKENS, token_logprobs
from .generation import generate
from .hooks import pad_ids
from .sae import TopKSAE
from .scripts_unicode import script_of
from .stats import cluster_bootstrap, one_se_pick, paired_diff_bootstrap, se_from_interval  # noqa: F401 (re-exported)
from .steering import clamp_features, feature_vector, steer

__all__ = ["SteerConfig", "Condition", "BASELINE", "additive", "clamped", "run_conditions", "script_metrics",
           "continuation_nll", "cluster_bootstrap", "paired_diff_bootstrap", "summarise", "pick_alpha", "ClassicalnessClassifier",
           "normalize_zh", "zh_windows", "style_stats", "CLASSICAL_FUNCTION_CHARS", "STORY_OPENINGS", "CUES",
           "english_prompts", "middle_layer", "alpha_scale_from_contrast", "load_case_texts", "plot_sweep",
           "OTHER_LANGS"]

CLASSICAL_FUNCTION_CHARS = "之乎者也矣焉哉"
_CLAUSE_SPLIT = re.compile(r"[，。；！？、,.;!?：:\n]+")
_ZH_KEEP_PUNCT = set("，。！？；：、")


# ----------------------------------------------------------------------------- configuration
@dataclass
class SteerConfig:
    """Sizes and parameters of the §3 case studies for one profile.

    layer: decoder layer whose SAE is used (None = middle layer of the group). zh_feature /
    lzh_feature: feature ids (None = discover them; paper: 6159 / 36398 from the report).
    Alphas are ``multiplier x alpha_scale``: with ``alpha_scale=None`` the scale is the
    feature's mean activation where it fires on its positive set (measured), so a multiplier of 1
    adds one typical activation's worth of the decoder column; ``alpha_scale=1.0`` makes the
    multipliers raw alphas (the official demo's presets are 5 / 20 / 100).
    """

    layer: int | None = None
    zh_feature: int | None = None
    lzh_feature: int | None = None
    suppress_multipliers: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0)
    activate_multipliers: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0, 8.0)
    alpha_scale: float | None = None
    n_cs_prompts: int = 48
    n_style_prompts: int = 24
    seeds: tuple[int, ...] = (0, 1, 2)
    max_new_tokens: int = 24
    temperature: float = 1.0
    batch_size: int = 48
    n_discovery_texts: int = 200     # texts per set for contrast discovery (other languages: a quarter each)
    n_dashboard_texts: int = 30      # texts per language for dashboards
    max_length: int = 64             # tokens per text in discovery / dashboards
    classical_min_ratio: float = 2.0  # classical feature must fire >= this x more on lzh than on zh
    max_nll_cost: float = 0.25       # case 1 operating point: NLL change (nats/token) allowed, i.e. perplexity x1.28
    n_boot: int = 2000
    clf_window_chars: int = 24
    english_dataset: str = "Salesforce/wikitext"          # paper only: English prompt source (report: unnamed)
    english_config: str | None = "wikitext-103-raw-v1"
    english_split: str = "validation"                    # not the test split that §2 evaluates on
    classical_dataset: str | None = None                 # paper only, required: lzh text (JSONL file with a text
    classical_column: str = "text"                       # column, org/name:file.jsonl, or a hub id); report: unnamed
    modern_dataset: str | None = None                    # paper only, required: modern Chinese text (same forms)
    modern_column: str = "text"
    seed: int = 0

    @classmethod
    def for_profile(cls, name: str, **overrides) -> "SteerConfig":
        if name == "smoke":
            cfg = cls(suppress_multipliers=(0.0, 4.0), activate_multipliers=(0.0, 4.0), n_cs_prompts=6,
                      n_style_prompts=4, seeds=(0, 1), max_new_tokens=8, batch_size=16, n_discovery_texts=16,
                      n_dashboard_texts=4, max_length=32, n_boot=200, classical_min_ratio=1.0)
        elif name == "mini":
            cfg = cls()
        elif name == "paper":
            cfg = cls(zh_feature=6159, lzh_feature=36398, alpha_scale=1.0, suppress_multipliers=(0.0, 5.0, 20.0, 100.0),
                      activate_multipliers=(0.0, 5.0, 20.0, 100.0), n_cs_prompts=100, n_style_prompts=50,
                      seeds=(0, 1, 2), max_new_tokens=64, batch_size=16, n_discovery_texts=500, max_length=256)
        else:
            raise ValueError(f"unknown profile {name!r}: choose mini, smoke or paper")
        return replace(cfg, **overrides) if overrides else cfg


def middle_layer(n_layers: int) -> int:
    """The default layer: n_layers // 2 (layer 2 of 4, 18 of 36)."""
    return n_layers // 2


def alpha_scale_from_contrast(row: pd.Series | Mapping) -> float:
    """Mean activation of a feature where it fires on the positive set = mean_pos / rate_pos."""
    rate = float(row["rate_pos"])
    if rate <= 0:
        raise ValueError(f"feature {row.get('feature')} never fires on the positive set: cannot set an alpha scale")
    return float(row["mean_pos"]) / rate


# ----------------------------------------------------------------------------- prompts
# Hand-written openings of modern-Chinese stories (plain vernacular, no classical particles).
STORY_OPENINGS = (
    "那天早上，我背着书包走出家门，", "小明放学回家的时候，发现门口站着一个陌生人，", "我们村子后面有一座小山，",
    "他打开电脑，看了一眼手机，", "妈妈在厨房里做饭，爸爸坐在客厅里看电视，", "下雨了，街上的人都撑起了伞，",
    "这是我第一次一个人坐火车去北京，", "她推开窗户，外面的阳光很好，", "我的爷爷是一个很喜欢讲故事的人，",
    "公司楼下新开了一家咖啡店，", "周末的时候，我们一家人去公园散步，", "老师走进教室，大家马上安静了下来，",
    "他在城市里工作了十年，终于决定回老家，", "那只小猫每天晚上都会来我家门口，", "我们坐在操场上，一边聊天一边看星星，",
    "医院的走廊里很安静，", "朋友给我打电话，说他明天要来看我，", "冬天到了，河面上结了一层薄薄的冰，",
    "我把那封信放在桌子上，想了很久，", "地铁里的人很多，我只好站在门口，", "这家小饭馆的老板是一个很热情的人，",
    "晚上十点，办公室里只剩下我一个人，", "孩子们在院子里玩游戏，笑声传得很远，", "他拿起行李，走出了机场，",
    "春天来了，学校里的花都开了，", "我第一次见到她，是在一家书店里，", "这个城市的夜晚总是很热闹，",
    "手机突然响了，是一个不认识的号码，", "奶奶家的门前有一棵很大的树，", "考试结束以后，我们决定一起去旅行，",
)

# Cues appended to English text to make a drift into Chinese likely (case 1). "" = plain English.
CUES = {"none": "", "comma": "，", "attribution": "\n\t\t-- 《", "han_word": " 我们"}


def english_prompts(texts: Sequence[str], n: int, cues: Mapping[str, str] = CUES, max_chars: int = 120,
                    seed: int = 0) -> pd.DataFrame:
    """``n`` prompts: English text prefixes (cut at a word boundary) + a cue, cues cycled evenly.

    Returns a DataFrame with prompt_id, cue, prompt. ``texts`` must be English; the first
    ``ceil(n / len(cues))`` usable ones are used, each with every cue.
    """
    rng = random.Random(seed)
    pool = [t.strip() for t in texts if len(t.strip()) >= 20]
    if not pool:
        raise ValueError("no English text of at least 20 characters to build prompts from")
    rng.shuffle(pool)
    n_base = -(-n // len(cues))
    rows = []
    for t in pool[:n_base]:
        base = t[:max_chars]
        if len(t) > max_chars and " " in base:
            base = base.rsplit(" ", 1)[0]
        for cname, cue in cues.items():
            rows.append({"cue": cname, "prompt": base + cue})
    df = pd.DataFrame(rows[:n])
    df.insert(0, "prompt_id", np.arange(len(df)))
    return df


# ----------------------------------------------------------------------------- conditions & generation
@dataclass(frozen=True)
class Condition:
    """A named generation condition. ``make(model)`` returns a context manager that installs the hooks."""

    name: str
    alpha: float = 0.0
    multiplier: float = 0.0
    make: Callable = field(default=lambda model: nullcontext(), compare=False, repr=False)


BASELINE = Condition("baseline")


def additive(layer: int, sae: TopKSAE, features: int | Sequence[int], alpha: float, multiplier: float = 0.0,
             name: str | None = None) -> Condition:
    """h <- h + alpha * W_dec[:, f] after ``layer`` at every position and decode step (alpha < 0 suppresses)."""
    vec = feature_vector(sae, features, alpha)
    return Condition(name or f"add{alpha:+.3g}", float(alpha), float(multiplier),
                     lambda model: steer(model, {layer: vec}))


def clamped(layer: int, sae: TopKSAE, features: Sequence[int] | int, value: float = 0.0,
            name: str | None = None) -> Condition:
    """Clamp the features' codes to ``value`` wherever they fire (``value=0``: ablation)."""
    feats = [features] if isinstance(features, int) else list(features)
    return Condition(name or f"clamp={value:g}", 0.0, 0.0,
                     lambda model: clamp_features(model, layer, sae, feats, value=value))


def run_conditions(model, tokenizer, prompts: Sequence[str], seeds: Sequence[int], conditions: Sequence[Condition],
                   max_new_tokens: int = 32, temperature: float = 1.0, batch_size: int = 16,
                   progress: bool = True) -> pd.DataFrame:
    """Sample one continuation per (condition, prompt, seed). Same seed -> same sampling stream start
    under each condition (paired design).

    Returns a long DataFrame: condition, alpha, multiplier, prompt_id, seed, continuation,
    n_tokens and ``ids`` (list of generated token ids, for :func:`continuation_nll`).
    """
    rows = []
    jobs = [(c, s) for c in conditions for s in seeds]
    for cond, s in tqdm(jobs, desc="generating", disable=not progress, leave=False):
        with cond.make(model):
            texts, ids = generate(model, tokenizer, list(prompts), max_new_tokens=max_new_tokens, do_sample=True,
                                  temperature=temperature, seed=int(s), batch_size=batch_size, return_ids=True)
        for pid, (t, i) in enumerate(zip(texts, ids)):
            rows.append({"condition": cond.name, "alpha": cond.alpha, "multiplier": cond.multiplier, "prompt_id": pid,
                         "seed": int(s), "continuation": t, "n_tokens": int(i.numel()), "ids": i.tolist()})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- metrics
def script_metrics(texts: Iterable[str], script: str | Iterable[str] = "Han") -> pd.DataFrame:
    """Per text: has_script (0/1: any character of ``script``) and script_share (that script's share
    of script-bearing characters; 0 for a text with none)."""
    want = {script} if isinstance(script, str) else set(script)
    has, share = [], []
    for t in texts:
        scripts = [s for s in map(script_of, t) if s != "Common"]
        n = sum(s in want for s in scripts)
        has.append(float(n > 0))
        share.append(n / len(scripts) if scripts else 0.0)
    return pd.DataFrame({"has_script": has, "script_share": share})


@torch.no_grad()
def continuation_nll(model, prefixes: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]],
                     batch_size: int = 16, chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> np.ndarray:
    """Mean NLL (nats/token) of each continuation given its prefix, under ``model`` as it is (call it
    outside any steering context to score under the unsteered model). NaN for empty continuations.
    ``batch_size`` rows per forward pass; the LM head runs only at continuation positions, on chunks of
    ``chunk_tokens`` positions (:func:`qscope_utils.batching.token_logprobs`)."""
    if len(prefixes) != len(continuations):
        raise ValueError(f"{len(prefixes)} prefixes but {len(continuations)} continuations")
    out = np.full(len(prefixes), np.nan)
    for i in range(0, len(prefixes), batch_size):
        idx = [j for j in range(i, min(i + batch_size, len(prefixes))) if len(continuations[j]) > 0]
        if not idx:
            continue
        if any(len(prefixes[j]) == 0 for j in idx):
            raise ValueError("continuation_nll needs a non-empty prefix (the prompt) to score the first token")
        seqs = [list(prefixes[j]) + list(continuations[j]) for j in idx]
        ids, am = pad_ids(seqs, 0)
        score = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)   # positions predicting a continuation token
        for r, j in enumerate(idx):
            p, c = len(prefixes[j]), len(continuations[j])
            score[r, p - 1:p + c - 1] = True
        lp = token_logprobs(model, ids, am, chunk_tokens, positions=score).cpu()
        for r, j in enumerate(idx):
            out[j] = float(-lp[r][score[r]].mean())
    return out


def _grid(df: pd.DataFrame, metric: str) -> np.ndarray:
    """(n_prompts, n_seeds) array of ``metric`` for one condition's rows."""
    return df.pivot_table(index="prompt_id", columns="seed", values=metric, aggfunc="first", dropna=False).to_numpy()


def summarise(df: pd.DataFrame, metrics: Sequence[str], baseline: str = "baseline", n_boot: int = 2000,
              seed: int = 0, ci: float = 0.95) -> pd.DataFrame:
    """Per condition and metric: mean with CI, and the paired change vs ``baseline`` with CI.

    ``significant`` is True when the change's interval excludes 0. Columns: condition, alpha,
    multiplier, metric, n, mean, lo, hi, diff, diff_lo, diff_hi, significant.
    """
    if baseline not in set(df.condition):
        raise ValueError(f"no {baseline!r} rows to compare with; conditions: {sorted(set(df.condition))}")
    base = df[df.condition == baseline]
    rows = []
    for cond, g in df.groupby("condition", sort=False):
        for m in metrics:
            grid, bgrid = _grid(g, m), _grid(base, m)
            est, lo, hi = cluster_bootstrap(grid, n_boot, seed, level=ci)
            d, dlo, dhi = paired_diff_bootstrap(bgrid, grid, n_boot=n_boot, seed=seed, level=ci)
            rows.append({"condition": cond, "alpha": g.alpha.iloc[0], "multiplier": g.multiplier.iloc[0], "metric": m,
                         "n": int(np.sum(~np.isnan(grid))), "mean": est, "lo": lo, "hi": hi, "diff": d,
                         "diff_lo": dlo, "diff_hi": dhi,
                         "significant": bool(cond != baseline and (dlo > 0 or dhi < 0))})
    return pd.DataFrame(rows)


_PICK_KEYS = ("condition", "alpha", "mean", "lo", "hi", "diff", "diff_lo", "diff_hi", "significant")


def _pick_row(r: pd.Series | None) -> dict:
    if r is None:   # metric undefined everywhere (e.g. no continuation has enough Han characters)
        return {"condition": "none", "significant": False, **{k: float("nan") for k in _PICK_KEYS[1:-1]}}
    return {"condition": r["condition"], **{k: float(r[k]) for k in _PICK_KEYS[1:-1]},
            "significant": bool(r["significant"])}


def selection_rule(want: str, cost: str | None, max_cost: float | None) -> str:
    """The text of :func:`pick_alpha`'s rule, as recorded in the summary."""
    budget = (f" among alphas whose {cost} change is <= {max_cost:g} (if none is, the cheapest one)"
              if cost is not None and max_cost is not None else "")
    return (f"weakest |alpha| whose change ({'decrease' if want == 'down' else 'increase'} wanted) is within one "
            f"standard error (from its 95% paired bootstrap interval) of the largest change{budget}")


def pick_alpha(summary: pd.DataFrame, metric: str, want: str, cost: str | None = None,
               max_cost: float | None = None) -> dict:
    """The operating point of an additive-alpha sweep, by a rule fixed before looking (one-SE rule).

    Candidates are the additive conditions (``add...``) with a defined change in ``metric``. With
    ``cost`` / ``max_cost``, only alphas whose change in ``cost`` (e.g. NLL under the unsteered
    model) is at most ``max_cost`` are eligible (none eligible: the cheapest alpha alone). Among
    them, in order of increasing |alpha|, the first whose change is within one SE of the best change
    in the wanted direction (``want``: "down" or "up"); SE = width of its 95% interval / 3.92.
    A plain argmax flips between near-tied alphas with noise in the 5th digit; this pick moves only
    when a stronger alpha is better by more than its standard error.

    Returns ``{"best_steered": pick, "argmax_steered": argmax pick, "mildest_significant":
    the former rule's pick (mildest alpha significant in the wanted direction), "selection_rule": text}``;
    each pick has the keys condition, alpha, mean, lo, hi, diff, diff_lo, diff_hi, significant.
    """
    if want not in ("down", "up"):
        raise ValueError(f"want must be 'down' or 'up', not {want!r}")
    add = summary[summary.condition.str.startswith("add")]
    s = add[add.metric == metric].dropna(subset=["diff"])
    out = {"selection_rule": selection_rule(want, cost, max_cost)}
    if s.empty:
        return out | {k: _pick_row(None) for k in ("best_steered", "argmax_steered", "mildest_significant")}
    s = full = s.assign(_abs=s.alpha.abs()).sort_values(["_abs", "condition"], kind="stable")
    if cost is not None and max_cost is not None:
        c = add[add.metric == cost].set_index("condition")["diff"].reindex(s.condition).to_numpy()
        if np.isnan(c).all():
            raise ValueError(f"no {cost!r} rows in the summary: summarise the cost metric too, or pass cost=None")
        ok = np.nan_to_num(c, nan=np.inf) <= max_cost
        s = s[ok] if ok.any() else s.iloc[[int(np.nanargmin(c))]]
    ses = [se_from_interval(lo, hi) for lo, hi in zip(s.diff_lo, s.diff_hi)]
    rows = list(s.index)
    pick, best = one_se_pick(rows, s["diff"].to_numpy(), ses, maximize=(want == "up"))
    sig = full[full.significant & ((full["diff"] < 0) if want == "down" else (full["diff"] > 0))]
    return out | {"best_steered": _pick_row(s.loc[pick]), "argmax_steered": _pick_row(s.loc[best]),
                  "mildest_significant": _pick_row(sig.iloc[0] if len(sig) else None)}


# ----------------------------------------------------------------------------- classical style
_META = re.compile(r"(作者|题目|^\s*(--|——|－－)|^\s*《[^》]*》\s*$)")


def normalize_zh(text: str) -> str:
    """Chinese text reduced to what style depends on: drops title / author / attribution lines, keeps
    Han characters and Chinese sentence punctuation only (no Latin, digits, spaces)."""
    lines = [l for l in text.splitlines() if not _META.search(l)]
    return "".join(c for c in "\n".join(lines) if script_of(c) == "Han" or c in _ZH_KEEP_PUNCT)


def zh_windows(texts: Iterable[str], size: int, min_han: int | None = None) -> list[str]:
    """Consecutive non-overlapping windows of ``size`` characters of the normalised texts; windows
    with fewer than ``min_han`` (default size // 2) Han characters are dropped."""
    min_han = size // 2 if min_han is None else min_han
    out = []
    for t in texts:
        z = normalize_zh(t)
        for i in range(0, len(z), size):
            w = z[i:i + size]
            if sum(script_of(c) == "Han" for c in w) >= min_han:
                out.append(w)
    return out


def style_stats(text: str) -> dict[str, float]:
    """function_share: share of Han characters that are classical function characters 之乎者也矣焉哉;
    clause_len: mean Han characters per clause (clauses split at Chinese/Latin punctuation and line
    breaks); n_han: Han characters. NaN stats for a text without Han."""
    han = [c for c in text if script_of(c) == "Han"]
    if not han:
        return {"function_share": float("nan"), "clause_len": float("nan"), "n_han": 0}
    clauses = [sum(script_of(c) == "Han" for c in cl) for cl in _CLAUSE_SPLIT.split(text)]
    clauses = [n for n in clauses if n > 0]
    return {"function_share": sum(c in CLASSICAL_FUNCTION_CHARS for c in han) / len(han),
            "clause_len": float(np.mean(clauses)), "n_han": len(han)}


class ClassicalnessClassifier:
    """P(classical) for Chinese text: TF-IDF of character 1-3-grams + logistic regression.

    Trained on windows (``window`` characters, see :func:`zh_windows`) of classical (lzh) and
    modern (zh) documents, class-balanced; :meth:`evaluate` gives held-out accuracy on windows of
    other documents. Texts with fewer than ``min_han`` Han characters score NaN (not Chinese
    enough to judge).
    """

    def __init__(self, window: int = 24, ngram_range: tuple[int, int] = (1, 3), C: float = 4.0, min_han: int = 4,
                 seed: int = 0):
        self.window, self.ngram_range, self.C, self.min_han, self.seed = window, ngram_range, C, min_han, seed
        self.pipe = None

    def fit(self, classical: Sequence[str], modern: Sequence[str]) -> "ClassicalnessClassifier":
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        pos, neg = zh_windows(classical, self.window), zh_windows(modern, self.window)
        if len(pos) < 2 or len(neg) < 2:
            raise ValueError(f"too little Chinese text to train on ({len(pos)} classical, {len(neg)} modern windows)")
        self.n_train = {"classical": len(pos), "modern": len(neg)}
        self.pipe = make_pipeline(
            TfidfVectorizer(analyzer="char", ngram_range=self.ngram_range, sublinear_tf=True, min_df=1),
            LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000, random_state=self.seed))
        self.pipe.fit(pos + neg, np.r_[np.ones(len(pos)), np.zeros(len(neg))])
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n,) P(classical) of each (normalised) text; NaN where it has < min_han Han characters."""
        if self.pipe is None:
            raise RuntimeError("classifier not trained: call fit(classical_texts, modern_texts) first")
        z = [normalize_zh(t) for t in texts]
        ok = np.array([sum(script_of(c) == "Han" for c in t) >= self.min_han for t in z])
        out = np.full(len(z), np.nan)
        if ok.any():
            out[ok] = self.pipe.predict_proba([t for t, k in zip(z, ok) if k])[:, 1]
        return out

    def evaluate(self, classical: Sequence[str], modern: Sequence[str]) -> dict:
        """Held-out accuracy and balanced accuracy on windows of the given (unseen) documents."""
        pos, neg = zh_windows(classical, self.window), zh_windows(modern, self.window)
        if not pos or not neg:
            raise ValueError(f"no held-out windows to evaluate ({len(pos)} classical, {len(neg)} modern)")
        p = self.predict_proba(pos + neg)
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
        pred = p >= 0.5
        tpr, tnr = pred[y == 1].mean(), (~pred[y == 0]).mean()
        return {"accuracy": float((pred == y).mean()), "balanced_accuracy": float((tpr + tnr) / 2),
                "recall_classical": float(tpr), "recall_modern": float(tnr), "n_classical": len(pos),
                "n_modern": len(neg), "window_chars": self.window}


# ----------------------------------------------------------------------------- data & plots
OTHER_LANGS = ("en", "ru", "fr", "de", "es", "it", "ja", "code")


def load_case_texts(profile, cfg: SteerConfig) -> dict:
    """Texts the case studies need, as lists of str.

    Keys: ``english`` (prompt sources), ``zh`` / ``lzh`` (training split: discovery and classifier
    training), ``zh_heldout`` / ``lzh_heldout`` (classifier validation), ``other`` (lang -> texts,
    the non-Chinese negative set). Built profiles read the mini corpus; the paper profile reads the
    Hugging Face datasets named in ``cfg`` (classical/modern Chinese ids are parameters: the
    report does not name its data).
    """
    n = cfg.n_discovery_texts
    rng = random.Random(cfg.seed)

    def pick(xs, k):
        xs = list(xs)
        rng.shuffle(xs)
        return xs[:k]

    if profile.is_built:
        from .mini.corpus import load_corpus

        def texts(split, lang):
            return [d.text for d in load_corpus(profile, split=split, lang=lang)]

        return {"english": pick(texts("heldout", "en"), 4 * cfg.n_cs_prompts),
                "zh": texts("train", "zh"), "lzh": texts("train", "lzh"),
                "zh_heldout": texts("heldout", "zh"), "lzh_heldout": texts("heldout", "lzh"),
                "other": {l: pick(texts("train", l), max(n // 4, 1)) for l in OTHER_LANGS if texts("train", l)}}
    from .sources import SourceNotAvailable
    from .sources.chinese_text import CLASSICAL, MODERN
    from .sources.wikitext import paragraphs
    from .texts import load_hf_texts

    for src, value in ((CLASSICAL, cfg.classical_dataset), (MODERN, cfg.modern_dataset)):
        if not value:
            raise SourceNotAvailable(f"paper profile: set {src.user_param} (the report does not name its classical / "
                                     f"modern Chinese data): a JSONL file with a 'text' column, "
                                     f"org/name:file.jsonl in a hub dataset repo, or a hub dataset id (+ *_column)")
    eng = paragraphs(load_hf_texts(cfg.english_dataset, cfg.english_split, "text", 20 * cfg.n_cs_prompts,
                                   config=cfg.english_config, seed=cfg.seed))
    lzh = load_hf_texts(cfg.classical_dataset, "train", cfg.classical_column, 2 * n, seed=cfg.seed)
    zh = load_hf_texts(cfg.modern_dataset, "train", cfg.modern_column, 2 * n, seed=cfg.seed)
    return {"english": eng[:4 * cfg.n_cs_prompts], "zh": zh[:n], "lzh": lzh[:n], "zh_heldout": zh[n:],
            "lzh_heldout": lzh[n:], "other": {"en": eng[-n:]}}


def plot_sweep(summary: pd.DataFrame, metrics: Mapping[str, str], title: str = "", x: str = "alpha"):
    """Metric vs alpha with bootstrap CIs, one panel per metric (``metrics``: column -> axis label).

    Additive conditions (and the baseline, alpha 0) are a line; other conditions (clamping) are
    drawn as a horizontal band (mean with CI) and labelled.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4), squeeze=False)
    for ax, (m, label) in zip(axes[0], metrics.items()):
        s = summary[summary.metric == m]
        line = s[s.condition.str.startswith("add") | (s.condition == "baseline")].sort_values(x)
        ax.errorbar(line[x], line["mean"], yerr=[line["mean"] - line.lo, line.hi - line["mean"]], fmt="o-",
                    capsize=3, label="additive steering")
        for _, r in s[~s.index.isin(line.index)].iterrows():
            ax.axhspan(r.lo, r.hi, color="tab:red", alpha=0.15)
            ax.axhline(r["mean"], color="tab:red", ls="--", lw=1, label=r.condition)
        ax.set_xlabel(x)
        ax.set_title(label, fontsize=10)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
