"""Pretraining of the mini backbone: a real ``transformers.Qwen3ForCausalLM`` trained from scratch.

Data: the corpus train split, each document ``bos + text + eos``, concatenated per source. A
training sequence starts at a random document start of a source drawn from the mixture and runs
``seq_len + 1`` tokens on through the following documents (packed; position 0 is always bos).

Mixtures (``MiniScopeConfig.mixtures``): ``balanced`` draws a language with probability
proportional to (its characters)^0.3 (temperature smoothing, so small languages such as lzh are
seen often but not only), a source within the language proportionally to its size;
``code_math_heavy`` multiplies code and math by 4; ``<lang>_heavy`` multiplies one language by 4.

Checkpoint zoo (for the benchmark-redundancy section, which needs models that differ in training
steps *and* data mixture): the balanced run saves at every ``zoo_steps`` step; every other mixture
*branches* from the balanced run at ``branch_step`` (same weights, optimizer state and LR
schedule) and continues to ``train_steps`` on its own mixture, saving at the zoo steps after the
branch. This costs ``train_steps - branch_step`` extra steps per mixture instead of a full second
run, which is what fits the 2-core CPU budget (mini: 1000 + 500 steps, 17 + 10 checkpoints), and it is
how in-house checkpoint families usually look (a shared trunk, then mixture changes).

Threads: the trunk up to the branch point trains alone on every torch thread; after it, the trunk's
rest and each branch are independent, so they train at once on worker processes
(:func:`qscope_utils.workers.map_jobs`), each on ``threads // len(mixtures)`` threads. At these widths two
one-thread processes step about 30% more tokens per second than one two-thread process (2 cores: 10.7k vs
8.2k tokens/s, ``benchmarks/bench_pretrain_threads.py``). The plan depends only on the config and the machine, never on
what a resume left to do, so a resumed build still ends bit-identical.

Resume: at every zoo step the run also writes ``models/_resume/<mixture>.pt`` (optimizer state,
step, config hash); an interrupted run restarts from the last one. The data order is a pure
function of (seed, mixture, step), so a resumed run sees the same batches and ends bit-identical.
Every file is written atomically (:mod:`qscope_utils.atomic`); a resume state, branch checkpoint,
token cache or zoo checkpoint that is truncated or unreadable is treated as absent and rebuilt
(a mixture whose saved zoo checkpoints are damaged is retrained from its start).
"""
from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from transformers import Qwen3Config, Qwen3ForCausalLM

from ..atomic import (atomic_dir, atomic_savez, atomic_torch_save, atomic_write_json, atomic_write_text,
                      safetensors_problem)
from ..hooks import pad_ids
from ..profiles import MiniScopeConfig
from .corpus import Doc, load_corpus
from .progress import ProgressLine
from .tokenizer import load_tokenizer
from ..workers import default_workers, map_jobs

__all__ = ["qwen3_config", "mixture_weights", "TokenData", "tokenize_split", "pretrain", "zoo_plan",
           "eval_perplexity", "train_step", "new_optimizer", "load_checkpoint", "read_zoo", "load_resume", "zoo_checkpoint_ok", "cached_tokens"]

LANG_TEMPERATURE = 0.3
MIN_WORKER_TOKENS = 2_000_000   # parallel-phase tokens from which the mixtures train on worker processes
HEAVY_MULT = 4.0


def qwen3_config(scope: MiniScopeConfig, vocab_size: int, bos_id: int, eos_id: int) -> Qwen3Config:
    """The Qwen3Config of the mini backbone (tied embeddings, like the small Qwen3 models)."""
    return Qwen3Config(
        vocab_size=vocab_size, hidden_size=scope.hidden_size, intermediate_size=scope.intermediate_size,
        num_hidden_layers=scope.n_layers, num_attention_heads=scope.n_heads,
        num_key_value_heads=scope.n_kv_heads, head_dim=scope.head_dim,
        max_position_embeddings=max(2048, 4 * scope.seq_len), tie_word_embeddings=True,
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id, use_cache=True,
    )


