"""Endless repetition: a detector, the repeat ratio, repetition features and their causal check (docs/CONVENTIONS.md §8).

* **Detector** (:class:`RepetitionDetector`): a response loops when its tail is made of one
  repeating n-gram unit (period 1..``max_unit``) over at least ``min_span`` elements and
  ``min_repeats`` copies of the unit. Elements are token ids (``unit="tokens"``) or characters
  (``unit="chars"``). With ``require_limit`` the response must also have hit the length limit
  (no end-of-text before ``max_new_tokens``): it is still looping when it is cut, i.e. the loop is
  endless, not a short stutter the model left. The report does not give its detector: every
  threshold is a parameter.
* **Repeat ratio**: share of sampled responses that loop, over held-out prompts, with a
  percentile bootstrap interval that resamples prompts (the responses of one prompt are not
  independent): :func:`repeat_ratio`.
* **Repetition features** (:func:`repetition_features`): in contexts where tokens repeat, the SAE
  code at the LAST occurrence of a repeated token minus the code at its FIRST occurrence, averaged
  over (context, token) pairs; features ranked by mean increase. Position 0 (attention sink) is
  never used.
* **Causal check** (:func:`steering_sweep`): repeat ratio of generations steered with
  ``h <- h + alpha * W_dec[:, f]`` (shared :func:`qscope_utils.steering.steer`, every position and
  decode step) against alpha: it should rise for alpha > 0 and fall for alpha < 0.
* **Causal selection** (:func:`pool_candidates`, :func:`screen_candidates`, :func:`select_feature`): the
  top-ranked feature by increase need not cause repetition. The top-m candidates by mean increase
  (pooled over the candidate layers) are each steered at one or two positive alphas, scaled so the
  perturbation is a fixed multiple of the layer's typical residual norm (``alpha = mult * |h| /
  |W_dec[:, f]|``), on TRAINING prompts; a random direction with the same perturbation norm is the
  control of each (layer, mult). The selected feature is the one whose steering raises the repeat
  ratio most (ties: rank by increase), among those above their random control if any are.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import token_budget_batches
from .hooks import capture_residuals, pad_ids
from .sae import TopKSAE
from .stats import cluster_bootstrap
from .steering import steer

__all__ = ["Loop", "find_tail_loop", "RepetitionDetector", "bootstrap_mean_ci", "repeat_ratio",
           "Rollouts", "sample_rollouts", "generation_groups", "repeat_pairs", "make_repeated_contexts",
           "repetition_features", "steering_sweep", "pick_alpha", "pick_alpha_vs_control", "pool_candidates",
           "candidate_columns", "repetition_candidates", "screen_candidates", "select_feature", "screen_ratio_fn",
           "RepetitionConfig"]


# --------------------------------------------------------------------------------------------- detector
@dataclass(frozen=True)
class Loop:
    """A periodic tail: ``unit`` elements repeated over the last ``span`` elements (``span / unit`` copies)."""

    unit: int
    span: int

    @property
    def repeats(self) -> float:
        return self.span / self.unit


def find_tail_loop(seq: Sequence, max_unit: int = 8, min_span: int = 12, min_repeats: float = 3.0) -> Loop | None:
    """The longest periodic tail of ``seq`` (token ids, characters, any comparable items), or None.

    For each period n in 1..max_unit the tail is periodic as far back as ``seq[i] == seq[i - n]``
    holds; its span is that run plus one unit. A tail counts when span >= ``min_span`` and
    span / n >= ``min_repeats``. Ties in span go to the smallest period (``abab...`` is period 2,
    not 4). O(len(seq) * max_unit).
    """
    if max_unit < 1 or min_span < 1 or min_repeats < 1:
        raise ValueError(f"need max_unit >= 1, min_span >= 1, min_repeats >= 1 (got {max_unit}, {min_span}, "
                         f"{min_repeats})")
    s = list(seq)
    best: Loop | None = None
    for n in range(1, max_unit + 1):
        if len(s) < 2 * n:
            break
        run, i = 0, len(s) - 1
        while i - n >= 0 and s[i] == s[i - n]:
            run += 1
            i -= 1
        span = run + n
        if run >= n and span >= min_span and span / n >= min_repeats and (best is None or span > best.span):
            best = Loop(n, span)
    return best


@dataclass(frozen=True)
class RepetitionDetector:
    """Endless-repetition test of one response.

    unit: ``"tokens"`` (pass token ids) or ``"chars"`` (pass the decoded text).
    max_unit / min_span / min_repeats: see :func:`find_tail_loop` (in the chosen unit).
    require_limit: also require that the response hit the length limit (``hit_limit=True``).
    """

    unit: str = "tokens"
    max_unit: int = 8
    min_span: int = 12
    min_repeats: float = 3.0
    require_limit: bool = True

    def __post_init__(self):
        if self.unit not in ("tokens", "chars"):
            raise ValueError(f"unit must be 'tokens' or 'chars', not {self.unit!r}")

    def loop(self, response) -> Loop | None:
        """The periodic tail of a response (token-id sequence / tensor, or str for ``unit='chars'``)."""
        if self.unit == "chars":
            if not isinstance(response, str):
                raise TypeError("unit='chars' needs the decoded response text (str)")
            seq = response.rstrip()
        else:
            if isinstance(response, str):
                raise TypeError("unit='tokens' needs token ids, not text: pass the generated ids or use unit='chars'")
            seq = response.tolist() if isinstance(response, torch.Tensor) else list(response)
        return find_tail_loop(seq, self.max_unit, self.min_span, self.min_repeats)

    def __call__(self, response, hit_limit: bool | None = None) -> bool:
        """True when the response loops (and, with ``require_limit``, was cut by the length limit)."""
        if self.require_limit:
            if hit_limit is None:
                raise ValueError("require_limit=True needs hit_limit (did the response reach max_new_tokens?)")
            if not hit_limit:
                return False
        return self.loop(response) is not None

    def flags(self, rollouts: "Rollouts") -> np.ndarray:
        """(B,) bool: loop flag of every response of a :class:`Rollouts`."""
        seqs = rollouts.texts if self.unit == "chars" else rollouts.response_ids()
        return np.array([self(s, bool(h)) for s, h in zip(seqs, rollouts.hit_limit.tolist())], dtype=bool)


# --------------------------------------------------------------------------------------------- statistics
def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi) of the mean of per-cluster values (n_clusters,) with a percentile bootstrap over clusters."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size == 0:
        raise ValueError("bootstrap of an empty sample")
    return cluster_bootstrap(v, n_boot=n_boot, seed=seed, level=level)

def repeat_ratio(flags: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Repeat ratio of a (n_prompts, n_samples) bool array of loop flags, bootstrap CI over prompts.

    Returns {'ratio', 'lo', 'hi', 'n_prompts', 'n_samples'}; ratio = share of all responses that loop.
    """
    f = np.asarray(flags, dtype=float)
    if f.ndim != 2:
        raise ValueError(f"flags must be (n_prompts, n_samples), got shape {f.shape}")
    m, lo, hi = bootstrap_mean_ci(f.mean(1), n_boot, level, seed)
    return {"ratio": m, "lo": lo, "hi": hi, "n_prompts": f.shape[0], "n_samples": f.shape[1]}


