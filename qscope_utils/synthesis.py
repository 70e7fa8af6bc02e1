"""§6 feature-driven data synthesis: generators, the per-feature synthesis loop with representation-level
verification, and the two matched-budget baselines (random safety synthesis, natural sampling).

Generators (one interface, :class:`Generator`): a :class:`GenRequest` carries the few-shot examples
(a feature's top-activating texts, or random seed texts), optionally the target feature, its steering
strength and a short description; ``generate(req)`` returns ``req.n`` candidate texts.

* :class:`LocalGenerator`: the profile's own model. Prompt = the examples as a few-shot prefix; with a
  feature and alpha != 0 the generation is steered with ``h <- h + alpha * W_dec[:, f]`` at the SAE
  layer (shared :func:`qscope_utils.steering.steer`, every position and decode step).
* :class:`ChatEndpointGenerator` (:mod:`qscope_utils.endpoint`): an OpenAI-compatible
  ``/v1/chat/completions`` endpoint over HTTP given a base URL, key and model (the report used GPT-4 /
  GPT-3.5), with retries, a time budget and bounded concurrency. It cannot steer: the feature enters
  only through the examples and the description.

Verification: a candidate is kept only if, encoded by the plain (unsteered) model, its per-text max
activation of the target feature is > eps. Candidates that copy the prompt (share of char 12-grams
found in the examples > ``max_copy``), are degenerate (mostly repeated n-grams) or are refusals
(:func:`qscope_utils.endpoint.is_refusal`, pattern configurable via ``refusal=``) are rejected too,
before anything is encoded or counted as synthesised data.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import numpy as np
import scipy.sparse as sp
from tqdm.auto import tqdm

from .endpoint import DEFAULT_INSTRUCTION, DEFAULT_SYSTEM, REFUSAL_PATTERN, ChatEndpointGenerator, is_refusal

__all__ = ["GenRequest", "Generator", "LocalGenerator", "ChatEndpointGenerator", "few_shot_prompt", "copy_share",
           "is_degenerate", "verify", "SynthResult", "feature_synthesis", "random_synthesis", "natural_sampling",
           "natural_sample_index", "round_robin", "cut_tokens", "generate_many", "is_refusal", "REFUSAL_PATTERN", "DEFAULT_SYSTEM",
           "DEFAULT_INSTRUCTION"]


# ============================================================================ requests and generators

@dataclass
class GenRequest:
    """What to generate: ``n`` texts like ``examples``; optionally aimed at SAE ``feature`` with steering
    strength ``alpha`` (raw units of ``W_dec[:, f]``) and a human-readable ``description``."""

    examples: list[str]
    n: int = 1
    feature: int | None = None
    alpha: float = 0.0
    description: str = ""
    seed: int = 0


class Generator(Protocol):
    name: str
    supports_steering: bool

    def generate(self, req: GenRequest) -> list[str]:
        ...


def few_shot_prompt(examples: Sequence[str], sep: str = "\n\n") -> str:
    """The few-shot prefix for a base model: examples separated by blank lines, ending with a separator."""
    return sep.join(e.strip() for e in examples) + sep


def cut_tokens(tokenizer, text: str, n_tokens: int) -> str:
    """``text`` cut to its first ``n_tokens`` tokens (decoded back to a string)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


