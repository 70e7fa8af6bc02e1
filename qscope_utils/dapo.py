"""DAPO without dynamic sampling, and its SAE-guided variant (docs/CONVENTIONS.md §8).

What is implemented (DAPO, Yu et al. 2025, minus dynamic sampling; no KL term):

* groups of G rollouts per prompt; group-normalised advantages ``A = (r - mean_g r) / (std_g r + eps)``
  (std with Bessel's correction, as in the DAPO/TRL reference code), the same A for every token of a response;
* clip-higher: ``ratio = pi_theta / pi_old`` per token, loss ``max(-A ratio, -A clip(ratio, 1 - eps_low, 1 + eps_high))``
  with ``eps_high > eps_low``;
* token-level aggregation: loss = sum over ALL response tokens of the batch / number of those tokens
  (long responses weigh more, unlike GRPO's per-sequence mean);
* overlong reward shaping: 0 up to ``L_max - L_cache`` tokens, then a linear penalty down to -1 at ``L_max``;
* verifiable reward on the mini corpus's arithmetic (:mod:`qscope_utils.mini.tasks`): 1 if the first
  integer of the response equals the answer, else 0, plus the overlong penalty (paper profile: GSM8K
  train / MGSM, last integer of a chain-of-thought response).

SAE variant: in every group one of the G rollouts is generated with ``h <- h + alpha * W_dec[:, f]``
(f = a repetition feature) at every prompt position and decode step, using the shared row-selective
:func:`qscope_utils.steering.steer` on that row only; it is scored by the same reward and enters the
same group normalisation. Its log-probs (old and new) are those of the UNSTEERED policy, so the update
pushes the policy away from the looping response it would otherwise not have sampled.

Why not TRL: TRL is not installed here, and its GRPO trainer (which has ``loss_type="dapo"``) generates
all completions itself with no hook to steer one completion per group; injecting them would mean
subclassing its private generation path. The loop below is short and unit-tested instead.
"""
from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .repetition import RepetitionDetector, Rollouts, sample_rollouts

__all__ = ["group_advantages", "overlong_penalty", "dapo_loss", "response_logprobs", "extract_int", "answer_correct", "task_rewards", "hf_problems",
           "steered_rows", "DAPOConfig", "train_dapo", "evaluate_policy", "heldout_perplexity",
           "PAPER_MODELS", "paper_compute"]


# --------------------------------------------------------------------------------------------- pieces
def group_advantages(rewards: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(n_groups, G) rewards -> (n_groups, G) advantages (r - mean) / (std + eps), std unbiased (G - 1).

    A group with equal rewards gets advantage 0 everywhere (no signal; DAPO's dynamic sampling
    would drop it, here it stays in the batch and only adds tokens to the denominator).
    """
    if rewards.ndim != 2 or rewards.shape[1] < 2:
        raise ValueError(f"rewards must be (n_groups, G) with G >= 2, got {tuple(rewards.shape)}")
    r = rewards.float()
    return (r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + eps)


def overlong_penalty(lengths: torch.Tensor, max_len: int, cache_len: int) -> torch.Tensor:
    """DAPO soft overlong punishment (lengths in tokens, float tensor of the same shape).

    0 if L <= max_len - cache_len; (max_len - cache_len - L) / cache_len in the last ``cache_len``
    tokens (reaches -1 at L = max_len); -1 beyond max_len.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}")
    L = lengths.float()
    soft = (max_len - cache_len - L) / cache_len
    return torch.where(L <= max_len - cache_len, torch.zeros_like(L), torch.where(L <= max_len, soft, -torch.ones_like(L)))