class TokenData:
    """Token streams of one split, one per source: ``ids[source]`` (int32) and ``starts[source]``
    (document start offsets). Built once by :func:`tokenize_split` and cached as .npz."""

    def __init__(self, ids: dict[str, np.ndarray], starts: dict[str, np.ndarray], lang: dict[str, str],
                 chars: dict[str, int]):
        self.ids, self.starts, self.lang, self.chars = ids, starts, lang, chars

    @property
    def sources(self) -> list[str]:
        return sorted(self.ids)

    def n_tokens(self) -> int:
        return int(sum(len(v) for v in self.ids.values()))

    def save(self, path: Path) -> None:
        """Write ``path`` (.npz) and its ``.json`` sidecar, each atomically (the sidecar last)."""
        arrs = {}
        for s in self.ids:
            arrs[f"ids/{s}"] = self.ids[s]
            arrs[f"starts/{s}"] = self.starts[s]
        atomic_savez(path, **arrs)
        atomic_write_json(path.with_suffix(".json"), {"lang": self.lang, "chars": self.chars}, indent=None)

    @classmethod
    def load(cls, path: Path) -> "TokenData":
        z = np.load(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        ids = {k[4:]: z[k] for k in z.files if k.startswith("ids/")}
        starts = {k[7:]: z[k] for k in z.files if k.startswith("starts/")}
        return cls(ids, starts, meta["lang"], meta["chars"])


def cached_tokens(path: Path, make) -> TokenData:
    """``TokenData.load(path)``, or ``make()`` saved to ``path`` when it is missing or unreadable
    (a truncated .npz from an interrupted older build is rebuilt, not crashed on)."""
    if path.exists():
        try:
            data = TokenData.load(path)
            for v in data.ids.values():     # np.load is lazy: reading every array detects truncation
                v.sum()
            return data
        except Exception:   # noqa: BLE001 - any unreadable cache is rebuilt
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make()
    data.save(path)
    return data


def tokenize_split(docs: list[Doc], tok) -> TokenData:
    """Tokenise documents as ``bos + text + eos`` and concatenate them per source."""
    by_src: dict[str, list[Doc]] = {}
    for d in docs:
        by_src.setdefault(d.source, []).append(d)
    ids, starts, lang, chars = {}, {}, {}, {}
    eos = tok.eos_token_id
    for s, ds in sorted(by_src.items()):
        enc = tok([d.text for d in ds], add_special_tokens=True)["input_ids"]   # bos prepended
        seqs = [e + [eos] for e in enc]
        lens = np.array([len(x) for x in seqs])
        ids[s] = np.fromiter((t for x in seqs for t in x), dtype=np.int32, count=int(lens.sum()))
        starts[s] = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        lang[s] = ds[0].lang
        chars[s] = int(sum(len(d.text) for d in ds))
    return TokenData(ids, starts, lang, chars)


def mixture_weights(data: TokenData, mixture: str) -> dict[str, float]:
    """Sampling probability of each source under a named mixture (see module docstring)."""
    lang_chars: dict[str, int] = {}
    for s in data.sources:
        lang_chars[data.lang[s]] = lang_chars.get(data.lang[s], 0) + data.chars[s]
    mult = {l: 1.0 for l in lang_chars}
    if mixture == "balanced":
        pass
    elif mixture == "code_math_heavy":
        for l in ("code", "math"):
            if l in mult:
                mult[l] = HEAVY_MULT
    elif mixture.endswith("_heavy") and mixture[:-6] in mult:
        mult[mixture[:-6]] = HEAVY_MULT
    else:
        raise ValueError(f"unknown mixture {mixture!r}: use 'balanced', 'code_math_heavy' or '<lang>_heavy' "
                         f"with a language of {sorted(mult)}")
    p_lang = {l: (c ** LANG_TEMPERATURE) * mult[l] for l, c in lang_chars.items()}
    z = sum(p_lang.values())
    return {s: p_lang[data.lang[s]] / z * data.chars[s] / lang_chars[data.lang[s]] for s in data.sources}


def _batch(data: TokenData, weights: dict[str, float], batch: int, seq_len: int, rng: np.random.Generator):
    srcs = data.sources
    p = np.array([weights[s] for s in srcs])
    pick = rng.choice(len(srcs), size=batch, p=p / p.sum())
    out = np.empty((batch, seq_len + 1), dtype=np.int64)
    for i, j in enumerate(pick):
        ids, st = data.ids[srcs[j]], data.starts[srcs[j]]
        o = int(st[rng.integers(len(st))])
        idx = (o + np.arange(seq_len + 1)) % len(ids)        # wrap around the source stream
        out[i] = ids[idx]
    return torch.from_numpy(out)


def _lr(step: int, scope: MiniScopeConfig) -> float:
    warm = max(1, scope.train_steps // 20)
    if step < warm:
        return scope.lr * (step + 1) / warm
    t = (step - warm) / max(1, scope.train_steps - warm)
    return scope.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def zoo_plan(scope: MiniScopeConfig) -> list[dict]:
    """Checkpoints the zoo will hold: (name, mixture, step, branch_from)."""
    plan = []
    mixes = list(scope.mixtures)
    if "balanced" not in mixes:
        raise ValueError("mixtures must include 'balanced' (the main checkpoint's trunk)")
    for s in scope.zoo_steps:
        plan.append({"name": f"balanced-step{s}", "mixture": "balanced", "step": s, "branch_from": None})
    for m in mixes:
        if m == "balanced":
            continue
        for s in scope.zoo_steps:
            if s > scope.branch_step:
                plan.append({"name": f"{m}-step{s}", "mixture": m, "step": s,
                             "branch_from": f"balanced-step{scope.branch_step}"})
    return plan


def _save_ckpt(model, tok, path: Path, info: dict) -> None:
    with atomic_dir(path) as tmp:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        (tmp / "zoo_info.json").write_text(json.dumps(info, indent=1))


def zoo_checkpoint_ok(path: Path) -> bool:
    """A saved checkpoint directory is complete: zoo_info.json readable, config present and every
    safetensors shard whole (its header's tensors fit the file exactly)."""
    try:
        json.loads((path / "zoo_info.json").read_text())
        shards = sorted(path.glob("*.safetensors"))
        return (path / "config.json").is_file() and bool(shards) and not any(safetensors_problem(p) for p in shards)
    except (OSError, ValueError):
        return False


def load_resume(path: Path, config_hash: str) -> dict | None:
    """A resume state (model, optimizer, step, config_hash) of this config, or None when the file is
    missing, of another config, or unreadable (truncated by a kill: it is deleted, to be rebuilt)."""
    if not path.exists():
        return None
    try:
        st = torch.load(path, weights_only=False)
    except Exception:   # noqa: BLE001 - truncated zip, bad pickle ...: a damaged state is discarded
        path.unlink(missing_ok=True)
        return None
    return st if isinstance(st, dict) and st.get("config_hash") == config_hash else None


def train_step(model, opt, x: torch.Tensor) -> torch.Tensor:
    """One optimizer step of next-token prediction on ``x`` (batch, seq_len + 1); returns the loss."""
    logits = model(input_ids=x[:, :-1]).logits
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), x[:, 1:].reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def _run(model, opt, data, weights, scope, mix_idx, start, stop, save_steps, on_save, progress, desc, log):
    model.train()
    tokens_per_step = scope.batch_size * scope.seq_len
    bar = ProgressLine(f"pretrain {desc}", start, stop, enabled=progress)
    t0, n0 = time.time(), 0
    for step in range(start, stop):
        rng = np.random.default_rng([scope.seed, mix_idx, step])
        x = _batch(data, weights, scope.batch_size, scope.seq_len, rng)
        for g in opt.param_groups:
            g["lr"] = _lr(step, scope)
        loss = train_step(model, opt, x)
        n0 += tokens_per_step
        if step % 10 == 0 or step + 1 == stop:
            tps = n0 / max(1e-9, time.time() - t0)
            log.append({"mixture": desc, "step": step + 1, "loss": loss.item(), "lr": _lr(step, scope),
                        "tokens_per_s": tps})
        bar.tick(step, loss=loss.item(), tok_per_s=n0 / max(1e-9, time.time() - t0))
        if step + 1 in save_steps:
            on_save(step + 1)


class Segment(NamedTuple):
    """A stretch of one mixture's run: steps ``start..stop-1``, continuing from ``init`` (a resume file; None
    = fresh weights from the build seed)."""
    mix_index: int
    mixture: str
    start: int
    stop: int
    init: str | None


class _PretrainContext(NamedTuple):
    data: TokenData
    scope: MiniScopeConfig
    cfg: Qwen3Config
    tok_dir: str
    zoo_dir: str
    res_dir: str
    config_hash: str
    plan: list
    progress: bool


def _segments(scope: MiniScopeConfig, states: dict[str, dict | None]) -> tuple[list[Segment], list[Segment]]:
    """What is left to train, from the valid resume states: (the trunk up to the branch point, run alone on
    every thread; the stretches after it, one per mixture, independent of each other)."""
    mixes, B, T = list(scope.mixtures), scope.branch_step, scope.train_steps
    bal = states.get("balanced")
    done = bal["step"] if bal is not None else 0

    def trunk(start: int, stop: int) -> list[Segment]:
        return [Segment(0, "balanced", start, stop, "balanced.pt" if start else None)] if start < stop else []

    if len(mixes) == 1:
        return trunk(done, T), []
    parallel = trunk(max(done, B), T)
    for mi, m in enumerate(mixes):
        if m == "balanced":
            continue
        st = states.get(m)
        start = st["step"] if st is not None else B
        if start < T:
            parallel.append(Segment(mi, m, start, T, f"{m}.pt" if st is not None else f"balanced-step{B}.pt"))
    return trunk(done, B), parallel


def new_optimizer(model, scope: MiniScopeConfig) -> torch.optim.AdamW:
    """AdamW of the mini pretraining: weight decay 0.1 on matrices, none on norms (betas 0.9 / 0.95)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    nodecay = [p for n, p in model.named_parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                             lr=scope.lr, betas=(0.9, 0.95), eps=1e-8)


def _train_segment(ctx: _PretrainContext, seg: Segment) -> tuple[list[dict], float]:
    """Train one segment, saving its zoo checkpoints and resume states; returns (log rows, seconds)."""
    scope, mix, res_dir, zoo_dir = ctx.scope, seg.mixture, Path(ctx.res_dir), Path(ctx.zoo_dir)
    tok = load_tokenizer(ctx.tok_dir)
    torch.manual_seed(scope.seed)
    model = Qwen3ForCausalLM(ctx.cfg)
    opt = new_optimizer(model, scope)
    if seg.init is not None:
        st = load_resume(res_dir / seg.init, ctx.config_hash)
        if st is None:
            raise RuntimeError(f"pretrain: resume state {res_dir / seg.init} vanished or is damaged: run the build again")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        del st
    tokens_per_step = scope.batch_size * scope.seq_len
    branches = len(scope.mixtures) > 1

    def on_save(step):
        entry = next((e for e in ctx.plan if e["mixture"] == mix and e["step"] == step), None)
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                 "config_hash": ctx.config_hash}
        if entry is not None:
            info = dict(entry, tokens_seen=step * tokens_per_step, path=f"zoo/{entry['name']}")
            _save_ckpt(model, tok, zoo_dir / entry["name"], info)
        if mix == "balanced" and step == scope.branch_step and branches:
            atomic_torch_save(state, res_dir / f"balanced-step{step}.pt")
        atomic_torch_save(state, res_dir / f"{mix}.pt")     # last: it vouches for the saves above

    save_steps = {e["step"] for e in ctx.plan if e["mixture"] == mix} | {seg.stop}
    if mix == "balanced" and branches:
        save_steps.add(scope.branch_step)
    weights = mixture_weights(ctx.data, mix)
    log: list[dict] = []
    t = time.time()
    _run(model, opt, ctx.data, weights, scope, seg.mix_index, seg.start, seg.stop, save_steps, on_save,
         ctx.progress, mix, log)
    return log, time.time() - t


def pretrain(scope: MiniScopeConfig, corpus_profile, tok_dir: Path, models_dir: Path, config_hash: str = "",
             progress: bool = True) -> dict:
    """Train the balanced trunk and the mixture branches, save the zoo and the main checkpoint,
    and evaluate held-out perplexity. Returns a summary dict (also written to models/pretrain.json)."""
    torch.manual_seed(scope.seed)
    tok = load_tokenizer(tok_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    zoo_dir, res_dir = models_dir / "zoo", models_dir / "_resume"
    zoo_dir.mkdir(exist_ok=True)
    res_dir.mkdir(exist_ok=True)
    data = cached_tokens(models_dir / "_data" / "train_tokens.npz",
                         lambda: tokenize_split(load_corpus(corpus_profile, split="train"), tok))
    # the held-out tokens (SAE evaluation) belong to this stage too: written before its stamp
    cached_tokens(models_dir / "_data" / "heldout_tokens.npz",
                  lambda: tokenize_split(load_corpus(corpus_profile, split="heldout"), tok))
    cfg = qwen3_config(scope, len(tok), tok.bos_token_id, tok.eos_token_id)
    plan = zoo_plan(scope)
    log: list[dict] = []
    timings: dict[str, float] = {}
    mixes = list(scope.mixtures)
    tokens_per_step = scope.batch_size * scope.seq_len

    states = _valid_resume_states(plan, mixes, scope, res_dir, zoo_dir, config_hash)
    trunk, parallel = _segments(scope, states)
    del states
    ctx = _PretrainContext(data, scope, cfg, str(tok_dir), str(zoo_dir), str(res_dir), config_hash, plan, progress)
    # a thread plan fixed by the config and the machine (not by what a resume left to do): same floats after a resume
    # (worker processes only pay off for runs longer than their start-up: the same floats in this process)
    parallel_tokens = sum(seg.stop - seg.start for seg in parallel) * tokens_per_step
    threads = {"trunk": torch.get_num_threads(),
               "parallel_workers": default_workers("cpu") if parallel_tokens >= MIN_WORKER_TOKENS else 1,
               "parallel_threads": max(1, torch.get_num_threads() // len(mixes))}
    t = time.time()
    results = [_train_segment(ctx, seg) for seg in trunk]
    if parallel:   # after the branch point: every mixture on its own one-thread worker (same floats at any worker count)
        results += map_jobs(_train_segment, parallel, ctx, workers=threads["parallel_workers"],
                            threads=threads["parallel_threads"],
                            desc="pretrain (mixtures in parallel)", progress=progress)
    timings["train_wall"] = time.time() - t
    for seg, (seg_log, seconds) in zip(trunk + parallel, results):
        log += seg_log
        timings[seg.mixture] = timings.get(seg.mixture, 0.0) + seconds
    trained = sum(seg.stop - seg.start for seg in trunk + parallel) * tokens_per_step

    # main checkpoint = balanced final
    final = zoo_dir / f"balanced-step{scope.train_steps}"
    if not zoo_checkpoint_ok(final):   # train_steps not in zoo_steps: the resume file holds it
        st = load_resume(res_dir / "balanced.pt", config_hash)
        model = Qwen3ForCausalLM(cfg)
        model.load_state_dict(st["model"])
        _save_ckpt(model, tok, final, {"name": final.name, "mixture": "balanced", "step": scope.train_steps,
                                       "tokens_seen": scope.train_steps * tokens_per_step})
    main = models_dir / "main"
    with atomic_dir(main) as tmp:
        shutil.copytree(final, tmp, dirs_exist_ok=True)
    zoo = [json.loads((zoo_dir / e["name"] / "zoo_info.json").read_text()) for e in plan
           if (zoo_dir / e["name"]).exists()]
    atomic_write_json(models_dir / "zoo.json", zoo)

    t = time.time()
    if progress:
        print("[pretrain] held-out perplexity of the main checkpoint, per source and language ...", flush=True)
    ppl = eval_perplexity(main, corpus_profile, scope)
    atomic_write_text(models_dir / "perplexity.csv", ppl.to_csv(index=False))
    timings["perplexity_eval"] = time.time() - t
    n_params = sum(p.numel() for p in load_checkpoint(main).parameters())
    summary = {"n_params": n_params, "train_tokens_in_corpus": data.n_tokens(), "tokens_per_step": tokens_per_step,
               "train_steps": scope.train_steps, "zoo": [z["name"] for z in zoo], "seconds": timings,
               # all mixtures together, over the training wall time (worker start-up and checkpoint saves included)
               "tokens_per_s": trained / timings["train_wall"] if trained else None, "threads": threads,
               "final_loss": {m: next((r["loss"] for r in reversed(log) if r["mixture"] == m), None) for m in mixes},
               "mixture_weights": {m: mixture_weights(data, m) for m in mixes}}
    atomic_write_json(models_dir / "pretrain.json", summary)
    if log:
        atomic_write_text(models_dir / "train_log.csv", pd.DataFrame(log).to_csv(index=False))
    return summary


def _valid_resume_states(plan: list[dict], mixes: list[str], scope: MiniScopeConfig, res_dir: Path,
                         zoo_dir: Path, config_hash: str) -> dict[str, dict | None]:
    """Resume state per mixture, dropping any that cannot be trusted: unreadable, or vouching for a
    zoo checkpoint (step <= its step) that is missing or damaged. A branch mixture that must restart
    needs the branch checkpoint; if that is damaged too, the balanced run restarts from step 0."""
    states = {m: load_resume(res_dir / f"{m}.pt", config_hash) for m in mixes}
    for m, st in states.items():
        if st is not None and not all(zoo_checkpoint_ok(zoo_dir / e["name"]) for e in plan
                                      if e["mixture"] == m and e["step"] <= st["step"]):
            states[m] = None
    branch = res_dir / f"balanced-step{scope.branch_step}.pt"
    needs_branch = any(states[m] is None for m in mixes if m != "balanced")
    if needs_branch and load_resume(branch, config_hash) is None:
        bal = states.get("balanced")
        if bal is not None and bal["step"] >= scope.branch_step:
            states["balanced"] = None
    return states


@torch.no_grad()
def eval_perplexity(model_dir: Path, corpus_profile, scope: MiniScopeConfig, max_docs_per_source: int = 150,
                    batch: int = 16) -> pd.DataFrame:
    """Held-out perplexity per source and per language (documents ``bos + text + eos`` cut to
    ``2*seq_len`` tokens; the bos is context, never a target). Columns: level, name, lang, n_docs,
    n_tokens, n_chars, ppl, bits_per_char (comparable across tokenisations and scripts)."""
    model = load_checkpoint(model_dir)
    tok = load_tokenizer(model_dir)
    docs = load_corpus(corpus_profile, split="heldout")
    by_src: dict[str, list[Doc]] = {}
    for d in docs:
        by_src.setdefault(d.source, []).append(d)
    rows, agg = [], {}
    max_len = 2 * scope.seq_len
    for src, ds in sorted(by_src.items()):
        ds = ds[:max_docs_per_source]
        nll, ntok, nch = 0.0, 0, 0
        for i in range(0, len(ds), batch):
            texts = [d.text for d in ds[i:i + batch]]
            enc = tok(texts, add_special_tokens=True)["input_ids"]
            seqs = [(e + [tok.eos_token_id])[:max_len] for e in enc]
            ids, mask = pad_ids(seqs, tok.eos_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            tgt, m = ids[:, 1:], mask[:, 1:].bool()
            lp = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1), reduction="none")
            nll += float(lp[m.reshape(-1)].sum())
            ntok += int(m.sum())
            # characters covered by the scored tokens (truncated docs: proportional share)
            for j, s in enumerate(seqs):
                full = len(enc[j]) + 1
                nch += int(round(len(texts[j]) * min(1.0, len(s) / full)))
        lang = ds[0].lang
        rows.append({"level": "source", "name": src, "lang": lang, "n_docs": len(ds), "n_tokens": ntok,
                     "n_chars": nch, "nll": nll})
        a = agg.setdefault(lang, {"n_docs": 0, "n_tokens": 0, "n_chars": 0, "nll": 0.0})
        for k in a:
            a[k] += rows[-1][k]
    for lang, a in sorted(agg.items()):
        rows.append({"level": "lang", "name": lang, "lang": lang, **a})
    df = pd.DataFrame(rows)
    df["ppl"] = np.exp(df["nll"] / df["n_tokens"])
    df["bits_per_char"] = df["nll"] / np.log(2) / df["n_chars"].clip(lower=1)
    return df.drop(columns=["nll"])


def load_checkpoint(path: str | Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Qwen3ForCausalLM:
    """Load a mini checkpoint (``models/main`` or a zoo entry) in eval mode."""
    model = Qwen3ForCausalLM.from_pretrained(str(path), dtype=dtype)
    return model.to(device).eval()


def read_zoo(models_dir: Path) -> pd.DataFrame:
    """The checkpoint zoo (name, mixture, step, tokens_seen, branch_from, path) as a DataFrame."""
    return pd.DataFrame(json.loads((Path(models_dir) / "zoo.json").read_text()))
