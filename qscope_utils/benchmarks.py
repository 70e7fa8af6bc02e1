"""Benchmarks for §4: the mini benchmarks, their evaluation on the model zoo, and paper-profile loaders.

Mini benchmarks (all from data the pretraining never saw: the corpus's ``heldout`` split and
held-out generated arithmetic, :mod:`qscope_utils.mini.tasks`). Each plays the role of a report
benchmark:

=============  ===============================================  ========  ===============
name           items                                            scoring   report analogue
=============  ===============================================  ========  ===============
gsm            word problems, "Question: ... Answer:"           exact     GSM8K
math           bare expressions, "Compute 7 * 6 + 2 ="          exact     MATH
code           next line of held-out Python stdlib code         LL-MC     MBPP / EvalPlus
cloze-<lang>   next words of held-out prose (en ru fr de zh)    LL-MC     C-Eval / CMMLU / MMMLU
poem-lzh       next line of a held-out Tang / Song poem         LL-MC     (classical Chinese)
general        mixed: cloze in every language, code, numeric    LL-MC     MMLU (the control)
               answers to word problems as choices
=============  ===============================================  ========  ===============

exact = greedy generation, then :func:`qscope_utils.mini.tasks.score_answer` (first integer of the
completion equals the answer). LL-MC = log-likelihood multiple choice: the choice with the highest
mean per-token log-probability of the continuation given the prompt is the model's answer.
Distractors: cloze and poem use the correct continuation with its words (CJK: characters) reordered
(same tokens: only fluency tells them apart, a BLiMP-style minimal-pair test that tiny models pass
increasingly with training); code and the general control use continuations of OTHER items with the
same length / indentation (topic coherence). Length alone never gives the answer away.

The "sample" of a benchmark item for the feature side (F(x) at the last token) is its ``prompt``.

Paper profile: :class:`HFBenchmarkSpec` / :func:`load_hf_benchmark` load a benchmark's prompts through
its :mod:`qscope_utils.sources` adapter (per-subject / per-language configs concatenated; MMLU-Redux is
the report's 3,000-item v1); :data:`PAPER_BENCHMARKS` holds the 15 hub-hosted defaults and
:data:`USER_BENCHMARKS` the 2 without a verifiable hub copy (KOR-Bench, ICLEval: pass a file). The
prompt templates are ours (the report gives none). :func:`read_correctness` reads per-sample results
(CSV / Parquet, long or wide) produced by any evaluation harness.
"""
from __future__ import annotations

import json
import random
import re
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .batching import DEFAULT_CHUNK_TOKENS, chosen_logprobs
from .hooks import pad_ids

__all__ = ["Item", "Benchmark", "gsm_benchmark", "math_benchmark", "cloze_benchmark", "poem_benchmark",
           "code_benchmark", "general_benchmark", "mini_benchmarks", "CLOZE_LANGS", "score_choices",
           "exact_match", "evaluate_benchmark", "load_zoo", "correctness_matrices", "HFBenchmarkSpec",
           "PAPER_BENCHMARKS", "USER_BENCHMARKS", "ALL_BENCHMARKS", "load_hf_benchmark", "read_correctness", "align_correctness"]

CLOZE_LANGS = ("en", "ru", "fr", "de", "zh")
_CJK_LANGS = ("zh", "lzh", "ja")


@dataclass(frozen=True)
class Item:
    """One benchmark item.

    prompt: text fed to the model (and whose last token gives F(x)); answer: integer target of an
    exact-match item; choices / label: continuations and the index of the correct one for an LL-MC
    item; uid: stable id (used to align per-sample results read from files).
    """

    prompt: str
    answer: int | None = None
    choices: tuple[str, ...] = ()
    label: int = -1
    uid: str = ""


@dataclass
class Benchmark:
    """A named list of items; ``kind`` is 'exact', 'choice' or 'external' (scored elsewhere)."""

    name: str
    kind: str
    items: list[Item]
    role: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def prompts(self) -> list[str]:
        return [it.prompt for it in self.items]

    @property
    def uids(self) -> list[str]:
        return [it.uid for it in self.items]

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "role": self.role, "n_items": len(self),
                "n_choices": len(self.items[0].choices) if self.items and self.items[0].choices else 0, **self.meta}


# ----------------------------------------------------------------------------- mini: arithmetic

def _arith(style: str, name: str, role: str, n: int, seed: int) -> Benchmark:
    from .mini.tasks import make_problems

    probs = make_problems(n, style=style, seed=seed, split="heldout")
    if len(probs) < n:
        warnings.warn(f"{name}: only {len(probs)} held-out problems available (asked for {n})")
    items = [Item(p.prompt, answer=p.answer, uid=f"{name}-{i}") for i, p in enumerate(probs)]
    return Benchmark(name, "exact", items, role, {"source": f"qscope_utils.mini.tasks ({style}, heldout)",
                                                  "split": "heldout", "seed": seed})