def dapo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
              eps_low: float = 0.2, eps_high: float = 0.28) -> tuple[torch.Tensor, dict]:
    """Clip-higher policy-gradient loss with token-level aggregation.

    logp, old_logp: (B, T) log-probs of the sampled response tokens under the current / old policy;
    advantages: (B,) one per response; mask: (B, T) response tokens. Returns (scalar loss, stats) with
    stats = {'clip_low', 'clip_high' (share of tokens where the clipped branch is active and the
    ratio is below 1 - eps_low / above 1 + eps_high), 'ratio_mean', 'n_tokens'}.
    """
    if logp.shape != old_logp.shape or logp.shape != mask.shape or advantages.shape != logp.shape[:1]:
        raise ValueError(f"shapes: logp {tuple(logp.shape)}, old_logp {tuple(old_logp.shape)}, mask "
                         f"{tuple(mask.shape)}, advantages {tuple(advantages.shape)} (want (B,T),(B,T),(B,T),(B,))")
    m = mask.to(logp.dtype)
    n_tok = m.sum()
    if n_tok == 0:
        raise ValueError("no response tokens in the batch")
    ratio = torch.exp(logp - old_logp)
    A = advantages[:, None].to(logp.dtype)
    pg1 = -A * ratio
    pg2 = -A * ratio.clamp(1 - eps_low, 1 + eps_high)
    per_tok = torch.maximum(pg1, pg2)
    loss = (per_tok * m).sum() / n_tok
    with torch.no_grad():
        clipped = (pg2 > pg1) & mask.bool()
        stats = {"clip_low": float((clipped & (ratio < 1 - eps_low)).sum() / n_tok),
                 "clip_high": float((clipped & (ratio > 1 + eps_high)).sum() / n_tok),
                 "ratio_mean": float((ratio * m).sum() / n_tok), "n_tokens": int(n_tok)}
    return loss, stats


def response_logprobs(model: nn.Module, ro: Rollouts, temperature: float = 1.0) -> torch.Tensor:
    """(B, T) log-probs of the response tokens of ``ro`` under ``model`` (logits / temperature).

    Position ids follow the attention mask (left padding), as in generation, so at the sampling
    policy these equal the sampler's log-probs. Masked positions hold arbitrary finite values.
    """
    am = ro.attention_mask.to(model.device)
    ids = ro.input_ids.to(model.device)
    pos = (am.cumsum(1) - 1).clamp_min(0)
    P, T = ro.prompt_len, ids.shape[1] - ro.prompt_len
    # only the T + 1 last positions go through the LM head (positions P-1 .. P+T-1; the last is dropped)
    logits = model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=False, logits_to_keep=T + 1).logits
    lg = logits[:, :-1].float() / temperature                # predicts tokens P .. P+T-1
    return torch.gather(F.log_softmax(lg, -1), 2, ids[:, P:, None]).squeeze(2)


_INT_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?!\d)|-?\d+")


def extract_int(text: str, rule: str = "first") -> int | None:
    """The answer integer of a response, or None.

    ``"first"``: the first integer (mini: the answer comes right after the prompt), exactly
    :func:`qscope_utils.mini.tasks.extract_answer`; ``"last"``: the last integer (chain-of-thought
    responses, paper profile), thousands separators understood ("1,234" -> 1234).
    """
    from .mini.tasks import extract_answer

    if rule == "first":
        return extract_answer(text)
    if rule != "last":
        raise ValueError(f"rule must be 'first' or 'last', not {rule!r}")
    hits = _INT_THOUSANDS.findall(text)
    return int(hits[-1].replace(",", "")) if hits else None


def answer_correct(texts: list[str], answers: list[int], rule: str = "first") -> torch.Tensor:
    """(B,) float: 1 if the first (or last) integer of response i equals answers[i], else 0."""
    if len(texts) != len(answers):
        raise ValueError(f"{len(texts)} responses but {len(answers)} answers")
    return torch.tensor([float(extract_int(t, rule) == a) for t, a in zip(texts, answers)], dtype=torch.float32)


def task_rewards(texts: list[str], answers: list[int], lengths: torch.Tensor, max_len: int,
                 cache_len: int, rule: str = "first") -> tuple[torch.Tensor, torch.Tensor]:
    """(reward, correct): reward = correct + overlong penalty (lengths (B,) in tokens, L_max, L_cache)."""
    correct = answer_correct(texts, answers, rule)
    return correct + overlong_penalty(lengths, max_len, cache_len), correct


def steered_rows(n_groups: int, G: int, n_steered: int = 1) -> list[int]:
    """Batch rows to steer: the last ``n_steered`` rollouts of each group (rows are group-major)."""
    if not 0 <= n_steered < G:
        raise ValueError(f"n_steered={n_steered} must be in 0..G-1={G - 1} (a group needs a normal rollout)")
    return [g * G + j for g in range(n_groups) for j in range(G - n_steered, G)]