class LocalGenerator:
    """The profile's own causal LM as generator, optionally steered toward the target feature.

    model/tokenizer: the backbone; sae/layer: the SAE whose decoder column gives the steering
    direction; candidates are the continuation up to the first blank line (the examples' separator).
    """

    name = "local"
    supports_steering = True

    def __init__(self, model, tokenizer, sae=None, layer: int | None = None, max_new_tokens: int = 40,
                 temperature: float = 1.0, top_p: float = 0.95, batch_size: int = 16):
        self.model, self.tokenizer, self.sae, self.layer = model, tokenizer, sae, layer
        self.max_new_tokens, self.temperature, self.top_p, self.batch_size = max_new_tokens, temperature, top_p, batch_size

    def generate(self, req: GenRequest) -> list[str]:
        return self.generate_many([req])[0]

    def generate_many(self, reqs: Sequence[GenRequest]) -> list[list[str]]:
        """Several requests in shared batches (at most ``batch_size`` rows): each request's rows are
        steered with its own feature vector (one :func:`steering.steer` hook per request, restricted
        to its rows). Sampling is seeded by the first request of each batch."""
        from contextlib import ExitStack

        from .generation import generate
        from .steering import feature_vector, steer

        out: list[list[str]] = []
        for chunk in _chunks(list(reqs), self.batch_size):
            prompts, spans = [], []
            for q in chunk:
                spans.append((len(prompts), len(prompts) + q.n))
                prompts += [few_shot_prompt(q.examples)] * q.n
            with ExitStack() as stack:
                for q, (a, b) in zip(chunk, spans):
                    if q.feature is not None and q.alpha != 0:
                        if self.sae is None or self.layer is None:
                            raise ValueError("steering needs LocalGenerator(sae=..., layer=...)")
                        vec = feature_vector(self.sae, int(q.feature), q.alpha)
                        stack.enter_context(steer(self.model, {self.layer: vec}, rows=list(range(a, b))))
                texts = generate(self.model, self.tokenizer, prompts, max_new_tokens=self.max_new_tokens,
                                 do_sample=True, temperature=self.temperature, top_p=self.top_p, seed=chunk[0].seed,
                                 batch_size=len(prompts))
            out += [[t.split("\n\n")[0].strip() for t in texts[a:b]] for a, b in spans]
        return out


def _chunks(reqs: list[GenRequest], max_rows: int) -> list[list[GenRequest]]:
    """Consecutive groups of requests with at most ``max_rows`` rows in all (a bigger request alone)."""
    out, cur, rows = [], [], 0
    for q in reqs:
        if cur and rows + q.n > max_rows:
            out.append(cur)
            cur, rows = [], 0
        cur.append(q)
        rows += q.n
    if cur:
        out.append(cur)
    return out


def generate_many(gen, reqs: Sequence[GenRequest]) -> list[list[str]]:
    """``gen.generate_many(reqs)`` when the backend batches requests, else one ``generate`` per request."""
    if hasattr(gen, "generate_many"):
        return gen.generate_many(list(reqs))
    return [gen.generate(q) for q in reqs]


# ============================================================================ filters and verification

def _grams(text: str, n: int) -> set[str]:
    return {text[i:i + n] for i in range(max(len(text) - n + 1, 0))}


def copy_share(candidate: str, examples: Sequence[str], n: int = 12) -> float:
    """Share of the candidate's character n-grams that occur in the examples (1.0 = a verbatim copy)."""
    g = _grams(candidate, n)
    if not g:
        return 1.0 if any(candidate.strip() and candidate.strip() in e for e in examples) else 0.0
    pool = set().union(*(_grams(e, n) for e in examples)) if examples else set()
    return len(g & pool) / len(g)


def is_degenerate(text: str, min_chars: int = 8, n: int = 4, min_unique: float = 0.3) -> bool:
    """Too short, or its character n-grams are mostly repeats (share of distinct n-grams < ``min_unique``)."""
    t = text.strip()
    if len(t) < min_chars:
        return True
    grams = [t[i:i + n] for i in range(len(t) - n + 1)]
    return len(set(grams)) / max(len(grams), 1) < min_unique


def verify(max_acts: sp.spmatrix, feature: int, eps: float | np.ndarray = 0.0) -> np.ndarray:
    """(n_candidates,) bool: does each candidate fire ``feature`` (per-text max activation > eps, or >
    ``eps[feature]`` for per-feature thresholds)?"""
    col = sp.csc_matrix(max_acts)[:, [int(feature)]].toarray().ravel()
    return col > (eps[int(feature)] if np.ndim(eps) else eps)


# ============================================================================ synthesis loops

@dataclass
class SynthResult:
    """Kept texts in budget order with their targets (-1 = untargeted) and max-activation rows (CSR).

    log: one row per (feature, round) with generated / rejected-copy / rejected-degenerate /
    fired / kept counts; n_generated: candidates produced in all.
    """

    texts: list[str]
    targets: list[int]
    max_acts: sp.csr_matrix
    log: list[dict] = field(default_factory=list)
    n_generated: int = 0

    def head(self, b: int) -> "SynthResult":
        return SynthResult(self.texts[:b], self.targets[:b], self.max_acts[:b], self.log, self.n_generated)


