"""DAPO and SAE-guided DAPO on TRL's ``GRPOTrainer`` (docs/CONVENTIONS.md §8).

* Objective: ``GRPOConfig(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0)``: clip-higher,
  token-level aggregation over the whole generation batch, no KL; no dynamic sampling (all-equal groups
  stay with advantage 0). Group-normalised advantages (``scale_rewards="group"``).
* Rewards (:func:`reward_functions`): correctness +1 / -1 (DAPO Eq. 7; :class:`CorrectnessReward`) and
  TRL's soft overlong punishment (DAPO Eq. 13, ``trl.rewards.get_soft_overlong_punishment``), summed.
* Several mini-batch updates per rollout batch, so the clip binds: one generation batch of
  ``n_prompts x G`` rollouts is split into ``DAPOConfig.minibatches`` mini-batches, each one optimizer
  step; ``num_iterations`` (``DAPOConfig.ppo_epochs``) repeats the pass. Memory is bounded by
  ``DAPOConfig.micro_batch``: a mini-batch is ``accumulation`` passes of ``micro_batch`` rows (TRL's
  ``per_device_train_batch_size``; ``steps_per_generation = minibatches x accumulation``), and TRL's
  log-prob passes (old policy, and the loss) run ``micro_batch`` rows at a time through its fused LM head
  (no rows x length x vocabulary logits). The DAPO loss is normalised by the generation batch's tokens,
  so the split changes no gradient (``tests/test_dapo_trainer.py``). The old policy's log-probs are
  computed ONCE per generation batch (TRL does this whenever accumulation is not a multiple of
  ``steps_per_generation x num_iterations``), so from the second mini-batch on the ratio moves.
* Precision: float32 master weights under bf16 autocast (LoRA: float32 adapters over the loaded base,
  :func:`qscope_utils.sasft_trainer.master_weights`); :func:`qscope_utils.fit.check_training_fits` refuses
  a run that cannot fit before the trainer is built.
* Rollouts (:class:`SteeredRollouts`, TRL's ``rollout_func``): one batched HF ``generate`` per
  generation batch; TRL passes the prompts already repeated G times in consecutive groups. In the SAE
  arm the FIRST row of each group (rows 0, G, 2G, ...) is generated with ``h <- h + alpha W_dec[:, f]``
  at every prompt position and decode step (the shared row-selective :func:`qscope_utils.steering.steer`);
  the hooks are removed before TRL scores the batch.
* Old policy for steered rows: TRL's ``old_per_token_logps`` come from a plain forward of the policy
  being trained over ``prompt + completion``, i.e. the UNSTEERED policy's log-probs of the steered
  tokens, so the importance ratio starts at 1 for steered rows as for normal ones. The sampler's own
  (steered) log-probs are returned as ``logprobs`` (TRL uses them only for vLLM's correction, off here).
* The SAE-arm variant (:class:`SteeredRowPolicy`): a weight on the steered rows, per-sequence instead
  of token-level weight for them, dropping truncated steered rows; applied to their advantages (the
  DAPO loss is linear in A for both clip branches, so scaling A scales the row's loss).

Entry points: :func:`train_dapo` (in-process; mini / smoke / one GPU) and ``python -m
qscope_utils.dapo_trainer --job job.json`` under ``accelerate launch`` (``configs/accelerate``).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from .dapo import DAPOConfig, _problems, extract_int, steered_rows
from .batching import ChosenLogprobRecorder
from .repetition import RepetitionDetector, generation_groups, left_padded_batch, local_rows
from .steering import steer

__all__ = ["SteeredRowPolicy", "CorrectnessReward", "reward_functions", "SteeredRollouts", "grpo_config",
           "steered_advantages", "train_dapo", "build_dapo_trainer", "problem_dataset"]


# --------------------------------------------------------------------------------------------- rewards
class CorrectnessReward:
    """DAPO Eq. 7: +1 if the response's answer integer equals the problem's ``answer``, else -1."""

    __name__ = "correctness"

    def __init__(self, rule: str = "first"):
        self.rule = rule

    def __call__(self, completions: list[str], answer: list[int], **_) -> list[float]:
        return [1.0 if extract_int(c, self.rule) == int(a) else -1.0 for c, a in zip(completions, answer)]


def reward_functions(cfg: DAPOConfig) -> list:
    """[correctness (+1 / -1), soft overlong punishment (0 .. -1; L_max = max_new_tokens, L_cache = cache_len)]."""
    from trl.rewards import get_soft_overlong_punishment

    return [CorrectnessReward(cfg.answer_rule), get_soft_overlong_punishment(cfg.max_new_tokens, cfg.cache_len)]


# --------------------------------------------------------------------------------------------- SAE-arm variant
@dataclass(frozen=True)
class SteeredRowPolicy:
    """How the steered rollouts enter the DAPO loss (the vanilla arm has none; defaults = the report's recipe)."""

    weight: float = 1.0
    """Multiplier of the steered rows' advantages (1: plain DAPO on them)."""
    aggregation: str = "token"
    """"token": DAPO's token-level weight (a long looping row weighs by its length); "sequence": a steered row
    weighs like one normal row of mean length (its advantage x mean normal length / its length)."""
    drop_truncated: bool = False
    """Zero the advantage of steered rows that ran to the length limit (their signal is the overlong penalty)."""
    drop_overlong_only: bool = False
    """Zero the advantage of steered rows whose correctness equals that of every normal row of their group: their
    advantage then comes only from the overlong penalty (e.g. all rollouts wrong, the steered one longer)."""
    baseline: str = "group"
    """"group": the report's recipe, the steered row shares its group's mean / std with the normal rows; "normal":
    normal rows are normalised among themselves (exactly vanilla DAPO on G - 1 rollouts, zero-sum advantages),
    the steered row gets (r - mean of the normal rows) / (group std): its own push-down term."""

    def __post_init__(self):
        if self.aggregation not in ("token", "sequence"):
            raise ValueError(f"aggregation must be 'token' or 'sequence', not {self.aggregation!r}")
        if self.baseline not in ("group", "normal"):
            raise ValueError(f"baseline must be 'group' or 'normal', not {self.baseline!r}")
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")

    @property
    def name(self) -> str:
        s = f"{self.aggregation}, w={self.weight:g}"
        s += ", drop truncated" if self.drop_truncated else ""
        s += ", drop overlong-only" if self.drop_overlong_only else ""
        return s + (", normal-row baseline" if self.baseline == "normal" else "")


def steered_advantages(adv: torch.Tensor, steered: torch.Tensor, lengths: torch.Tensor, truncated: torch.Tensor,
                       policy: SteeredRowPolicy, rewards: torch.Tensor | None = None, G: int | None = None,
                       eps: float = 1e-4, correct: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) advantages with the steered rows re-weighted by ``policy`` (normal rows unchanged, except with
    ``baseline="normal"``, which needs the (B,) ``rewards`` and the group size ``G``; rows are group-major)."""
    out = adv.clone()
    s = steered.bool()
    if not s.any():
        return out
    if policy.baseline == "normal":
        if rewards is None or G is None:
            raise ValueError("baseline='normal' needs the rewards and the group size G")
        r, sg = rewards.float().view(-1, G), s.view(-1, G)
        nm = ~sg
        cnt = nm.sum(1, keepdim=True).clamp_min(1)
        mean_n = (r * nm).sum(1, keepdim=True) / cnt
        std_n = (((r - mean_n) ** 2 * nm).sum(1, keepdim=True) / (cnt - 1).clamp_min(1)).sqrt()
        std_all = r.std(1, keepdim=True)
        a = torch.where(nm, (r - mean_n) / (std_n + eps), (r - mean_n) / (std_all + eps))
        out = a.reshape(-1).to(adv.dtype)
        adv = out.clone()
    w = torch.full_like(adv, float(policy.weight))
    if policy.aggregation == "sequence":
        ref = lengths[~s].float().mean() if (~s).any() else lengths.float().mean()
        w = w * ref / lengths.float().clamp_min(1)
    if policy.drop_truncated:
        w = torch.where(truncated.bool(), torch.zeros_like(w), w)
    if policy.drop_overlong_only:
        if correct is None or G is None:
            raise ValueError("drop_overlong_only needs the correctness rewards and the group size G")
        c, sg = correct.float().view(-1, G), s.view(-1, G)
        big = torch.finfo(c.dtype).max
        lo = torch.where(sg, torch.full_like(c, big), c).min(1, keepdim=True).values
        hi = torch.where(sg, torch.full_like(c, -big), c).max(1, keepdim=True).values
        same = ((c == lo) & (c == hi)).reshape(-1)           # steered row's correctness = every normal row's
        w = torch.where(same, torch.zeros_like(w), w)
    out[s] = adv[s] * w[s]
    return out


# --------------------------------------------------------------------------------------------- rollouts
class SteeredRollouts:
    """TRL ``rollout_func``: sample the generation batch (in one ``generate``, or in token-budgeted groups
    with ``max_batch_tokens``); steer rows 0, G, 2G, ... if asked.

    Returns prompt_ids / completion_ids (up to and including the first end-of-text) / logprobs (the
    sampler's, steered for steered rows) per entry, plus extra fields ``steered``, ``hit_limit`` and
    ``loops`` (the detector's verdict) that reach the reward functions and the trainer.
    """

    def __init__(self, tokenizer, G: int, max_new_tokens: int, temperature: float = 1.0,
                 steer_vectors: Mapping[int, torch.Tensor] | None = None, n_steered: int = 1, seed: int = 0,
                 detector: RepetitionDetector | None = None, max_batch_tokens: int | None = None):
        if steer_vectors and not 0 < n_steered < G:
            raise ValueError(f"n_steered={n_steered} must be in 1..G-1={G - 1} (a group needs a normal rollout)")
        self.tok, self.G, self.max_new, self.temperature = tokenizer, G, max_new_tokens, temperature
        self.steer = dict(steer_vectors) if steer_vectors else None
        self.n_steered, self.seed, self.detector = n_steered, seed, detector
        self.max_batch_tokens = max_batch_tokens      # generation token budget (DAPOConfig.max_batch_tokens)
        self.calls = 0

    def steered_rows(self, n: int) -> list[int]:
        """Rows to steer in a batch of n consecutive groups: the first ``n_steered`` of each group."""
        if n % self.G:
            raise ValueError(f"{n} prompts are not whole groups of G={self.G}: make the per-process generation "
                             f"batch (per_device_train_batch_size x steps_per_generation) a multiple of G")
        return steered_rows(n // self.G, self.G, self.n_steered) if self.steer else []

    @torch.no_grad()
    def __call__(self, prompts: list[str], trainer) -> dict:
        rows = self.steered_rows(len(prompts))
        for g in range(0, len(prompts), self.G):
            if len(set(prompts[g:g + self.G])) != 1:
                raise ValueError("rollout_func expects each prompt repeated G times in consecutive rows (TRL's order)")
        proc = getattr(trainer.accelerator, "process_index", 0)
        step = getattr(trainer.state, "global_step", self.calls)
        self.calls += 1
        with _generation_model(trainer) as model:
            out = sample_with_logprobs(model, self.tok, prompts, self.max_new, self.temperature,
                                       seed=self.seed * 100_003 + 7919 * step + 104_729 * proc,
                                       steer_vectors=self.steer, steer_rows=rows,
                                       max_batch_tokens=self.max_batch_tokens)
        flags = [r in set(rows) for r in range(len(prompts))]
        loops = [bool(self.detector(c, hit_limit=h)) if self.detector else False
                 for c, h in zip(out["completion_ids"], out["hit_limit"])]
        return {**out, "steered": flags, "loops": loops}


def _generation_model(trainer):
    """Context giving the plain model to ``generate`` with: TRL's ``unwrap_model_for_generation`` (gathers
    ZeRO-3 shards, unwraps DDP / FSDP) inside a trainer; the model itself for a bare stand-in (tests)."""
    if hasattr(trainer, "model_wrapped"):
        from trl.models import unwrap_model_for_generation

        return unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator)
    return contextlib.nullcontext(trainer.accelerator.unwrap_model(trainer.model))


def sample_with_logprobs(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
                         seed: int, steer_vectors=None, steer_rows=None, max_batch_tokens: int | None = None) -> dict:
    """Seeded batched ``generate`` (left padding, KV cache, full softmax at ``temperature``).

    Returns lists per row: prompt_ids (unpadded), completion_ids (up to and including the first end-of-text),
    logprobs (the sampler's log-prob of each completion token) and hit_limit (no end-of-text).
    The log-probs are kept one decode step at a time (:class:`~qscope_utils.batching.ChosenLogprobRecorder`),
    never as a (rows x steps x vocab) tensor. max_batch_tokens: None = all prompts in ONE batch; otherwise
    consecutive groups of at most that many tokens (rows x (prompt + max_new_tokens), what the KV cache
    holds) run one after another from one seeded random stream
    (:func:`~qscope_utils.repetition.generation_groups`)."""
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    res = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "hit_limit": []}
    try:
        for g in generation_groups(tokenizer, prompts, max_new_tokens, max_batch_tokens):
            part = _sample_batch(model, tokenizer, [prompts[i] for i in g], max_new_tokens, temperature,
                                 steer_vectors, local_rows(steer_rows, g))
            for k in res:
                res[k] += part[k]
    finally:
        model.train(was_training)
    return res


def _sample_batch(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float,
                  steer_vectors, steer_rows) -> dict:
    """One left-padded sampled ``generate`` batch with per-token log-probs (the caller seeds the stream)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper

    enc, eos, pad = left_padded_batch(model, tokenizer, prompts)
    rec = ChosenLogprobRecorder()
    # temperature applied by our own warper BEFORE the recorder (generate appends its warpers after custom
    # processors), so the recorder sees the scores the sampler draws from
    procs = ([TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []) + [rec]
    kw = dict(max_new_tokens=max_new_tokens, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
              pad_token_id=pad, eos_token_id=sorted(eos), use_cache=True, logits_processor=LogitsProcessorList(procs))
    if steer_vectors and steer_rows != []:
        with steer(model, steer_vectors, rows=steer_rows):
            gen = model.generate(**enc, **kw)
    else:
        gen = model.generate(**enc, **kw)
    P = enc["input_ids"].shape[1]
    seq = gen[:, P:]
    tok_lp = rec.finish(gen).cpu()                                                    # (B, T) float32
    res = {"prompt_ids": [], "completion_ids": [], "logprobs": [], "hit_limit": []}
    for i in range(seq.shape[0]):
        am = enc["attention_mask"][i].bool()
        ids = seq[i].tolist()
        cut = next((k + 1 for k, t in enumerate(ids) if t in eos), None)
        n = cut if cut is not None else min(len(ids), max_new_tokens)
        res["prompt_ids"].append(enc["input_ids"][i][am].tolist())
        res["completion_ids"].append(ids[:n])
        res["logprobs"].append(tok_lp[i, :n].tolist())
        res["hit_limit"].append(cut is None)
    return res


# --------------------------------------------------------------------------------------------- trainer
def problem_dataset(problems) -> "datasets.Dataset":
    """Prompts and integer answers as the ``datasets.Dataset`` TRL samples from."""
    import datasets

    return datasets.Dataset.from_dict({"prompt": [p.prompt for p in problems], "answer": [int(p.answer) for p in problems]})


def grpo_config(cfg: DAPOConfig, output_dir: str | Path, use_cpu: bool = True, num_processes: int = 1,
                bf16: bool = False):
    """TRL ``GRPOConfig`` for a DAPOConfig: one generation batch = n_prompts x G rollouts, split into
    ``cfg.minibatches`` optimizer steps, each ``accumulation`` passes of ``cfg.micro_batch`` rows
    (``per_device_train_batch_size``; ``steps_per_generation = minibatches x accumulation``),
    ``cfg.ppo_epochs`` passes (``num_iterations``); ``max_steps = n_steps x minibatches x ppo_epochs``."""
    from trl import GRPOConfig

    rollouts = cfg.n_prompts * cfg.G
    per = rollouts // (cfg.minibatches * num_processes)
    if per * cfg.minibatches * num_processes != rollouts:
        raise ValueError(f"n_prompts x G = {rollouts} rollouts do not split into {cfg.minibatches} mini-batches x "
                         f"{num_processes} processes: change minibatches or n_prompts")
    if (per * cfg.minibatches) % cfg.G:
        raise ValueError(f"each process's generation batch ({per * cfg.minibatches}) must hold whole groups of "
                         f"G={cfg.G}: change n_prompts or the number of processes")
    micro = min(cfg.micro_batch or per, per)        # a mini-batch smaller than micro_batch is one pass
    if micro < 1 or per % micro:
        raise ValueError(f"micro_batch={cfg.micro_batch} must divide the {per} rows each process trains per "
                         f"mini-batch (n_prompts x G / (minibatches x processes)): choose a divisor of {per}")
    accum = per // micro
    return GRPOConfig(
        output_dir=str(output_dir), loss_type="dapo", epsilon=cfg.eps_low, epsilon_high=cfg.eps_high, beta=0.0,
        scale_rewards="group", num_generations=cfg.G, per_device_train_batch_size=micro,
        steps_per_generation=cfg.minibatches * accum, num_iterations=cfg.ppo_epochs, gradient_accumulation_steps=accum,
        gradient_checkpointing=cfg.grad_checkpointing,
        max_steps=cfg.n_steps * cfg.minibatches * cfg.ppo_epochs, max_completion_length=cfg.max_new_tokens,
        temperature=cfg.temperature, top_k=0, top_p=1.0, learning_rate=cfg.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, mask_truncated_completions=False,
        use_cpu=use_cpu, bf16=bf16, seed=cfg.seed, data_seed=cfg.seed, logging_steps=1, save_strategy="no",
        report_to="none", disable_tqdm=True, log_completions=False, shuffle_dataset=True)


@functools.lru_cache(maxsize=None)
def _trainer_class():
    from trl import GRPOTrainer

    class DAPOTrainer(GRPOTrainer):
        """``GRPOTrainer`` that re-weights steered rows (:class:`SteeredRowPolicy`) and keeps per-batch curves."""

        def __init__(self, *a, steered_policy: SteeredRowPolicy | None = None, **kw):
            super().__init__(*a, **kw)
            self.steered_policy = steered_policy or SteeredRowPolicy()
            self.curves: list[dict] = []
            self.last_batch: dict | None = None      # the last generation batch (tests read it)

        def _generate_and_score_completions(self, inputs):
            t0 = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            steered = torch.tensor([bool(x.get("steered", False)) for x in inputs], device=out["advantages"].device)
            hit = torch.tensor([bool(x.get("hit_limit", False)) for x in inputs], device=steered.device)
            loops = torch.tensor([bool(x.get("loops", False)) for x in inputs])
            lengths = out["completion_mask"].sum(1)
            raw = out["advantages"].clone()
            fns = self.reward_funcs
            correct = torch.tensor(fns[0](completions=self.processing_class.batch_decode(
                [c[m.bool()] for c, m in zip(out["completion_ids"], out["completion_mask"])], skip_special_tokens=True),
                answer=[x["answer"] for x in inputs]))
            over = torch.tensor(fns[1](completion_ids=[c[m.bool()].tolist() for c, m in
                                                         zip(out["completion_ids"], out["completion_mask"])]))
            rew, s, n = correct + over, steered.cpu(), ~steered.cpu()
            out["advantages"] = steered_advantages(raw, steered, lengths, hit, self.steered_policy,
                                                   rew.to(raw.device), self.num_generations,
                                                   correct=correct.to(raw.device))
            self.last_batch = {**{k: v for k, v in out.items()}, "steered": steered, "raw_advantages": raw}
            rec = {"step": len(self.curves), "reward": float(rew[n].mean()), "accuracy": float((correct[n] > 0).float().mean()),
                   "repeat_ratio": float(loops[n].float().mean()), "length": float(lengths.cpu()[n].float().mean()),
                   "gen_seconds": time.perf_counter() - t0}
            if s.any():
                rec.update(steered_reward=float(rew[s].mean()), steered_repeat_ratio=float(loops[s].float().mean()),
                           steered_advantage=float(raw.cpu()[s].mean()), steered_length=float(lengths.cpu()[s].float().mean()))
            self.curves.append(rec)
            return out

    return DAPOTrainer


def __getattr__(name):  # DAPOTrainer is built lazily so that importing this module does not import TRL
    if name == "DAPOTrainer":
        return _trainer_class()
    raise AttributeError(name)


def build_dapo_trainer(model: nn.Module, tokenizer, cfg: DAPOConfig, detector: RepetitionDetector | None = None,
                       steer_vectors: Mapping[int, torch.Tensor] | None = None, policy: SteeredRowPolicy | None = None,
                       output_dir: str | Path | None = None, use_cpu: bool = True, bf16: bool = False,
                       copy_model: bool = True, lora_r: int = 0, progress: bool = False):
    """The :class:`DAPOTrainer` of one arm on (a copy of) ``model`` in training precision, after the memory
    check (one pass = ``micro_batch`` rows x (longest training prompt + L_max) tokens)."""
    from .sasft_trainer import _lora, _zero3, check_fits, master_weights, quiet

    nproc = int(os.environ.get("WORLD_SIZE", "1"))
    out = output_dir or tempfile.mkdtemp(prefix="dapo_")
    args = grpo_config(cfg, out, use_cpu=use_cpu, num_processes=nproc, bf16=bf16)
    problems = _problems(cfg, "train", cfg.n_train_problems, cfg.seed)
    check_fits(model, lora_r=lora_r, base_bytes=4 if _zero3() else next(model.parameters()).element_size(),
               tokens_per_micro_batch=args.per_device_train_batch_size * (
                   _longest_prompt(tokenizer, problems) + cfg.max_new_tokens),
               use_cpu=use_cpu, gpu_memory_gb=cfg.gpu_memory_gb, grad_checkpointing=cfg.grad_checkpointing, what="DAPO")
    tr = _trainer_class()
    m = copy.deepcopy(model) if copy_model else model
    master_weights(m, lora_r)       # float32 master weights (bf16 only autocasts); LoRA: fp32 adapters
    for p in m.parameters():
        p.requires_grad_(True)
    m.train()
    rollout = SteeredRollouts(tokenizer, cfg.G, cfg.max_new_tokens, cfg.temperature, steer_vectors, cfg.n_steered,
                              cfg.seed, detector, max_batch_tokens=cfg.max_batch_tokens)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    trainer = tr(model=m, reward_funcs=reward_functions(cfg), args=args, train_dataset=problem_dataset(problems),
                 processing_class=tokenizer, rollout_func=rollout, steered_policy=policy,
                 peft_config=_lora(lora_r) if lora_r else None)
    if not progress:
        quiet(trainer)
    return trainer


def train_dapo(model: nn.Module, tokenizer, cfg: DAPOConfig, detector: RepetitionDetector | None = None,
               steer_vectors: Mapping[int, torch.Tensor] | None = None, policy: SteeredRowPolicy | None = None,
               output_dir: str | Path | None = None, use_cpu: bool = True, bf16: bool = False, copy_model: bool = True,
               lora_r: int = 0, progress: bool = False) -> tuple[nn.Module, pd.DataFrame]:
    """DAPO (vanilla, or the SAE arm with ``steer_vectors``) on TRL; returns (policy in eval mode, curves).

    curves: one row per generation batch (= DAPO step): reward / accuracy / repeat ratio / length of the
    normal rollouts, the steered rollouts' reward / repeat ratio / raw advantage, and TRL's loss, clip
    fractions (low / high), grad norm averaged over the batch's mini-batch updates; seconds.
    """
    trainer = build_dapo_trainer(model, tokenizer, cfg, detector, steer_vectors, policy, output_dir, use_cpu, bf16,
                                 copy_model, lora_r, progress)
    t0 = time.perf_counter()
    trainer.train()
    curves = _curves(trainer.curves, trainer.state.log_history, cfg.minibatches * cfg.ppo_epochs)
    curves["seconds"] = (time.perf_counter() - t0) / max(len(curves), 1)
    policy_model = trainer.model
    if lora_r:
        policy_model = policy_model.merge_and_unload()
    return policy_model.eval(), curves


def _longest_prompt(tokenizer, problems) -> int:
    """Tokens of the longest training prompt (with the micro-batch and L_max: one pass's padded length)."""
    return max((len(tokenizer(p.prompt)["input_ids"]) for p in problems), default=0)


def _curves(batches: list[dict], history: list[dict], per_batch: int) -> pd.DataFrame:
    steps = [h for h in history if "loss" in h and "train_runtime" not in h]
    rows = []
    for i, b in enumerate(batches):
        hs = steps[i * per_batch:(i + 1) * per_batch]
        agg = lambda k: float(np.mean([h[k] for h in hs if k in h])) if any(k in h for h in hs) else float("nan")
        rows.append({**b, "loss": agg("loss"), "clip_low": agg("clip_ratio/low_mean"),
                     "clip_high": agg("clip_ratio/high_mean"), "grad_norm": agg("grad_norm")})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- CLI (accelerate)
def run_job(job_path: str | Path) -> None:
    """Run one DAPO arm from its JSON spec (written by :func:`qscope_utils.launch.write_dapo_job`)."""
    from accelerate import PartialState

    from .launch import load_dapo_job

    job = load_dapo_job(job_path)
    cfg = job["cfg"]
    v = job["variant"]
    det = RepetitionDetector(**v["detector"]) if v.get("detector") else None
    pol = SteeredRowPolicy(**v["policy"]) if v.get("policy") else None
    st = PartialState()
    policy, curves = train_dapo(job["model"], job["tokenizer"], cfg, det, job["steer"], pol, output_dir=job["out"],
                                use_cpu=bool(v.get("use_cpu", True)), bf16=bool(v.get("bf16", False)),
                                copy_model=False, lora_r=int(v.get("lora_r", 0)))
    if st.is_main_process:
        out = Path(job["out"])
        policy.save_pretrained(out / "model")
        job["tokenizer"].save_pretrained(out / "model")
        curves.to_csv(out / "train_log.csv", index=False)
        (out / "DONE").write_text(json.dumps({"steps": len(curves), "processes": st.num_processes}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="DAPO / SAE-guided DAPO on TRL (use under `accelerate launch`)")
    ap.add_argument("--job", required=True, help="job.json written by qscope_utils.launch.write_dapo_job")
    run_job(ap.parse_args(argv).job)


if __name__ == "__main__":
    main()