# --------------------------------------------------------------------------------------------- config
# The report gives no RL hyper-parameters, layer, feature or alpha: DAPO's published values where
# they exist, otherwise choices, all overridable. Layers are middle-to-late guesses (parameters).
PAPER_MODELS = {
    "1.7B": {"backbone": "Qwen/Qwen3-1.7B-Base", "sae_repo": "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50",
             "layer": 18, "n_params": 1.7e9, "n_layers": 28, "d_model": 2048},
    "8B": {"backbone": "Qwen/Qwen3-8B-Base", "sae_repo": "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50",
           "layer": 24, "n_params": 8.2e9, "n_layers": 36, "d_model": 4096},
}


@dataclass
class DAPOConfig:
    """DAPO run sizes. G rollouts per prompt, ``n_prompts`` prompts per step, ``n_steps`` steps;
    eps_low / eps_high: clip-higher; max_new_tokens = L_max, cache_len = L_cache (overlong shaping);
    ppo_epochs: updates per batch on the same rollouts (old log-probs computed once per batch);
    n_steered: rollouts per group steered toward repetition in the SAE arm; alpha: their strength
    (None = chosen from the steering sweep, :func:`qscope_utils.repetition.pick_alpha`)."""

    G: int = 4
    n_prompts: int = 8
    n_steps: int = 30
    lr: float = 2e-4
    eps_low: float = 0.2
    eps_high: float = 0.28
    adv_eps: float = 1e-6
    max_new_tokens: int = 24
    cache_len: int = 8
    temperature: float = 1.0
    ppo_epochs: int = 2
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    n_steered: int = 1
    alpha: float | None = None
    styles: tuple[str, ...] = ("gsm", "math")
    n_train_problems: int = 2000
    n_eval_problems: int = 150
    n_ppl_texts: int = 96
    seed: int = 0
    paper_model: str | None = None
    answer_rule: str = "first"
    train_data: tuple[str, str | None, str] | None = None   # (dataset id, config, split) for the paper profile
    eval_data: tuple[str, str | None, str] | None = None
    prompt_template: str = "Question: {question}\nAnswer: Let's think step by step."

    def __post_init__(self):
        if self.eps_high < self.eps_low:
            raise ValueError(f"clip-higher needs eps_high >= eps_low, got {self.eps_high} < {self.eps_low}")
        steered_rows(1, self.G, self.n_steered)  # validates G / n_steered
        overlong_penalty(torch.zeros(1), self.max_new_tokens, self.cache_len)  # validates lengths

    @classmethod
    def for_profile(cls, name: str, paper_model: str = "8B") -> "DAPOConfig":
        if name == "smoke":
            return cls(G=3, n_prompts=2, n_steps=2, max_new_tokens=12, cache_len=4, ppo_epochs=1,
                       n_train_problems=50, n_eval_problems=8, n_ppl_texts=8)
        if name == "mini":
            return cls()
        if name == "paper":
            if paper_model not in PAPER_MODELS:
                raise ValueError(f"paper_model must be one of {list(PAPER_MODELS)}, not {paper_model!r}")
            # DAPO paper: eps 0.2 / 0.28, lr 1e-6, L_cache 4096 of L_max 20480, G = 16, 512 prompts per step
            # data: GSM8K train for RL, MGSM (en; the report's benchmark, other languages via eval_data) for eval
            return cls(G=8, n_prompts=64, n_steps=200, lr=1e-6, max_new_tokens=4096, cache_len=1024,
                       ppo_epochs=1, n_train_problems=7473, n_eval_problems=250, n_ppl_texts=1000,
                       paper_model=paper_model, answer_rule="last", train_data=("openai/gsm8k", "main", "train"),
                       eval_data=("juletxara/mgsm", "en", "test"))
        raise ValueError(f"unknown profile {name!r}: choose mini, smoke or paper")

    def profile_overrides(self) -> dict:
        """get_profile('paper', **overrides) for the chosen paper model (empty for built profiles)."""
        if self.paper_model is None:
            return {}
        m = PAPER_MODELS[self.paper_model]
        return {"backbone": m["backbone"], "sae_repo": m["sae_repo"]}