def _filter(cands: list[str], examples: Sequence[str], max_copy: float,
            refusal: str | re.Pattern | None = REFUSAL_PATTERN) -> tuple[list[str], dict[str, int]]:
    """Drop refusals, degenerate candidates and copies of the prompt (or of each other).

    Returns (kept, counts) with counts {"refusal", "degenerate", "copy"} of the dropped ones."""
    out, seen = [], set()
    n = {"refusal": 0, "degenerate": 0, "copy": 0}
    for c in cands:
        if is_refusal(c, refusal):
            n["refusal"] += 1
        elif is_degenerate(c):
            n["degenerate"] += 1
        elif copy_share(c, examples) > max_copy or c in seen:
            n["copy"] += 1
        else:
            seen.add(c)
            out.append(c)
    return out, n


def round_robin(per_feature: dict[int, list[int]], order: Sequence[int]) -> list[tuple[int, int]]:
    """(feature, j) pairs: the first kept example of every feature in ``order``, then the second, ...

    So that a budget prefix covers as many distinct targets as possible.
    """
    out, depth = [], max((len(v) for v in per_feature.values()), default=0)
    for j in range(depth):
        out += [(f, j) for f in order if j < len(per_feature.get(f, []))]
    return out


def feature_synthesis(gen: Generator, encode: Callable[[list[str]], sp.csr_matrix], missing: Sequence[int],
                      contexts: dict[int, list[str]], budget: int, per_feature: int | None = None,
                      n_candidates: int = 8, alphas: dict[int, Sequence[float]] | Sequence[float] = (0.0,),
                      n_rounds: int | None = None, descriptions: dict | None = None, eps: float | np.ndarray = 0.0,
                      max_copy: float = 0.5, n_examples: int = 2, seed: int = 0,
                      progress: bool = True, refusal: str | re.Pattern | None = REFUSAL_PATTERN) -> SynthResult:
    """Feature-driven synthesis for the missing targets, with representation-level verification.

    For round r = 0, 1, ... ``n_rounds - 1`` and each missing feature f still below ``per_feature`` kept
    examples (None: ceil(budget / |missing|)), ask ``gen`` for ``n_candidates`` texts prompted with
    ``n_examples`` of f's top-activating ``contexts`` and steered with alpha = ``alphas[f][r mod len]``
    (a list shared by all features, or one per feature), filter copies and degenerate texts, encode the
    survivors with ``encode`` (texts -> CSR max activations) and keep those that fire f (refusals,
    matched by ``refusal``, never count: None disables that filter). A feature that
    fired nothing during a whole cycle of its alphas is given up. Stops when the rounds run out or
    ``budget`` examples are kept; kept examples are ordered round-robin over features (see
    :func:`round_robin`) and cut to ``budget``. n_rounds defaults to one cycle of the longest schedule.
    """
    rng = random.Random(seed)
    missing = [int(f) for f in missing]
    sched = alphas if isinstance(alphas, dict) else {f: list(alphas) for f in missing}
    cycle = max((len(v) for v in sched.values()), default=1)
    n_rounds = cycle if n_rounds is None else n_rounds
    if per_feature is None:
        per_feature = -(-budget // max(len(missing), 1))
    kept: dict[int, list[tuple[str, sp.csr_matrix]]] = {f: [] for f in missing}
    fired_any = {f: 0 for f in missing}
    log, n_gen = [], 0
    bar = tqdm(total=n_rounds, desc="feature synthesis", disable=not progress, leave=False)
    for r in range(n_rounds):
        bar.update(1)
        if sum(len(v) for v in kept.values()) >= budget:
            break
        active = [f for f in missing if len(kept[f]) < per_feature and sched[f] and contexts.get(f)
                  and not (r >= len(sched[f]) and fired_any[f] == 0)]   # silent for a whole cycle: given up
        if not active:
            break
        reqs = []
        for f in active:
            ex = rng.sample(contexts[f], min(n_examples, len(contexts[f])))
            reqs.append(GenRequest(ex, n_candidates, feature=f, alpha=float(sched[f][r % len(sched[f])]),
                                   description=(descriptions or {}).get(f, ""), seed=rng.randrange(2 ** 31)))
        outs = generate_many(gen, reqs)
        filtered = [_filter(c, contexts[q.feature], max_copy, refusal) for q, c in zip(reqs, outs)]
        flat = [t for ok, _ in filtered for t in ok]
        M_all = encode(flat) if flat else None
        start = 0
        for q, cands, (ok, dropped) in zip(reqs, outs, filtered):
            f = q.feature
            M = M_all[start:start + len(ok)] if ok else None
            start += len(ok)
            fire = verify(M, f, eps) if ok else np.zeros(0, bool)
            n_gen += len(cands)
            fired_any[f] += int(fire.sum())
            for i in np.nonzero(fire)[0]:
                if len(kept[f]) < per_feature:
                    kept[f].append((ok[i], M[i]))
            log.append({"feature": f, "round": r, "alpha": q.alpha, "generated": len(cands), **dropped,
                        "fired": int(fire.sum()), "kept_total": len(kept[f])})
    bar.close()
    order = round_robin({f: list(range(len(v))) for f, v in kept.items()}, missing)[:budget]
    texts = [kept[f][j][0] for f, j in order]
    rows = [kept[f][j][1] for f, j in order]
    M = sp.vstack(rows).tocsr() if rows else sp.csr_matrix((0, 0))
    return SynthResult(texts, [f for f, _ in order], M, log, n_gen)


def random_synthesis(gen: Generator, encode: Callable[[list[str]], sp.csr_matrix], seed_texts: Sequence[str],
                     budget: int, n_candidates: int = 8, n_examples: int = 2, max_copy: float = 0.5, seed: int = 0,
                     max_calls: int | None = None, requests_per_call: int = 8, progress: bool = True,
                     refusal: str | re.Pattern | None = REFUSAL_PATTERN) -> SynthResult:
    """Random safety-themed synthesis: the same generator prompted with random unsafe seed texts, no
    feature targeting, no steering, no verification (refusal / copy / degenerate filters only) until ``budget``
    texts are kept or ``max_calls`` prompts were used (``requests_per_call`` prompts per batch)."""
    if not seed_texts:
        raise ValueError("random synthesis needs unsafe seed texts")
    rng = random.Random(seed)
    texts, n_gen, calls = [], 0, 0
    max_calls = max_calls if max_calls is not None else 4 * (budget // max(n_candidates, 1) + 1)
    bar = tqdm(total=budget, desc="random synthesis", disable=not progress, leave=False)
    while len(texts) < budget and calls < max_calls:
        n_req = min(requests_per_call, max_calls - calls)
        reqs = [GenRequest(rng.sample(list(seed_texts), min(n_examples, len(seed_texts))), n_candidates,
                           seed=rng.randrange(2 ** 31)) for _ in range(n_req)]
        calls += n_req
        for q, cands in zip(reqs, generate_many(gen, reqs)):
            n_gen += len(cands)
            ok, _ = _filter(cands, q.examples, max_copy, refusal)
            ok = [c for c in ok if c not in texts][: budget - len(texts)]
            texts += ok
            bar.update(len(ok))
    bar.close()
    M = encode(texts) if texts else sp.csr_matrix((0, 0))
    return SynthResult(texts, [-1] * len(texts), M, [{"calls": calls}], n_gen)


def natural_sample_index(n_pool: int, budget: int, seed: int = 0) -> list[int]:
    """Positions of ``budget`` texts drawn without replacement from a pool of ``n_pool`` (seeded); the
    same draw as :func:`natural_sampling` (so rows of an already-encoded pool can be reused)."""
    if budget > n_pool:
        raise ValueError(f"natural pool has {n_pool} texts, fewer than the budget {budget}: raise natural_pool_max")
    return random.Random(seed).sample(range(n_pool), budget)


def natural_sampling(pool: Sequence[str], budget: int, seed: int = 0) -> list[str]:
    """``budget`` texts drawn without replacement from the unlabelled pool (seeded)."""
    return [pool[i] for i in natural_sample_index(len(pool), budget, seed)]