# --------------------------------------------------------------------------------------------- sampling
@dataclass
class Rollouts:
    """B sampled responses to left-padded prompts.

    input_ids / attention_mask: (B, P + T) prompt (left-padded, P columns) then response (T columns);
    response_mask: (B, T) bool, True for generated tokens up to and including the first
    end-of-text; hit_limit: (B,) bool, no end-of-text within T = max_new_tokens; texts: decoded
    responses; prompt_len: P.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    hit_limit: torch.Tensor
    texts: list[str]
    prompt_len: int
    max_new_tokens: int

    @property
    def responses(self) -> torch.Tensor:
        """(B, T) response token ids (padded with the pad id after end-of-text)."""
        return self.input_ids[:, self.prompt_len:]

    @property
    def lengths(self) -> torch.Tensor:
        """(B,) response lengths in tokens (end-of-text included)."""
        return self.response_mask.sum(1)

    def response_ids(self) -> list[list[int]]:
        return [r[m].tolist() for r, m in zip(self.responses, self.response_mask)]


def _response_mask(gen: torch.Tensor, eos_ids: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask (B, T) of tokens up to and including the first eos, hit_limit (B,))."""
    is_eos = torch.zeros_like(gen, dtype=torch.bool)
    for e in eos_ids:
        is_eos |= gen == e
    after = (is_eos.cumsum(1) - is_eos.long()) > 0  # strictly after the first eos
    return ~after, ~is_eos.any(1)