def gsm_benchmark(n: int = 150, seed: int = 0) -> Benchmark:
    """GSM8K-like held-out word problems, exact match."""
    return _arith("gsm", "gsm", "GSM8K", n, seed)


def math_benchmark(n: int = 150, seed: int = 0) -> Benchmark:
    """MATH-like held-out bare expressions, exact match."""
    return _arith("math", "math", "MATH", n, seed)


# ----------------------------------------------------------------------------- mini: corpus items

def _docs(profile, min_docs: int, split: str = "heldout", **filt):
    """Held-out documents; falls back to the train split (recorded) only when the held-out split is empty."""
    from .mini.corpus import load_corpus

    docs = load_corpus(profile, split=split, **filt)
    if len(docs) >= min_docs:
        return docs, split
    train = load_corpus(profile, split="train", **filt)
    if not train and not docs:
        raise ValueError(f"the {getattr(profile, 'name', profile)} corpus has no documents for {filt}: rebuild it "
                         f"or drop this benchmark")
    warnings.warn(f"only {len(docs)} held-out documents for {filt}: adding train documents (the benchmark is then "
                  f"not fully held out; recorded in its meta)")
    return docs + train, "heldout+train"


def _units(text: str, lang: str) -> tuple[list[str], str]:
    """Split text into scoring units (words, or characters for CJK) and the joiner that rebuilds it."""
    if lang in _CJK_LANGS:
        return [c for c in re.sub(r"\s+", "", text)], ""
    return text.split(), " "


def _pick_distractors(rng: random.Random, pool: Mapping[object, list[tuple[int, str]]], key, own: int,
                      correct: str, k: int, fallback: list[tuple[int, str]]) -> list[str] | None:
    """k distinct continuations from other sources (group ``key`` first, then ``fallback``)."""
    out: list[str] = []
    for cands in (pool.get(key, []), fallback):
        cands = list(cands)
        rng.shuffle(cands)
        for src, text in cands:
            if len(out) == k:
                break
            if src != own and text != correct and text not in out:
                out.append(text)
    return out if len(out) == k else None


def _mc_items(name: str, raw: list[tuple[int, str, str, object]], n: int, n_choices: int, seed: int,
              fallback_any: bool = True) -> list[Item]:
    """Turn (source id, prompt, correct continuation, length key) into LL-MC items with shuffled choices."""
    rng = random.Random(f"{name}:choices:{seed}")
    pool: dict[object, list[tuple[int, str]]] = {}
    for src, _, cont, key in raw:
        pool.setdefault(key, []).append((src, cont))
    everything = [(s, c) for s, _, c, _ in raw] if fallback_any else []
    items = []
    for src, prompt, cont, key in raw:
        if len(items) == n:
            break
        dis = _pick_distractors(rng, pool, key, src, cont, n_choices - 1, everything)
        if dis is None:
            continue
        choices = dis + [cont]
        rng.shuffle(choices)
        items.append(Item(prompt, choices=tuple(choices), label=choices.index(cont), uid=f"{name}-{len(items)}"))
    return items


_PUNCT = set("，。！？；：、,.!?;:")


def _shuffled(text: str, sep: str, rng: random.Random) -> str | None:
    """The units of ``text`` (words, or CJK characters) in another order; punctuation stays in place."""
    lead = sep if sep and text.startswith(sep) else ""
    units = text[len(lead):].split(sep) if sep else list(text)
    movable = [i for i, u in enumerate(units) if u not in _PUNCT]
    vals = [units[i] for i in movable]
    if len(set(vals)) < 2:
        return None
    for _ in range(20):
        rng.shuffle(vals)
        out = list(units)
        for i, v in zip(movable, vals):
            out[i] = v
        cand = lead + (sep.join(out) if sep else "".join(out))
        if cand != text:
            return cand
    return None


def _shuffle_items(name: str, raw: list[tuple], n: int, n_choices: int, seed: int, sep: str) -> list[Item]:
    """LL-MC items whose distractors are the correct continuation with its units reordered: the same
    tokens, so only word order / fluency separates the choices (a BLiMP-style minimal-pair test)."""
    rng = random.Random(f"{name}:shuffle:{seed}")
    items = []
    for _, prompt, cont, _ in raw:
        if len(items) == n:
            break
        dis: list[str] = []
        for _ in range(10 * n_choices):
            c = _shuffled(cont, sep, rng)
            if c is not None and c not in dis and c != cont:
                dis.append(c)
            if len(dis) == n_choices - 1:
                break
        if len(dis) < n_choices - 1:
            continue
        choices = dis + [cont]
        rng.shuffle(choices)
        items.append(Item(prompt, choices=tuple(choices), label=choices.index(cont), uid=f"{name}-{len(items)}"))
    return items