def paper_compute(model: str, cfg: DAPOConfig | None = None, mean_len_frac: float = 0.5,
                  mfu: float = 0.35, peak_flops: float = 989e12) -> dict:
    """Rough compute of one DAPO arm for a paper model (H100 bf16 dense peak by default).

    Training FLOPs ~ 6 N tokens per update epoch (+ 2 N tokens for the old-log-prob pass and 2 N for
    generation), tokens = steps x prompts x G x mean response length (``mean_len_frac`` x L_max).
    Decoding is memory-bound in practice, so the GPU-hours are a lower bound; say so when quoting.
    """
    cfg = cfg or DAPOConfig.for_profile("paper", model)
    N = PAPER_MODELS[model]["n_params"]
    tok = cfg.n_steps * cfg.n_prompts * cfg.G * cfg.max_new_tokens * mean_len_frac
    flops = tok * N * (2 + 2 + 6 * cfg.ppo_epochs)
    return {"model": model, "tokens": tok, "flops": flops, "gpu_hours_lower_bound": flops / (mfu * peak_flops) / 3600,
            "train_memory_gb_full_adamw": N * 16 / 1e9}


# --------------------------------------------------------------------------------------------- data
def hf_problems(dataset_id: str, config: str | None, split: str, n: int | None = None, seed: int = 0,
                template: str = "Question: {question}\nAnswer: Let's think step by step.") -> list:
    """Math word problems with integer answers from the hub (paper profile) as ``mini.tasks.Problem`` s.

    Read through the :mod:`qscope_utils.sources` adapter of ``dataset_id`` (GSM8K: ``question`` and an
    ``answer`` ending in ``#### 72``; MGSM: ``question`` and ``answer_number``), or ``datasets`` for other
    ids; rows without an integer answer are skipped.
    """
    from .mini.tasks import Problem
    from .sources import SourceNotAvailable, source_for_repo
    from .sources.gsm8k import final_answer

    src = source_for_repo(dataset_id, config)
    if src is not None:
        ds = src.load(config, split)
    else:
        import datasets

        try:
            ds = datasets.load_dataset(dataset_id, config, split=split)
        except Exception as e:
            raise SourceNotAvailable(f"cannot load {dataset_id!r} ({config}, {split}): {e}\nFix: run once with "
                                     f"network access so it lands in the HF cache (HF_HUB_OFFLINE unset).") from e
    if n is not None and n < len(ds):
        ds = ds.shuffle(seed=seed).select(range(n))
    out = []
    for row in ds:
        if row.get("answer_number") is not None:
            ans = float(row["answer_number"])
        elif "answer" in row and final_answer(row["answer"]) is not None:
            ans = final_answer(row["answer"])
        else:
            raise KeyError(f"{dataset_id} rows need 'answer_number' or an 'answer' with '####'; columns: {list(row)}")
        if ans.is_integer():
            out.append(Problem(template.format(question=row["question"].strip()), int(ans), dataset_id))
    return out


def _problems(cfg: DAPOConfig, split: str, n: int, seed: int):
    """n problems: the mini corpus's generated arithmetic (train / heldout split), or the paper datasets."""
    if cfg.train_data is not None:
        spec = cfg.train_data if split == "train" else cfg.eval_data
        return hf_problems(*spec, n=n, seed=seed, template=cfg.prompt_template)
    from .mini.tasks import make_problems

    per = [make_problems(math.ceil(n / len(cfg.styles)), style=s, seed=seed, split=split) for s in cfg.styles]
    out = [p for grp in zip(*per) for p in grp]  # interleave styles
    return out[:n]


def _step_batch(problems, cfg: DAPOConfig, step: int) -> list:
    """The step's prompts: a fixed permutation of the training problems (same for every arm)."""
    rng = np.random.default_rng(cfg.seed + 7919 * step)
    return [problems[i] for i in rng.choice(len(problems), size=cfg.n_prompts, replace=False)]