def left_padded_batch(model, tokenizer, prompts: list[str]):
    """(encoding on the model's device, left-padded for generation; end-of-text ids; pad id)."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
    finally:
        tokenizer.padding_side = old
    eos = _eos_ids(model, tokenizer)
    return enc, eos, _pad_id(tokenizer, eos)


def _pad_id(tokenizer, eos: set[int]) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos))


def generation_groups(tokenizer, prompts: Sequence[str], max_new_tokens: int,
                      max_batch_tokens: int | None) -> list[list[int]]:
    """Consecutive groups of prompt indices whose generation batch holds at most ``max_batch_tokens``
    tokens (rows x (longest prompt + max_new_tokens): what the KV cache grows to); None = one group.
    See :func:`qscope_utils.batching.token_budget_batches`."""
    if max_batch_tokens is None:
        return [list(range(len(prompts)))]
    lens = [len(ids) + max_new_tokens for ids in tokenizer(list(prompts))["input_ids"]]
    return token_budget_batches(lens, max_batch_tokens)


def local_rows(rows, group: Sequence[int]) -> list[int] | None:
    """Steered rows of the full batch (None = all, index list or (B,) bool mask) as indices into ``group``."""
    if rows is None:
        return None
    t = torch.as_tensor(rows)
    want = set(t.nonzero().flatten().tolist() if t.dtype == torch.bool else t.long().tolist())
    return [k for k, i in enumerate(group) if i in want]


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    ids = ids if ids is not None else tokenizer.eos_token_id
    return set(ids if isinstance(ids, (list, tuple)) else [ids])


@torch.no_grad()
def sample_rollouts(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int = 32,
                    temperature: float = 1.0, top_p: float = 1.0, seed: int = 0,
                    steer_vectors: dict[int, torch.Tensor] | None = None, steer_rows=None,
                    do_sample: bool = True, max_batch_tokens: int | None = None, min_new_tokens: int = 0) -> Rollouts:
    """Sample one response per prompt (KV cache on), optionally steering some rows.

    steer_vectors: {layer: (d_model,) vector} added at every position and decode step (shared
    :func:`~qscope_utils.steering.steer`); steer_rows: which batch rows (None = all). Generation
    never stops early on end-of-text for the whole batch before every row is done; each row's
    tokens after its first end-of-text are masked out. Seeded: same seed, same samples.

    max_batch_tokens: None generates all prompts in ONE batch; otherwise consecutive groups of at most
    that many tokens (rows x (prompt + max_new_tokens), :func:`generation_groups`) run one after
    another from one seeded random stream, so memory is bounded. Greedy results do not depend on the
    grouping; sampled ones do (the random stream is drawn per batch), so a profile keeps one budget.

    min_new_tokens: end-of-text is suppressed for the first this-many tokens (HF ``min_new_tokens``; 0 =
    ordinary generation): a minimum response length (:mod:`qscope_utils.regime`).
    """
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ValueError(f"min_new_tokens={min_new_tokens} must lie in 0..max_new_tokens={max_new_tokens}")
    if not prompts:
        raise ValueError("no prompts to sample from")
    torch.manual_seed(seed)
    groups = generation_groups(tokenizer, prompts, max_new_tokens, max_batch_tokens)
    parts = [_rollout_batch(model, tokenizer, [prompts[i] for i in g], max_new_tokens, temperature, top_p,
                            steer_vectors, local_rows(steer_rows, g), do_sample, min_new_tokens) for g in groups]
    return parts[0] if len(parts) == 1 else _concat_rollouts(parts, _pad_id(tokenizer, _eos_ids(model, tokenizer)))


def _rollout_batch(model, tokenizer, prompts, max_new_tokens, temperature, top_p, steer_vectors, steer_rows,
                   do_sample, min_new_tokens: int = 0) -> Rollouts:
    """One left-padded ``generate`` batch (the caller seeds the random stream)."""
    enc, eos, pad = left_padded_batch(model, tokenizer, prompts)
    kw = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad, eos_token_id=sorted(eos),
              use_cache=True)
    if min_new_tokens:
        kw["min_new_tokens"] = min_new_tokens
    if do_sample:
        kw.update(temperature=temperature, top_p=top_p, top_k=0)
    if steer_vectors and steer_rows != []:
        with steer(model, steer_vectors, rows=steer_rows):
            out = model.generate(**enc, **kw)
    else:
        out = model.generate(**enc, **kw)
    P = enc["input_ids"].shape[1]
    gen = out[:, P:]
    if gen.shape[1] < max_new_tokens:  # every row stopped early: pad to a fixed width
        gen = torch.cat([gen, gen.new_full((gen.shape[0], max_new_tokens - gen.shape[1]), pad)], 1)
    rmask, hit = _response_mask(gen, eos)
    texts = [tokenizer.decode(g[m], skip_special_tokens=True) for g, m in zip(gen, rmask)]
    am = torch.cat([enc["attention_mask"], rmask.long()], 1)
    return Rollouts(torch.cat([enc["input_ids"], gen], 1), am, rmask, hit.cpu(), texts, P, max_new_tokens)


def _concat_rollouts(parts: list[Rollouts], pad: int) -> Rollouts:
    """Rollouts of consecutive groups as one: prompts left-padded to the longest group's prompt width."""
    P = max(r.prompt_len for r in parts)
    ids, am = [], []
    for r in parts:
        k = P - r.prompt_len
        ids.append(torch.cat([r.input_ids.new_full((r.input_ids.shape[0], k), pad), r.input_ids], 1))
        am.append(torch.cat([r.attention_mask.new_zeros((r.attention_mask.shape[0], k)), r.attention_mask], 1))
    return Rollouts(torch.cat(ids), torch.cat(am), torch.cat([r.response_mask for r in parts]),
                    torch.cat([r.hit_limit for r in parts]), [t for r in parts for t in r.texts], P,
                    parts[0].max_new_tokens)