def _make_items(name: str, raw: list[tuple], n: int, n_choices: int, seed: int, distractors: str,
                sep: str) -> list[Item]:
    if distractors == "other":
        return _mc_items(name, raw, n, n_choices, seed)
    if distractors == "shuffle":
        return _shuffle_items(name, raw, n, n_choices, seed, sep)
    raise ValueError(f"distractors must be 'shuffle' or 'other', not {distractors!r}")


def _cloze_raw(docs, lang: str, n: int, seed: int, ctx_units: int, cont_units: int, tag: str) -> list[tuple]:
    """Cut held-out documents into (doc id, prompt, continuation, length key) cloze candidates."""
    rng = random.Random(f"{tag}:{seed}")
    order = list(range(len(docs)))
    rng.shuffle(order)
    min_ctx = max(3, ctx_units // 4)
    raw, seen = [], set()
    for rounds in range(8):                      # several cuts per document when documents are few
        for di in order:
            units, sep = _units(docs[di].text, lang)
            if len(units) < min_ctx + cont_units:
                continue
            cut = rng.randint(min_ctx, len(units) - cont_units)
            if (di, cut) in seen:
                continue
            seen.add((di, cut))
            prompt = sep.join(units[max(0, cut - ctx_units):cut])
            cont = sep + sep.join(units[cut:cut + cont_units])
            raw.append((di, prompt, cont, cont_units))
            if len(raw) >= 2 * n:
                return raw
    return raw


def cloze_benchmark(profile, lang: str, n: int = 150, n_choices: int = 4, seed: int = 0, ctx_units: int | None = None,
                    cont_units: int | None = None, name: str | None = None, distractors: str = "shuffle") -> Benchmark:
    """Next-words cloze on held-out prose of one language (CJK: next characters), LL multiple choice.

    Context: up to ``ctx_units`` words (CJK: characters) before a random cut; correct choice: the next
    ``cont_units`` units. ``distractors``: 'shuffle' (the correct units reordered: same tokens, only
    fluency tells them apart) or 'other' (same-length continuations of other documents: topic coherence).
    """
    cjk = lang in _CJK_LANGS
    ctx_units = ctx_units or (32 if cjk else 16)
    cont_units = cont_units or (6 if cjk else 4)
    name = name or f"cloze-{lang}"
    docs, split = _docs(profile, 8, lang=lang)
    raw = _cloze_raw(docs, lang, n, seed, ctx_units, cont_units, name)
    items = _make_items(name, raw, n, n_choices, seed, distractors, "" if cjk else " ")
    return Benchmark(name, "choice", items, "C-Eval / CMMLU / MMMLU (language-specific knowledge)",
                     {"source": f"mini corpus lang={lang}", "split": split, "seed": seed, "n_docs": len(docs),
                      "ctx_units": ctx_units, "cont_units": cont_units, "distractors": distractors})


_POEM_META = re.compile(r"《|》|作者|题目")


def _poem_lines(text: str) -> tuple[str, list[str]]:
    """(header, verse lines) of a poem document: title/author lines form the header."""
    lines = [l.strip() for l in text.split("\n") if l.strip()]
    head = [l for l in lines if _POEM_META.search(l)]
    body = [l for l in lines if not _POEM_META.search(l)]
    return "\n".join(head), body


def poem_benchmark(profile, n: int = 150, n_choices: int = 4, seed: int = 0, max_per_poem: int = 6,
                   distractors: str = "shuffle") -> Benchmark:
    """Classical-poem completion (lzh): given the title and the preceding verse lines, choose the next
    line. ``distractors``: 'shuffle' (the line's characters reordered, punctuation in place) or 'other'
    (lines of other poems with the same number of characters, i.e. the same metre)."""
    docs, split = _docs(profile, 4, lang="lzh")
    rng = random.Random(f"poem-lzh:{seed}")
    raw = []
    for di, d in enumerate(docs):
        head, body = _poem_lines(d.text)
        idx = list(range(1, len(body)))
        rng.shuffle(idx)
        for i in sorted(idx[:max_per_poem]):
            prompt = "\n".join([head] + body[:i]).strip() + "\n"
            raw.append((di, prompt, body[i], len(body[i])))
    rng.shuffle(raw)
    items = _make_items("poem-lzh", raw, n, n_choices, seed, distractors, "")
    return Benchmark("poem-lzh", "choice", items, "classical-Chinese completion",
                     {"source": "mini corpus lang=lzh (Tang 300 / Song 100)", "split": split, "seed": seed,
                      "n_docs": len(docs), "distractors": distractors})


def _code_raw(docs, seed: int, ctx_lines: int, tag: str) -> list[tuple]:
    rng = random.Random(f"{tag}:{seed}")
    raw = []
    for di, d in enumerate(docs):
        lines = [l.rstrip() for l in d.text.split("\n")]
        ok = [i for i, l in enumerate(lines) if len(l.strip()) >= 8 and sum(1 for x in lines[:i] if x.strip()) >= 3]
        rng.shuffle(ok)
        for i in ok[:12]:
            ctx = [l for l in lines[max(0, i - ctx_lines):i]]
            indent = len(lines[i]) - len(lines[i].lstrip())
            raw.append((di, "\n".join(ctx) + "\n", lines[i], indent))
    rng.shuffle(raw)
    return raw


def code_benchmark(profile, n: int = 150, n_choices: int = 4, seed: int = 0, ctx_lines: int = 6) -> Benchmark:
    """Next line of held-out Python code given the ``ctx_lines`` lines before it; distractors are lines of
    other files with the same indentation."""
    docs, split = _docs(profile, 3, lang="code")
    items = _mc_items("code", _code_raw(docs, seed, ctx_lines, "code"), n, n_choices, seed)
    return Benchmark("code", "choice", items, "MBPP / EvalPlus / MultiPL-E",
                     {"source": "mini corpus lang=code (Python stdlib)", "split": split, "seed": seed,
                      "n_docs": len(docs)})


def _numeric_choice_raw(n: int, seed: int) -> list[tuple]:
    """Word problems with numeric choices: (problem id, prompt, ' answer', key) + distractor numbers."""
    from .mini.tasks import make_problems

    probs = make_problems(n, style="gsm", seed=seed + 7919, split="heldout")
    return [(i, p.prompt, f" {p.answer}", "num") for i, p in enumerate(probs)]


def _numeric_items(name: str, raw: list[tuple], n_choices: int, seed: int) -> list[Item]:
    rng = random.Random(f"{name}:num:{seed}")
    items = []
    for src, prompt, cont, _ in raw:
        ans = int(cont)
        opts = {ans}
        while len(opts) < n_choices:
            opts.add(max(0, ans + rng.choice([-1, 1]) * rng.randint(1, 5)))
        choices = [f" {o}" for o in opts]
        rng.shuffle(choices)
        items.append(Item(prompt, choices=tuple(choices), label=choices.index(cont), uid=""))
    return items


def general_benchmark(profile, n: int = 200, n_choices: int = 4, seed: int = 0,
                      langs: Sequence[str] = ("en", "zh", "ru", "fr", "de", "es", "it", "ja")) -> Benchmark:
    """The MMLU-role control: a mixed LL-MC benchmark, equal parts cloze in every language of ``langs``
    (distractors from other documents: topic coherence), next-line code, and word problems with numeric
    choices. Its items are drawn with other seeds than the
    specific benchmarks (a different cut / problem; source documents may be shared, like MMLU and
    MMLU-Redux share questions)."""
    parts = list(langs) + ["code", "num"]
    per = max(1, n // len(parts))
    items: list[Item] = []
    for part in parts:
        s = seed + 1009
        if part == "code":
            docs, _ = _docs(profile, 3, lang="code")
            sub = _mc_items("general-code", _code_raw(docs, s, 6, "general-code"), per, n_choices, s)
        elif part == "num":
            sub = _numeric_items("general-num", _numeric_choice_raw(per, s), n_choices, s)
        else:
            b = cloze_benchmark(profile, part, per, n_choices, s, name=f"general-{part}", distractors="other")
            sub = b.items
        items += sub
    items = [replace(it, uid=f"general-{i}") for i, it in enumerate(items)]
    return Benchmark("general", "choice", items, "MMLU (general control)",
                     {"source": f"mixed: cloze {list(langs)}, code, numeric word problems", "seed": seed,
                      "per_part": per})


def mini_benchmarks(profile, n_items: int = 150, n_general: int = 200, n_choices: int = 4,
                    seed: int = 0) -> dict[str, Benchmark]:
    """The mini benchmark suite: gsm, math, code, cloze-{en,ru,fr,de,zh}, poem-lzh and the general control."""
    out = {"gsm": gsm_benchmark(n_items, seed), "math": math_benchmark(n_items, seed),
           "code": code_benchmark(profile, n_items, n_choices, seed)}
    for lang in CLOZE_LANGS:
        out[f"cloze-{lang}"] = cloze_benchmark(profile, lang, n_items, n_choices, seed)
    out["poem-lzh"] = poem_benchmark(profile, n_items, n_choices, seed)
    out["general"] = general_benchmark(profile, n_general, n_choices, seed)
    for b in out.values():
        if len(b) < 4:
            raise ValueError(f"benchmark {b.name} has only {len(b)} items: the corpus is too small for it")
    return out


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def score_choices(model, tokenizer, items: Sequence[Item], batch_size: int = 64, max_length: int = 160,
                  normalize: str = "mean", chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> np.ndarray:
    """Log-likelihood of every choice of every item: (n_items, n_choices) float.

    Prompt and continuation are tokenized separately (the continuation without special tokens); the
    prompt is cut on the left so that prompt + longest choice fits ``max_length``. ``normalize``:
    'mean' (mean log-prob per continuation token) or 'sum'.

    Each prompt runs ONCE: a batch of ``batch_size`` items is encoded left-padded with a KV cache,
    the cache is repeated for the n_choices continuations, which run right-padded with explicit
    position ids (equal to the unpadded positions). The LM head runs only at the positions that
    predict a continuation token (``model.base_model`` then ``model.get_output_embeddings()``), on chunks
    of ``chunk_tokens`` positions (:func:`qscope_utils.batching.chosen_logprobs`): no (rows x length x vocab)
    logits.
    """
    if normalize not in ("mean", "sum"):
        raise ValueError("normalize must be 'mean' or 'sum'")
    k = len(items[0].choices)
    if any(len(it.choices) != k for it in items):
        raise ValueError("every item must have the same number of choices")
    prompts = tokenizer([it.prompt for it in items], add_special_tokens=True)["input_ids"]
    conts = tokenizer([c for it in items for c in it.choices], add_special_tokens=False)["input_ids"]
    if any(len(c) == 0 for c in conts):
        raise ValueError("empty continuation: every choice must contain at least one token")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    dev = next(model.parameters()).device
    body, head = model.base_model, model.get_output_embeddings()
    order = np.argsort([len(p) for p in prompts], kind="stable")
    out = np.empty((len(items), k))
    for b0 in range(0, len(order), batch_size):
        idx = order[b0:b0 + batch_size]
        cs = [[c[: max_length - 1] for c in conts[i * k:(i + 1) * k]] for i in idx]
        ps = [prompts[i][-max(1, max_length - max(len(c) for c in cc)):] for i, cc in zip(idx, cs)]
        pid, pam = pad_ids(ps, pad, left=True)
        plen = pam.sum(1)
        pos = (pam.cumsum(1) - 1).clamp(min=0)
        o = body(input_ids=pid.to(dev), attention_mask=pam.to(dev), position_ids=pos.to(dev), use_cache=True)
        cache = o.past_key_values
        cache.batch_repeat_interleave(k)
        flat = [c for cc in cs for c in cc]
        cid, cam = pad_ids(flat, pad, left=False)
        cpos = plen.repeat_interleave(k)[:, None] + torch.arange(cid.shape[1])[None]
        am = torch.cat([pam.repeat_interleave(k, 0), cam], 1)
        hc = body(input_ids=cid.to(dev), attention_mask=am.to(dev), position_ids=cpos.to(dev), past_key_values=cache,
                  use_cache=True).last_hidden_state
        hp = o.last_hidden_state[:, -1].repeat_interleave(k, 0)              # predicts continuation token 0
        # hidden state predicting token t of row r: t == 0 -> last prompt position, else continuation t - 1
        h_pred = torch.cat([hp[:, None], hc[:, :-1]], 1)                     # (B*k, Tc, d)
        sel = cam.bool()
        tok_lp = torch.zeros(cam.shape)
        tok_lp[sel] = chosen_logprobs(head, h_pred[sel.to(dev)], cid[sel], chunk_tokens).cpu()
        tot = tok_lp.sum(1)
        if normalize == "mean":
            tot = tot / cam.sum(1)
        out[idx] = tot.view(len(idx), k).numpy()
    return out


def exact_match(model, tokenizer, items: Sequence[Item], max_new_tokens: int = 6, batch_size: int = 64) -> np.ndarray:
    """(n_items,) bool: greedy completion's first integer equals the item's answer."""
    from .generation import generate
    from .mini.tasks import score_answer

    outs = generate(model, tokenizer, [it.prompt for it in items], max_new_tokens=max_new_tokens, do_sample=False,
                    batch_size=batch_size)
    return np.array([score_answer(o, it.answer) > 0 for o, it in zip(outs, items)])


def evaluate_benchmark(model, tokenizer, bench: Benchmark, batch_size: int = 64, max_new_tokens: int = 6,
                       max_length: int = 160) -> np.ndarray:
    """(n_items,) bool correctness of one model on one benchmark."""
    if bench.kind == "exact":
        return exact_match(model, tokenizer, bench.items, max_new_tokens, batch_size)
    if bench.kind == "choice":
        s = score_choices(model, tokenizer, bench.items, batch_size, max_length)
        return s.argmax(1) == np.array([it.label for it in bench.items])
    raise ValueError(f"benchmark {bench.name} is of kind {bench.kind!r}: it is scored outside this package; read "
                     f"its per-sample results with read_correctness(path)")


def load_zoo(profile) -> pd.DataFrame:
    """The profile's checkpoint zoo: one row per checkpoint (name, mixture, step, ..., abs_path)."""
    from .paths import data_dir

    name = getattr(profile, "name", profile)
    p = data_dir(name) / "models" / "zoo.json"
    if not p.exists():
        raise FileNotFoundError(f"no model zoo at {p}. Fix: build the scope (`python -m qscope_utils.mini.build "
                                f"--profile {name}`)")
    df = pd.DataFrame(json.loads(p.read_text()))
    df["abs_path"] = [str(p.parent / q) for q in df["path"]]
    return df


def correctness_matrices(zoo: pd.DataFrame, benchmarks: Mapping[str, Benchmark], batch_size: int = 64,
                         max_new_tokens: int = 6, max_length: int = 160, device: str = "cpu",
                         progress: bool = True, workers: int = 1, threads: int | None = None) -> dict[str, pd.DataFrame]:
    """Evaluate every benchmark on every checkpoint: name -> DataFrame (checkpoints x item uids) of 0/1.

    Each checkpoint is loaded once (``zoo.abs_path``, with its own tokenizer) and freed afterwards;
    ``workers`` > 1 scores that many checkpoints at once in worker processes of ``threads`` torch threads
    (:func:`qscope_utils.workers.map_jobs`; None: this process's count), the same floats as ``workers=1``
    at the same ``threads``.
    """
    from .workers import map_jobs

    ctx = _ZooEval(dict(benchmarks), batch_size, max_new_tokens, max_length, device)
    rows = map_jobs(_checkpoint_correctness, list(zoo["abs_path"]), ctx, workers=workers,
                    threads=threads or torch.get_num_threads(), desc="checkpoints", progress=progress)
    return {n: pd.DataFrame(np.stack([r[n] for r in rows]).astype(np.int8), index=list(zoo["name"]),
                            columns=benchmarks[n].uids) for n in benchmarks}


class _ZooEval(NamedTuple):
    benchmarks: dict
    batch_size: int
    max_new_tokens: int
    max_length: int
    device: str


def _checkpoint_correctness(ctx: _ZooEval, path: str) -> dict[str, np.ndarray]:
    """benchmark name -> (n_items,) correctness of the checkpoint at ``path``."""
    from .generation import load_backbone

    model, tok = load_backbone(path, device=ctx.device)
    return {name: evaluate_benchmark(model, tok, b, ctx.batch_size, ctx.max_new_tokens, ctx.max_length)
            for name, b in ctx.benchmarks.items()}


# ----------------------------------------------------------------------------- paper profile

@dataclass(frozen=True)
class HFBenchmarkSpec:
    """How to read one benchmark's prompts.

    dataset_id: hub id, a local ``save_to_disk`` directory, or a .json/.jsonl/.csv/.parquet file;
    config / split: as on the hub (None: the adapter's default; for a benchmark with one config per
    subject or language, None concatenates them all); prompt: a ``str.format`` template over the
    row's columns, which may also use ``{choices_block}`` ("A. ...\\nB. ..." from ``choices_column``);
    id_column: the column holding a per-sample id (default: the row index after selection), matched
    against the ids in correctness files; source: the :data:`qscope_utils.sources.SOURCES` adapter that
    reads ``dataset_id`` (schema, revision and layout checked; None: plain ``datasets.load_dataset``).
    """

    name: str
    dataset_id: str
    config: str | None = None
    split: str | None = None
    prompt: str = "{question}"
    choices_column: str | None = None
    id_column: str | None = None
    note: str = ""
    source: str | None = None


def _spec(name: str, source: str, prompt: str, choices_column: str | None = None, id_column: str | None = None,
          config: str | None = None, split: str | None = None, note: str = "") -> HFBenchmarkSpec:
    from .sources import get_source

    src = get_source(source)
    return HFBenchmarkSpec(name, src.repo_id or f"<{src.user_param}>", config, split, prompt, choices_column,
                           id_column, note or src.note, source)


_MC = "{question}\n{choices_block}\nAnswer:"
_ABCD = "{Question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n"
# The report's 17 benchmarks (§4). It gives no ids, splits or prompt templates: the adapters in
# qscope_utils.sources name the public copies (MMLU-Redux is v1, the report's 3,000 items), and the
# templates must match the ones the per-sample scores came from. KOR-Bench and ICLEval have no
# verifiable hub copy: USER_BENCHMARKS, read only from a file you pass as dataset_id.
PAPER_BENCHMARKS: dict[str, HFBenchmarkSpec] = {s.name: s for s in [
    _spec("MMLU", "mmlu", _MC, "choices", split="test"),
    _spec("MMLU-Redux", "mmlu-redux", _MC, "choices", note="v1, 30 subjects x 100 = 3,000 items, concatenated"),
    _spec("MMLU-Pro", "mmlu-pro", _MC, "options", "question_id", split="test"),
    _spec("SuperGPQA", "supergpqa", _MC, "options", "uuid"),
    _spec("C-Eval", "ceval", "{question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n答案：", split="val",
          note="52 subjects concatenated; val split (test answers are withheld)"),
    _spec("CMMLU", "cmmlu", "{Question}\nA. {A}\nB. {B}\nC. {C}\nD. {D}\n答案：", split="test",
          note="67 subjects concatenated"),
    _spec("GSM8K", "gsm8k", "Question: {question}\nAnswer:", split="test"),
    _spec("MATH", "math", "Problem: {problem}\nSolution:", split="test"),
    _spec("GPQA-Diamond", "gpqa-diamond", "{Question}\nAnswer:", id_column="Record ID", note="gated dataset"),
    _spec("TheoremQA", "theoremqa", "{Question}\nAnswer:"),
    _spec("MBPP", "mbpp", "{text}\n", id_column="task_id", split="test"),
    _spec("EvalPlus", "evalplus", "{prompt}", id_column="task_id"),
    _spec("MultiPL-E", "multipl-e", "{prompt}", id_column="name"),
    _spec("MMMLU", "mmmlu", _ABCD + "Answer:"),
    _spec("INCLUDE", "include", "{question}\nA. {option_a}\nB. {option_b}\nC. {option_c}\nD. {option_d}\nAnswer:"),
]}
USER_BENCHMARKS: dict[str, HFBenchmarkSpec] = {s.name: s for s in [
    _spec("KOR-Bench", "kor-bench", "{prompt}", id_column="id"),
    _spec("ICLEval", "icleval", "{prompt}", id_column="id"),
]}
ALL_BENCHMARKS = {**PAPER_BENCHMARKS, **USER_BENCHMARKS}
"""The report's 17: the 15 hub-hosted defaults plus the 2 user-supplied ones."""


def _load_local(p: Path, split: str | None):
    import datasets

    if p.is_dir() and ((p / "dataset_dict.json").exists() or (p / "state.json").exists()):
        ds = datasets.load_from_disk(str(p))
        return ds[split or "test"] if isinstance(ds, datasets.DatasetDict) else ds
    suffix = p.suffix.lower()
    if p.is_file() and suffix in (".json", ".jsonl", ".csv", ".parquet"):
        builder = {".jsonl": "json"}.get(suffix, suffix[1:])
        return datasets.load_dataset(builder, data_files=str(p), split="train")
    return None


def _load_dataset(spec: HFBenchmarkSpec):
    """A benchmark's rows: a local file / ``save_to_disk`` folder, else its adapter, else ``datasets``."""
    from .sources import SourceNotAvailable, get_source

    src = get_source(spec.source) if spec.source else None
    local = _load_local(Path(spec.dataset_id), spec.split)
    if local is not None:
        return src.check(local, spec.dataset_id) if src is not None and src.is_user_supplied else local
    if src is not None and (src.is_user_supplied or spec.dataset_id == src.repo_id):
        if src.is_user_supplied:
            raise SourceNotAvailable(f"{spec.name}: no public hub copy is known. Fix: pass dataset_id=<a .jsonl file "
                                     f"with columns {list(src.columns)}> (notebook 03: benchmark_files)")
        return src.load(spec.config, spec.split)
    import datasets

    try:
        return datasets.load_dataset(spec.dataset_id, spec.config, split=spec.split or "test")
    except Exception as e:  # datasets raises many types for offline / missing / gated
        raise RuntimeError(f"cannot load benchmark {spec.name} from {spec.dataset_id!r} ({spec.config}, {spec.split}): "
                           f"{e}\nFix: run once with network access (HF cache), accept the dataset's terms if gated, "
                           f"or set dataset_id to a local file / save_to_disk directory.") from e


def _format_prompt(template: str, row: dict, choices_column: str | None) -> str:
    if choices_column is not None:
        ch = row[choices_column]
        if isinstance(ch, str):
            ch = json.loads(ch) if ch.startswith("[") else [ch]
        row = {**row, "choices_block": "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(ch))}
    try:
        return template.format(**row)
    except KeyError as e:
        raise KeyError(f"prompt template needs column {e}; the dataset has {sorted(row)}") from e


def load_hf_benchmark(spec: HFBenchmarkSpec | str, n: int | None = None, seed: int = 0, **overrides) -> Benchmark:
    """Load a benchmark's prompts (kind 'external': scores come from :func:`read_correctness`).

    ``spec`` is an :class:`HFBenchmarkSpec` or a key of :data:`ALL_BENCHMARKS`; ``overrides`` replace
    spec fields (e.g. ``dataset_id=...``, ``config=...``). ``n`` keeps a seeded random subset. Items of a
    concatenated benchmark without an id column get uids ``<config>/<row>``.
    """
    if isinstance(spec, str):
        if spec not in ALL_BENCHMARKS:
            raise KeyError(f"unknown benchmark {spec!r}; known: {sorted(ALL_BENCHMARKS)} (or pass an HFBenchmarkSpec)")
        spec = ALL_BENCHMARKS[spec]
    spec = replace(spec, **overrides) if overrides else spec
    ds = _load_dataset(spec)
    if n is not None and n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    items = []
    for i, row in enumerate(ds):
        uid = str(row[spec.id_column]) if spec.id_column else (f"{row['config']}/{i}" if "config" in row else str(i))
        items.append(Item(_format_prompt(spec.prompt, row, spec.choices_column), uid=uid))
    if len({it.uid for it in items}) != len(items):
        raise ValueError(f"{spec.name}: ids in column {spec.id_column!r} are not unique")
    return Benchmark(spec.name, "external", items, spec.name,
                     {"dataset_id": spec.dataset_id, "config": spec.config, "split": spec.split, "seed": seed,
                      "note": spec.note})


_LONG_MODEL = ("model", "checkpoint")
_LONG_SAMPLE = ("sample_id", "sample", "item", "doc_id", "id")
_LONG_SCORE = ("correct", "score", "acc", "exact_match")


def _first(cols: Iterable[str], names: Sequence[str]) -> str | None:
    low = {c.lower(): c for c in cols}
    return next((low[n] for n in names if n in low), None)


def read_correctness(path: str | Path, benchmark: str | None = None) -> pd.DataFrame:
    """Per-sample results from a CSV or Parquet file: DataFrame (models x sample ids) of floats in [0, 1].

    Two layouts are accepted:

    * long: one row per (model, sample) with columns ``model`` (or ``checkpoint``), ``sample_id`` (or
      ``sample``/``item``/``doc_id``/``id``), ``correct`` (or ``score``/``acc``/``exact_match``) and,
      optionally, ``benchmark`` (then pass ``benchmark=`` to select one);
    * wide: one row per model, first column (or a ``model`` column) the model name, every other column a
      sample id.

    Booleans and "true"/"false" strings are converted; duplicate (model, sample) rows are an error.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no correctness file at {path}")
    if path.suffix.lower() == ".parquet":
        df = pd.read_parquet(path)
    elif path.suffix.lower() in (".csv", ".tsv"):
        df = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    else:
        raise ValueError(f"{path.name}: correctness files must be .csv, .tsv or .parquet")
    m, s, v = _first(df.columns, _LONG_MODEL), _first(df.columns, _LONG_SAMPLE), _first(df.columns, _LONG_SCORE)
    if m and s and v:
        bcol = _first(df.columns, ("benchmark", "task"))
        if bcol is not None:
            if benchmark is None and df[bcol].nunique() > 1:
                raise ValueError(f"{path.name} holds several benchmarks {sorted(df[bcol].unique())}: pass benchmark=")
            if benchmark is not None:
                df = df[df[bcol] == benchmark]
                if df.empty:
                    raise KeyError(f"no rows for benchmark {benchmark!r} in {path.name}")
        if df.duplicated([m, s]).any():
            raise ValueError(f"{path.name}: duplicate (model, sample) rows")
        df = df.assign(**{s: df[s].astype(str)})
        wide = df.pivot(index=m, columns=s, values=v)
    else:
        key = m or df.columns[0]
        wide = df.set_index(key)
        wide.columns = [str(c) for c in wide.columns]
    wide.index.name = "model"
    wide = wide.apply(_to_float)
    if ((wide < 0) | (wide > 1)).any().any():
        raise ValueError(f"{path.name}: scores must lie in [0, 1]")
    return wide


def _to_float(col: pd.Series) -> pd.Series:
    if not pd.api.types.is_numeric_dtype(col):
        col = col.astype(object).map(lambda x: {"true": 1.0, "false": 0.0}.get(str(x).strip().lower(), x))
    return pd.to_numeric(col, errors="raise").astype(float)


def align_correctness(df: pd.DataFrame, bench: Benchmark) -> pd.DataFrame:
    """Columns of a correctness DataFrame reordered to ``bench.uids``; every sample needs a score."""
    missing = [u for u in bench.uids if u not in df.columns]
    if missing:
        raise KeyError(f"{bench.name}: {len(missing)} of {len(bench)} samples have no score (e.g. {missing[:3]}). "
                       f"Fix: make the file's sample ids match the benchmark ids (spec.id_column or row index)")
    out = df[bench.uids]
    if out.isna().any().any():
        raise ValueError(f"{bench.name}: some models lack scores on some samples")
    return out