def _update(model, opt, ro: Rollouts, adv: torch.Tensor, cfg: DAPOConfig) -> dict:
    """ppo_epochs updates on one batch; old log-probs are computed once (no grad) before the first."""
    with torch.no_grad():
        old = response_logprobs(model, ro, cfg.temperature)
    mask = ro.response_mask.to(old.device)
    for _ in range(cfg.ppo_epochs):
        logp = response_logprobs(model, ro, cfg.temperature)
        loss, st = dapo_loss(logp, old, adv.to(logp.device), mask, cfg.eps_low, cfg.eps_high)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()
    return {"loss": float(loss.detach()), "grad_norm": float(gn), **st}


def train_dapo(model: nn.Module, tokenizer, cfg: DAPOConfig, detector: RepetitionDetector,
               steer_vectors: dict[int, torch.Tensor] | None = None, desc: str = "dapo",
               progress: bool = True) -> tuple[nn.Module, pd.DataFrame]:
    """Train a COPY of ``model`` with DAPO on the arithmetic train split; returns (policy, curves).

    steer_vectors: None for vanilla DAPO; {layer: alpha * W_dec[:, f]} for the SAE arm (the last
    ``cfg.n_steered`` rollouts of each group are steered). Prompts and sampling seeds depend only on
    (cfg.seed, step), so arms are matched. curves: one row per step with reward / accuracy / repeat
    ratio / length of the normal and the steered rollouts, loss, clip fractions, grad norm, seconds.
    """
    policy = copy.deepcopy(model).train()
    for p in policy.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    problems = _problems(cfg, "train", cfg.n_train_problems, cfg.seed)
    n_steer = cfg.n_steered if steer_vectors else 0
    rows_s = steered_rows(cfg.n_prompts, cfg.G, n_steer) if n_steer else []
    is_s = torch.zeros(cfg.n_prompts * cfg.G, dtype=torch.bool)
    is_s[rows_s] = True
    curves = []
    for step in tqdm(range(cfg.n_steps), desc=desc, disable=not progress):
        t0 = time.perf_counter()
        batch = _step_batch(problems, cfg, step)
        prompts = [p.prompt for p in batch for _ in range(cfg.G)]
        answers = [p.answer for p in batch for _ in range(cfg.G)]
        policy.eval()
        ro = sample_rollouts(policy, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature,
                             seed=cfg.seed * 100_003 + step, steer_vectors=steer_vectors if n_steer else None,
                             steer_rows=rows_s or None)
        policy.train()
        rew, correct = task_rewards(ro.texts, answers, ro.lengths, cfg.max_new_tokens, cfg.cache_len, cfg.answer_rule)
        adv = group_advantages(rew.view(cfg.n_prompts, cfg.G), cfg.adv_eps).view(-1)
        loops = torch.as_tensor(detector.flags(ro))
        st = _update(policy, opt, ro, adv, cfg)
        rec = {"step": step, "reward": float(rew[~is_s].mean()), "accuracy": float(correct[~is_s].mean()),
               "repeat_ratio": float(loops[~is_s].float().mean()), "length": float(ro.lengths[~is_s].float().mean()),
               **st, "seconds": time.perf_counter() - t0}
        if n_steer:
            rec.update(steered_reward=float(rew[is_s].mean()), steered_repeat_ratio=float(loops[is_s].float().mean()),
                       steered_advantage=float(adv[is_s].mean()))
        curves.append(rec)
    return policy.eval(), pd.DataFrame(curves)


# --------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def heldout_perplexity(model: nn.Module, tokenizer, texts: list[str], max_length: int = 128, n_boot: int = 1000,
                       seed: int = 0) -> dict:
    """Token-level perplexity exp(mean CE) on ``texts`` with a bootstrap CI over texts: {'ppl', 'lo', 'hi', 'n_tokens'}."""
    from .hooks import iter_batches
    from .recon import lm_loss
    ce, nt = [], []
    for _, enc in iter_batches(tokenizer, texts, batch_size=1, max_length=max_length):
        c, n = lm_loss(model, enc["input_ids"], enc["attention_mask"])
        if n:
            ce.append(c); nt.append(n)
    ce, nt = np.array(ce), np.array(nt)
    # ratio estimator: resample texts, ppl = exp(sum CE / sum tokens)
    if not len(ce):
        raise ValueError("no held-out tokens to score")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ce), size=(n_boot, len(ce)))
    boots = np.exp(ce[idx].sum(1) / nt[idx].sum(1))
    return {"ppl": float(np.exp(ce.sum() / nt.sum())), "lo": float(np.quantile(boots, 0.025)),
            "hi": float(np.quantile(boots, 0.975)), "n_tokens": int(nt.sum())}