# --------------------------------------------------------------------------------------------- features
def repeat_pairs(ids: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(first_pos, last_pos) of every token id occurring at least twice among the valid positions of one row.

    ids, valid: (T,). Returns two (n_pairs,) int64 tensors, first_pos < last_pos, ordered by first_pos.
    """
    pos = valid.nonzero(as_tuple=True)[0]
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for p, t in zip(pos.tolist(), ids[pos].tolist()):
        first.setdefault(t, p)
        last[t] = p
    pairs = sorted((first[t], last[t]) for t in first if last[t] > first[t])
    if not pairs:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    f, l = zip(*pairs)
    return torch.tensor(f), torch.tensor(l)


def make_repeated_contexts(tokenizer, texts: list[str], chunk_tokens: int = 16, n_repeats: int = 4,
                           seed: int = 0) -> list[list[int]]:
    """Token-id contexts ``[bos?] + chunk * n_repeats`` from real texts (one per text long enough).

    The chunk is a random window of ``chunk_tokens`` tokens of the text (without special
    tokens); the BOS the tokenizer prepends (if any) is kept at position 0, where it is excluded
    from feature statistics anyway.
    """
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    out = []
    for t in texts:
        full = tokenizer(t)["input_ids"]
        head = [i for i in full[:1] if i in special]
        body = [i for i in full if i not in special]
        if len(body) < chunk_tokens:
            continue
        s = int(rng.integers(0, len(body) - chunk_tokens + 1))
        out.append(head + body[s:s + chunk_tokens] * n_repeats)
    if not out:
        raise ValueError(f"no text has {chunk_tokens} tokens: lower chunk_tokens or pass longer texts")
    return out


@torch.no_grad()
def repetition_features(model: nn.Module, sae: TopKSAE, layer: int, contexts: list[list[int]], pad_id: int,
                        batch_size: int = 16, exclude_first: bool = True, progress: bool = True) -> pd.DataFrame:
    """Rank SAE features by mean(code at last occurrence - code at first occurrence) of repeated tokens.

    contexts: token-id lists (e.g. :func:`make_repeated_contexts`, or model responses with prompts).
    Returns a DataFrame sorted by ``mean_increase`` (descending) with one row per feature:
    feature, mean_increase, se (standard error over pairs), t (mean / se), mean_first, mean_last,
    fire_first / fire_last (share of pairs where the feature is active), n_pairs.
    """
    d = sae.d_sae
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, dtype=torch.float64)
    sf = torch.zeros(d, dtype=torch.float64)
    sl = torch.zeros(d, dtype=torch.float64)
    cf = torch.zeros(d, dtype=torch.float64)
    cl = torch.zeros(d, dtype=torch.float64)
    n = 0
    for i in tqdm(range(0, len(contexts), batch_size), desc="repetition pairs", disable=not progress, leave=False):
        ids, am = pad_ids(contexts[i:i + batch_size], pad_id)
        h = capture_residuals(model, ids, am, [layer])[layer].float()
        valid = am.bool().clone()
        if exclude_first:
            valid[:, 0] = False
        for b in range(ids.shape[0]):
            fp, lp = repeat_pairs(ids[b], valid[b])
            if fp.numel() == 0:
                continue
            zf = sae.encode(h[b, fp.to(h.device)]).double().cpu()
            zl = sae.encode(h[b, lp.to(h.device)]).double().cpu()
            dz = zl - zf
            s1 += dz.sum(0); s2 += (dz ** 2).sum(0)
            sf += zf.sum(0); sl += zl.sum(0)
            cf += (zf > 0).double().sum(0); cl += (zl > 0).double().sum(0)
            n += fp.numel()
    if n == 0:
        raise ValueError("no token repeats in any context: pass contexts with repeated tokens")
    mean = s1 / n
    var = (s2 / n - mean ** 2).clamp_min(0) * n / max(n - 1, 1)
    se = (var / n).sqrt()
    df = pd.DataFrame({"feature": np.arange(d), "mean_increase": mean.numpy(), "se": se.numpy(),
                       "t": (mean / se.clamp_min(1e-12)).numpy(), "mean_first": (sf / n).numpy(),
                       "mean_last": (sl / n).numpy(), "fire_first": (cf / n).numpy(),
                       "fire_last": (cl / n).numpy(), "n_pairs": n})
    return df.sort_values("mean_increase", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------- causal check
def steering_sweep(model: nn.Module, tokenizer, prompts: list[str], direction: torch.Tensor, layer: int,
                   alphas: Sequence[float], detector: RepetitionDetector, n_samples: int = 4,
                   max_new_tokens: int = 32, temperature: float = 1.0, seed: int = 0, n_boot: int = 1000,
                   do_sample: bool = True, progress: bool = True, max_batch_tokens: int | None = None) -> pd.DataFrame:
    """Repeat ratio of generations steered with ``alpha * direction`` at ``layer``, for each alpha.

    Every alpha uses the same prompts and sampling seeds (alpha = 0 is the unsteered model); greedy
    decoding (``do_sample=False``) uses one response per prompt. Returns a DataFrame: alpha, ratio,
    lo, hi (bootstrap CI over prompts), n_prompts, n_samples, mean_len (response tokens).
    max_batch_tokens: generation token budget per batch (:func:`sample_rollouts`; None = one batch).
    """
    rows = []
    n_samples = n_samples if do_sample else 1
    batch = [p for p in prompts for _ in range(n_samples)]
    for a in tqdm(list(alphas), desc="alpha sweep", disable=not progress, leave=False):
        vec = {layer: float(a) * direction.float()} if a != 0 else None
        ro = sample_rollouts(model, tokenizer, batch, max_new_tokens, temperature, seed=seed, steer_vectors=vec,
                             do_sample=do_sample, max_batch_tokens=max_batch_tokens)
        flags = detector.flags(ro).reshape(len(prompts), n_samples)
        rows.append({"alpha": float(a), **repeat_ratio(flags, n_boot=n_boot, seed=seed),
                     "mean_len": float(ro.lengths.float().mean())})
    return pd.DataFrame(rows)


def pick_alpha(sweep: pd.DataFrame, target: float = 0.5) -> float:
    """Smallest positive alpha whose steered repeat ratio reaches ``target`` (else the one with the highest ratio)."""
    pos = sweep[sweep.alpha > 0].sort_values("alpha")
    if pos.empty:
        raise ValueError("the sweep has no positive alpha")
    hit = pos[pos.ratio >= target]
    return float(hit.alpha.iloc[0]) if not hit.empty else float(pos.loc[pos.ratio.idxmax(), "alpha"])


def pick_alpha_vs_control(sweep: pd.DataFrame, control: pd.DataFrame, min_ratio: float = 0.25,
                          target: float = 0.5) -> dict:
    """Smallest positive alpha at which the feature separates from the random control.

    sweep / control: :func:`steering_sweep` tables (alpha, ratio, lo, hi) of the feature and of the
    random direction of the same norm, on the same prompts. An alpha qualifies when the feature's
    bootstrap interval lies entirely above the control's at that alpha (``lo_feature > hi_control``)
    and its ratio is at least ``min_ratio``. If none qualifies, the :func:`pick_alpha` rule with
    ``target`` is the fallback. Returns {'alpha', 'rule' ('feature CI above control' | 'fallback:
    ratio >= target' ), 'ratio', 'lo', 'hi', 'control_ratio', 'control_lo', 'control_hi',
    'min_ratio', 'target'} (control values NaN where the control has no row at that alpha).
    """
    pos = sweep[sweep.alpha > 0].sort_values("alpha")
    if pos.empty:
        raise ValueError("the sweep has no positive alpha")
    ctl = control.drop_duplicates("alpha").set_index("alpha")[["ratio", "lo", "hi"]].add_prefix("control_")
    m = pos.join(ctl, on="alpha")
    ok = (m.lo > m.control_hi) & (m.ratio >= min_ratio)       # NaN control -> comparison False
    if ok.any():
        a, rule = float(m[ok].alpha.iloc[0]), "feature CI above control"
    else:
        a, rule = pick_alpha(sweep, target), "fallback: ratio >= target"
    r = m[m.alpha == a].iloc[0]
    return {"alpha": a, "rule": rule, "ratio": float(r.ratio), "lo": float(r.lo), "hi": float(r.hi),
            "control_ratio": float(r.control_ratio), "control_lo": float(r.control_lo),
            "control_hi": float(r.control_hi), "min_ratio": float(min_ratio), "target": float(target)}


# --------------------------------------------------------------------------------------------- causal selection
def pool_candidates(feats_by_layer: Mapping[int, pd.DataFrame], m: int) -> pd.DataFrame:
    """The top-``m`` (layer, feature) pairs by mean increase, pooled over the candidate layers.

    feats_by_layer: {layer: :func:`repetition_features` table}. Returns the pooled rows with a
    ``layer`` column and ``rank`` (1 = largest mean increase; ties broken by layer, then feature id).
    """
    if m < 1:
        raise ValueError(f"need m >= 1 candidates, got {m}")
    if not feats_by_layer:
        raise ValueError("no candidate layers")
    pooled = pd.concat([df.assign(layer=int(L)) for L, df in feats_by_layer.items()], ignore_index=True)
    pooled = pooled.sort_values(["mean_increase", "layer", "feature"], ascending=[False, True, True], kind="stable")
    top = pooled.head(m).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    return top


def repetition_candidates(model: nn.Module, saes: Mapping[int, TopKSAE], layers: Sequence[int],
                          contexts: list[list[int]], pad_id: int, m: int,
                          extra: Mapping[int, Sequence[int]] | None = None, **kw
                          ) -> tuple[dict[int, pd.DataFrame], dict[tuple[int, int], torch.Tensor]]:
    """:func:`repetition_features` of every candidate layer and the decoder columns the notebook needs
    later (:func:`candidate_columns` of the top ``m`` and of ``extra[layer]``), layers outer: with a
    loader (``scope.saes``) each layer file is read once and one layer is alive at a time.
    Returns ({layer: feature table}, {(layer, feature): decoder column})."""
    feats, cols = {}, {}
    for L in layers:
        sae = saes[L]
        feats[L] = repetition_features(model, sae, L, contexts, pad_id, **kw)
        cols.update(candidate_columns(sae, L, feats[L], m, (extra or {}).get(L, ())))
        del sae
    return feats, cols


def candidate_columns(sae: TopKSAE, layer: int, feats: pd.DataFrame, m: int, extra: Sequence[int] = ()
                      ) -> dict[tuple[int, int], torch.Tensor]:
    """(layer, feature) -> decoder column of the layer's top-``m`` features by mean increase (ties: lower
    id, the order of :func:`pool_candidates`) and of ``extra``, taken while the layer is loaded:
    the pooled top-``m`` over several layers is among these, so no layer file is read twice."""
    top = feats.sort_values(["mean_increase", "feature"], ascending=[False, True], kind="stable").head(m).feature
    ids = sorted({int(f) for f in top} | {int(f) for f in extra})
    return {(int(layer), f): sae.direction(f).detach().clone() for f in ids}


def screen_candidates(candidates: pd.DataFrame, ratio_fn: Callable[[int | None, int | None, float], float],
                      mults: Sequence[float], unit_fn: Callable[[int, int | None], float]) -> pd.DataFrame:
    """Cheap steering screen: repeat ratio of each candidate steered at ``mult * unit_fn(layer, feature)``.

    candidates: rows with rank, layer, feature (:func:`pool_candidates`).
    ratio_fn(layer, feature, alpha): repeat ratio of generations steered with ``alpha`` times the
    feature's decoder column at ``layer``; feature None = the layer's random control direction;
    ``ratio_fn(None, None, 0.0)`` = the unsteered baseline (called once).
    unit_fn(layer, feature): alpha of mult 1 (feature None: the control's; make both give the same
    perturbation norm). Returns one row per call: candidate, kind ('baseline' | 'random' |
    'feature'), layer, feature (-1 if none), rank (0 if none), mult, alpha, ratio, and for every row
    baseline, control (the random direction's ratio at the same layer and mult), raise (ratio -
    baseline), lift (ratio - control).
    """
    mults = [float(x) for x in mults]
    if not mults or min(mults) <= 0:
        raise ValueError(f"screen multiples must be positive, got {mults}")
    base = float(ratio_fn(None, None, 0.0))
    rows = [{"candidate": "unsteered", "kind": "baseline", "layer": -1, "feature": -1, "rank": 0, "mult": 0.0,
             "alpha": 0.0, "ratio": base}]
    control = {}
    for L in dict.fromkeys(int(x) for x in candidates.layer):
        for mlt in mults:
            a = mlt * float(unit_fn(L, None))
            control[(L, mlt)] = float(ratio_fn(L, None, a))
            rows.append({"candidate": f"random L{L}", "kind": "random", "layer": L, "feature": -1, "rank": 0,
                         "mult": mlt, "alpha": a, "ratio": control[(L, mlt)]})
    for c in candidates.itertuples():
        L, f = int(c.layer), int(c.feature)
        for mlt in mults:
            a = mlt * float(unit_fn(L, f))
            rows.append({"candidate": f"L{L}/f{f}", "kind": "feature", "layer": L, "feature": f, "rank": int(c.rank),
                         "mult": mlt, "alpha": a, "ratio": float(ratio_fn(L, f, a))})
    df = pd.DataFrame(rows)
    df["baseline"] = base
    df["control"] = [control.get((L, m), np.nan) for L, m in zip(df.layer, df.mult)]
    df["raise"] = df.ratio - base
    df["lift"] = df.ratio - df.control
    return df


def select_feature(screen: pd.DataFrame) -> dict:
    """The candidate whose steering raises the repeat ratio most (:func:`screen_candidates` table).

    A screen row *passes* when its ratio exceeds both the unsteered baseline and the random control
    of the same layer and mult. If any row passes, the choice is among passing rows; otherwise among
    all (and ``causal`` is False: no candidate beat the control). Highest ratio wins; ties go to the
    better rank by increase, then the smaller mult. Returns layer, feature, rank, mult, alpha, ratio,
    control, baseline, causal, n_passing (candidates with a passing row).
    """
    f = screen[screen.kind == "feature"].copy()
    if f.empty:
        raise ValueError("the screen has no feature rows")
    f["passes"] = (f.ratio > f.baseline) & (f.ratio > f.control)
    pool = f[f.passes] if f.passes.any() else f
    best = pool.sort_values(["ratio", "rank", "mult"], ascending=[False, True, True], kind="stable").iloc[0]
    return {"layer": int(best.layer), "feature": int(best.feature), "rank": int(best["rank"]), "mult": float(best.mult),
            "alpha": float(best.alpha), "ratio": float(best.ratio), "control": float(best.control),
            "baseline": float(best.baseline), "causal": bool(f.passes.any()),
            "n_passing": int(f[f.passes]["rank"].nunique())}


def screen_ratio_fn(model: nn.Module, tokenizer, prompts: list[str], directions: Mapping[tuple[int, int | None], torch.Tensor],
                    detector: RepetitionDetector, n_samples: int = 2, max_new_tokens: int = 32,
                    temperature: float = 1.0, seed: int = 0,
                    max_batch_tokens: int | None = None) -> Callable[[int | None, int | None, float], float]:
    """A ``ratio_fn`` for :func:`screen_candidates`: ONE sampled rollout set (all prompts x samples) per call.

    directions: {(layer, feature): vector}, feature None = the layer's random control. Same prompts
    and seed on every call, so candidates differ only by their steering vector. max_batch_tokens:
    generation token budget (:func:`sample_rollouts`; None = one batch).
    """
    batch = [p for p in prompts for _ in range(n_samples)]

    def ratio(layer, feature, alpha):
        vec = None if layer is None or alpha == 0 else {layer: float(alpha) * directions[(layer, feature)].float()}
        ro = sample_rollouts(model, tokenizer, batch, max_new_tokens, temperature, seed=seed, steer_vectors=vec,
                             max_batch_tokens=max_batch_tokens)
        return float(detector.flags(ro).mean())

    return ratio


# --------------------------------------------------------------------------------------------- config
@dataclass
class RepetitionConfig:
    """Sizes of the repetition-feature search, the steering sweep and the repeat-ratio evaluation.

    layer: SAE layer of the repetition feature (None = middle layer of the group); candidate_layers:
    layers searched for candidates (None = just ``layer``).
    n_candidates: top-m features by mean increase (pooled over candidate layers) that the steering
    screen tries; screen_mults: their alphas, as multiples of the layer's median residual norm over
    the decoder column's norm (the random control gets the same perturbation norm);
    n_screen_prompts x screen_samples: TRAINING-split arithmetic prompts of the screen.
    detector: thresholds in tokens; chunk_tokens / n_repeats: constructed repeated contexts;
    alphas: steering strengths of the causal sweep (raw multiples of W_dec[:, f]);
    alpha_min_ratio: the SAE arm's alpha is the smallest sweep alpha whose repeat ratio on training
    prompts is >= this AND whose bootstrap CI lies above the random control's
    (:func:`pick_alpha_vs_control`); alpha_target: the fallback rule's target (:func:`pick_alpha`);
    n_sweep_prompts: arithmetic prompts of the sweep; n_eval_prompts: held-out text prefixes;
    n_samples: sampled responses per prompt. Generation length and temperature are the DAPO run's
    (``DAPOConfig.max_new_tokens`` = L_max, ``temperature``), so the detector sees what RL sees.
    """

    layer: int | None = None
    candidate_layers: tuple[int, ...] | None = None
    n_candidates: int = 8
    screen_mults: tuple[float, ...] = (1.0, 2.0)
    n_screen_prompts: int = 16
    screen_samples: int = 2
    detector: RepetitionDetector = field(default_factory=RepetitionDetector)
    n_contexts: int = 128
    chunk_tokens: int = 16
    n_repeats: int = 4
    alphas: tuple[float, ...] = (-16.0, -8.0, -4.0, 0.0, 4.0, 8.0, 16.0, 24.0, 32.0)
    alpha_min_ratio: float = 0.25
    alpha_target: float = 0.5
    n_sweep_prompts: int = 32
    n_eval_prompts: int = 48
    n_samples: int = 4
    n_boot: int = 1000

    @classmethod
    def for_profile(cls, name: str) -> "RepetitionConfig":
        if name == "smoke":
            return cls(layer=1, n_candidates=3, n_screen_prompts=4, screen_samples=1,
                       detector=RepetitionDetector(min_span=8, max_unit=4), n_contexts=16, chunk_tokens=8,
                       n_repeats=3, alphas=(-4.0, 0.0, 4.0), n_sweep_prompts=4, n_eval_prompts=6, n_samples=2,
                       n_boot=200)
        if name == "mini":
            # candidates from layers 1-3 (of 4): which layer's features make the model loop changed between
            # builds of the mini scope, so the steering screen decides (notebook 07, 07_feature_screen.csv)
            return cls(candidate_layers=(1, 2, 3), n_candidates=8)
        if name == "paper":
            # long generations: a loop must cover 256 tokens of the tail and still run at the limit
            return cls(n_candidates=8, n_screen_prompts=32, screen_samples=2,
                       detector=RepetitionDetector(min_span=256, max_unit=64, min_repeats=4.0), n_contexts=2000,
                       chunk_tokens=64, n_repeats=4, alphas=(-20.0, -5.0, 0.0, 5.0, 20.0, 100.0),
                       n_sweep_prompts=100, n_eval_prompts=250, n_samples=8, n_boot=2000)
        raise ValueError(f"unknown profile {name!r}: choose mini, smoke or paper")