def _ci(values: np.ndarray, n_boot: int, seed: int) -> dict:
    from .repetition import bootstrap_mean_ci

    return dict(zip(("mean", "lo", "hi"), bootstrap_mean_ci(values, n_boot, seed=seed)))


def _loops(model, tokenizer, prompts: list[str], detector: RepetitionDetector, n_samples: int, max_new_tokens: int,
           temperature: float, seed: int, n_boot: int, do_sample: bool = True, steer_vectors=None) -> dict:
    """Repeat ratio of ``n_samples`` responses per prompt (1 when greedy), bootstrap CI over prompts."""
    from .repetition import repeat_ratio

    k = n_samples if do_sample else 1
    ro = sample_rollouts(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens, temperature,
                         seed=seed, do_sample=do_sample, steer_vectors=steer_vectors)
    return repeat_ratio(detector.flags(ro).reshape(len(prompts), k), n_boot=n_boot, seed=seed)


def evaluate_policy(model: nn.Module, tokenizer, problems, detector: RepetitionDetector, n_samples: int,
                    max_new_tokens: int, temperature: float = 1.0, seed: int = 1234, n_boot: int = 1000,
                    ppl_texts: list[str] | None = None, extra_prompts: list[str] | None = None,
                    answer_rule: str = "first", stress_vectors: dict[int, torch.Tensor] | None = None) -> dict:
    """Held-out metrics of one policy, each {'ratio'|'mean', 'lo', 'hi'} with a 95% bootstrap CI over prompts:

    repeat_task: repeat ratio of ``n_samples`` sampled responses per held-out problem; acc_sampled (same
    samples) and acc_greedy; repeat_text / repeat_text_greedy on ``extra_prompts`` (e.g. corpus text
    prefixes); repeat_stress: repeat ratio of sampled task responses while steering with
    ``stress_vectors`` (how easily the policy is pushed into a loop); ppl on ``ppl_texts``.
    """
    model.eval()
    n = len(problems)
    prompts = [p.prompt for p in problems for _ in range(n_samples)]
    answers = [p.answer for p in problems for _ in range(n_samples)]
    ro = sample_rollouts(model, tokenizer, prompts, max_new_tokens, temperature, seed=seed)
    g = sample_rollouts(model, tokenizer, [p.prompt for p in problems], max_new_tokens, seed=seed, do_sample=False)
    from .repetition import repeat_ratio

    out = {"repeat_task": repeat_ratio(detector.flags(ro).reshape(n, n_samples), n_boot=n_boot, seed=seed),
           "acc_sampled": _ci(answer_correct(ro.texts, answers, answer_rule).view(n, -1).mean(1).numpy(), n_boot, seed),
           "acc_greedy": _ci(answer_correct(g.texts, [p.answer for p in problems], answer_rule).numpy(), n_boot, seed),
           "repeat_task_greedy": _ci(detector.flags(g).astype(float), n_boot, seed),
           "mean_len": float(ro.lengths.float().mean()),
           "examples": ro.texts[:: max(1, n_samples)][:6]}
    kw = dict(detector=detector, n_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature,
              n_boot=n_boot)
    if extra_prompts:
        out["repeat_text"] = _loops(model, tokenizer, extra_prompts, seed=seed + 1, **kw)
        out["repeat_text_greedy"] = _loops(model, tokenizer, extra_prompts, seed=seed + 1, do_sample=False, **kw)
    if stress_vectors:
        out["repeat_stress"] = _loops(model, tokenizer, [p.prompt for p in problems], seed=seed + 2,
                                      steer_vectors=stress_vectors, **kw)
    if ppl_texts:
        out["ppl"] = heldout_perplexity(model, tokenizer, ppl_texts)
    return out
