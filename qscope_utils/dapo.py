"""DAPO without dynamic sampling, and its SAE-guided variant (docs/CONVENTIONS.md §8): pieces, configuration, evaluation.

Training runs on TRL's ``GRPOTrainer(loss_type="dapo")`` (:mod:`qscope_utils.dapo_trainer`). This module
keeps the reference pieces TRL's configuration is tested against and what the notebook needs around them:

* :func:`dapo_loss`: clip-higher (``max(-A ratio, -A clip(ratio, 1 - eps_low, 1 + eps_high))``) with
  token-level aggregation (sum over all response tokens of the batch / their number), no KL: the
  hand-computed reference that TRL's loss is checked against in the tests;
* :func:`group_advantages`: ``(r - mean_g) / (std_g + eps)`` per group of G (Bessel's std, as TRL);
* :func:`overlong_penalty`: DAPO Eq. 13, checked against ``trl.rewards.get_soft_overlong_punishment``;
* rewards: the answer integer (:func:`extract_int`, :func:`answer_correct`); the training reward is
  +1 / -1 correctness (DAPO Eq. 7) plus the overlong penalty (:mod:`qscope_utils.dapo_trainer`);
* :func:`steered_rows`: the SAE arm steers the FIRST rollout of every group (rows 0, G, 2G, ...);
* :class:`DAPOConfig` (sizes per profile), :func:`hf_problems` (paper data), :func:`evaluate_policy`,
  :func:`heldout_perplexity`, :func:`paper_compute`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from .regime import GenerationRegime, regime_grid, regime_repeat_ratio
from .repetition import RepetitionDetector, Rollouts, sample_rollouts

__all__ = ["pick_variant", "group_advantages", "overlong_penalty", "dapo_loss", "extract_int", "answer_correct", "task_rewards", "hf_problems",
           "steered_rows", "DAPOConfig", "evaluate_policy", "heldout_perplexity",
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
    """Batch rows to steer: the FIRST ``n_steered`` rollouts of each group (rows are group-major, as TRL
    passes them to ``rollout_func``): rows 0, G, 2G, ... for n_steered = 1."""
    if not 0 <= n_steered < G:
        raise ValueError(f"n_steered={n_steered} must be in 0..G-1={G - 1} (a group needs a normal rollout)")
    return [g * G + j for g in range(n_groups) for j in range(n_steered)]


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
    minibatches: optimizer steps per rollout batch (TRL ``steps_per_generation``: the batch is split into
    that many mini-batches, old log-probs computed once per batch, so the clip binds from the second on);
    ppo_epochs: passes over the rollout batch (TRL ``num_iterations``);
    n_steered: rollouts per group steered toward repetition in the SAE arm; alpha: their strength
    (None = chosen from the steering sweep, :func:`qscope_utils.repetition.pick_alpha`).
    max_batch_tokens: token budget of ONE generation batch (rollouts, steering sweeps, evaluation), in
    padded tokens rows x (prompt + max_new_tokens), what the KV cache grows with; a larger rollout or
    evaluation set streams through consecutive batches (:func:`qscope_utils.repetition.sample_rollouts`).
    None = every set in one batch (mini / smoke: sampled results depend on batch composition, so those
    profiles keep one batch and their numbers do not move). Paper: 65,536 tokens = 15 rows of a 4,096-token
    response plus a ~150-token prompt; Qwen3-8B's KV cache is 147,456 bytes/token in bf16
    (:meth:`qscope_utils.model_shapes.BackboneShape.kv_bytes_per_token`), so 9.7 GB (19.3 GB for an fp32
    policy), against 250-320 GB for the 512-row rollout batch at once; per-step sampling logits are
    rows x 151,936 x 4 bytes (10 MB). Log-prob passes (perplexity) run the LM head on chunks of
    :data:`qscope_utils.batching.DEFAULT_CHUNK_TOKENS` positions.

    Evaluation regime of the ordinary-sampling repeat ratio (``repeat_task``; :mod:`qscope_utils.regime`):
    eval_temperature (0 = greedy), eval_max_new_tokens (length limit, tokens) and eval_min_new_tokens
    (tokens during which end-of-text is suppressed) fix it; all three None = chosen before any training by
    :func:`qscope_utils.regime.pick_regime` from a pilot of the pre-RL policy on ``n_regime_prompts``
    TRAINING-split problems over the grid ``regime_temperatures`` x ``regime_length_mults`` (multiples of
    max_new_tokens) x ``regime_eos_floors`` (share of the length limit during which end-of-text is
    suppressed), the cheapest setting whose repeat ratio lies in ``regime_band``, else the closest.
    RL rollouts, the steering screen, sweep and stress test keep max_new_tokens and temperature (the
    report trains with ordinary sampling)."""

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
    ppo_epochs: int = 1
    minibatches: int = 2
    micro_batch: int | None = None             # rows per forward / backward pass (TRL per_device_train_batch_size);
                                               # a mini-batch is reached by gradient accumulation; None: one pass
    grad_checkpointing: bool = False           # recompute each decoder layer in the backward (paper: on)
    gpu_memory_gb: float | None = None         # check the run fits a GPU of this size first (None: the CUDA device's)
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    n_steered: int = 1
    alpha: float | None = None
    styles: tuple[str, ...] = ("gsm", "math")
    n_train_problems: int = 2000
    n_eval_problems: int = 150
    n_val_problems: int = 48                   # training-split problems that choose the SAE-arm variant
    n_val_texts: int = 48                      # held-out texts for the variant's validation perplexity
    n_ppl_texts: int = 96
    seed: int = 0
    paper_model: str | None = None
    answer_rule: str = "first"
    train_data: tuple[str, str | None, str] | None = None   # (dataset id, config, split) for the paper profile
    eval_data: tuple[str, str | None, str] | None = None
    prompt_template: str = "Question: {question}\nAnswer: Let's think step by step."
    max_batch_tokens: int | None = None        # generation batch budget, tokens (see the class docstring)
    eval_temperature: float | None = None      # repeat_task regime: temperature (0 = greedy); None: the pilot picks
    eval_max_new_tokens: int | None = None     # repeat_task regime: length limit, tokens
    eval_min_new_tokens: int | None = None     # repeat_task regime: tokens before end-of-text is allowed
    regime_temperatures: tuple[float, ...] = (1.0, 0.7, 0.5, 0.3, 0.0)   # pilot grid: temperatures (0 = greedy)
    regime_length_mults: tuple[int, ...] = (1, 2, 4)   # pilot grid: length limits, multiples of max_new_tokens
    regime_eos_floors: tuple[float, ...] = (0.0, 1.0)  # pilot grid: share of the limit with end-of-text suppressed
    regime_band: tuple[float, float] = (0.3, 0.7)      # pre-RL repeat ratio the chosen regime should have
    n_regime_prompts: int = 32                 # TRAINING-split problems of the regime pilot

    def __post_init__(self):
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens={self.max_batch_tokens} must be >= 1 tokens (or None: one batch)")
        if self.eps_high < self.eps_low:
            raise ValueError(f"clip-higher needs eps_high >= eps_low, got {self.eps_high} < {self.eps_low}")
        steered_rows(1, self.G, self.n_steered)  # validates G / n_steered
        overlong_penalty(torch.zeros(1), self.max_new_tokens, self.cache_len)  # validates lengths
        self.eval_regime()       # validates the eval_* fields
        self.regime_grid()       # validates the pilot grid

    def eval_regime(self) -> GenerationRegime | None:
        """The fixed evaluation regime (all three ``eval_*`` fields set), or None (the pilot picks)."""
        vals = (self.eval_temperature, self.eval_max_new_tokens, self.eval_min_new_tokens)
        if all(v is None for v in vals):
            return None
        if any(v is None for v in vals):
            raise ValueError(f"set all of eval_temperature, eval_max_new_tokens, eval_min_new_tokens or none (got "
                             f"{vals}); e.g. dapo_config: {{eval_temperature: 0.0, eval_max_new_tokens: 96, "
                             f"eval_min_new_tokens: 96}}")
        return GenerationRegime(float(vals[0]), int(vals[1]), int(vals[2]))

    def regime_grid(self) -> list[GenerationRegime]:
        """The regime pilot's settings (:func:`qscope_utils.regime.regime_grid`)."""
        return regime_grid(self.max_new_tokens, self.regime_temperatures, self.regime_length_mults,
                           self.regime_eos_floors)

    @classmethod
    def for_profile(cls, name: str, paper_model: str = "8B") -> "DAPOConfig":
        if name == "smoke":
            return cls(G=3, n_prompts=2, n_steps=2, max_new_tokens=12, cache_len=4, ppo_epochs=1, minibatches=2,
                       n_train_problems=50, n_eval_problems=8, n_ppl_texts=8, n_val_problems=4, n_val_texts=4,
                       regime_temperatures=(1.0, 0.0), regime_length_mults=(1, 2), n_regime_prompts=4)
        if name == "mini":
            return cls()
        if name == "paper":
            if paper_model not in PAPER_MODELS:
                raise ValueError(f"paper_model must be one of {list(PAPER_MODELS)}, not {paper_model!r}")
            # DAPO paper: eps 0.2 / 0.28, lr 1e-6, L_cache 4096 of L_max 20480, G = 16, 512 prompts per step,
            # mini-batch 512 of 8,192 rollouts (16 updates per batch); here 512 rollouts in 4 mini-batches of 128
            # data: GSM8K train for RL, MGSM (en; the report's benchmark, other languages via eval_data) for eval;
            # each mini-batch of 128 rollouts is 32 accumulated passes of 4 rows (<= 4 x (prompt + 4,096) tokens)
            return cls(G=8, n_prompts=64, n_steps=200, lr=1e-6, max_new_tokens=4096, cache_len=1024,
                       ppo_epochs=1, minibatches=4, micro_batch=4, grad_checkpointing=True,
                       n_train_problems=7473, n_eval_problems=250, n_ppl_texts=1000,
                       paper_model=paper_model, answer_rule="last", train_data=("openai/gsm8k", "main", "train"),
                       eval_data=("juletxara/mgsm", "en", "test"), max_batch_tokens=65_536,
                       # the report's ordinary sampling (T = 1, L_max, end-of-text allowed): one pilot cell that
                       # records the pre-RL repeat ratio; widen the grid if the base model does not loop there
                       regime_temperatures=(1.0,), regime_length_mults=(1,), regime_eos_floors=(0.0,))
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


# --------------------------------------------------------------------------------------------- selection
def pick_variant(val: pd.DataFrame, ppl_ratio_max: float = 1.5, vanilla: str = "vanilla DAPO") -> tuple[str, str]:
    """The SAE arm's variant from its validation table: ``(chosen arm, rule in words)``.

    ``val``: one row per arm with ``arm``, ``val_ppl``, ``val_stress`` (repeat ratio under steering
    stress) and its 95% interval ``val_stress_lo`` / ``val_stress_hi``, ``ppl_ratio_vs_vanilla``; the
    ``vanilla`` row is not a candidate. Eligible: perplexity ratio <= ``ppl_ratio_max``. Among them, in
    order of increasing validation perplexity (least damage first), the first whose stress ratio is within
    one standard error (from its interval) of the lowest: :func:`qscope_utils.stats.one_se_pick`, so the
    pick does not flip between near-tied variants with noise. None eligible: the lowest perplexity.
    """
    from .stats import one_se_pick, se_from_interval

    cand = val[val.arm != vanilla]
    if cand.empty:
        raise ValueError(f"no SAE-arm variant in the validation table (arms: {list(val.arm)})")
    ok = cand[cand.ppl_ratio_vs_vanilla <= ppl_ratio_max].sort_values("val_ppl", kind="stable")
    if ok.empty:
        return (str(cand.sort_values("val_ppl", kind="stable").iloc[0].arm),
                f"NO variant within {ppl_ratio_max} x vanilla's validation perplexity: the lowest perplexity")
    ses = [se_from_interval(lo, hi) for lo, hi in zip(ok.val_stress_lo, ok.val_stress_hi)]
    chosen, _ = one_se_pick(list(ok.arm), list(ok.val_stress), ses, maximize=False)
    return (str(chosen), f"among variants with perplexity <= {ppl_ratio_max} x vanilla, the lowest validation "
            "perplexity whose validation stress repeat ratio is within one standard error of the lowest (one-SE rule)")


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
           temperature: float, seed: int, n_boot: int, do_sample: bool = True, steer_vectors=None,
           max_batch_tokens: int | None = None) -> dict:
    """Repeat ratio of ``n_samples`` responses per prompt (1 when greedy), bootstrap CI over prompts;
    generation batches of at most ``max_batch_tokens`` tokens (None = one batch)."""
    from .repetition import repeat_ratio

    k = n_samples if do_sample else 1
    ro = sample_rollouts(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens, temperature,
                         seed=seed, do_sample=do_sample, steer_vectors=steer_vectors, max_batch_tokens=max_batch_tokens)
    return repeat_ratio(detector.flags(ro).reshape(len(prompts), k), n_boot=n_boot, seed=seed)


def evaluate_policy(model: nn.Module, tokenizer, problems, detector: RepetitionDetector, n_samples: int,
                    max_new_tokens: int, temperature: float = 1.0, seed: int = 1234, n_boot: int = 1000,
                    ppl_texts: list[str] | None = None, extra_prompts: list[str] | None = None,
                    answer_rule: str = "first", stress_vectors: dict[int, torch.Tensor] | None = None,
                    max_batch_tokens: int | None = None, regime: GenerationRegime | None = None) -> dict:
    """Held-out metrics of one policy, each {'ratio'|'mean', 'lo', 'hi'} with a 95% bootstrap CI over prompts:

    repeat_task: repeat ratio of the held-out problems' responses in the evaluation ``regime``
    (:func:`qscope_utils.regime.regime_repeat_ratio`, with its generated-token count; None = the rollout
    setting below); repeat_task_rollout: repeat ratio of ``n_samples`` responses per problem sampled like
    the RL rollouts (``max_new_tokens``, ``temperature``); acc_sampled (same samples) and acc_greedy; repeat_text / repeat_text_greedy on ``extra_prompts`` (e.g. corpus text
    prefixes); repeat_stress: repeat ratio of sampled task responses while steering with
    ``stress_vectors`` (how easily the policy is pushed into a loop); ppl on ``ppl_texts``.
    Every generation streams in batches of at most ``max_batch_tokens`` tokens (rows x (prompt +
    max_new_tokens); None = each set in one batch, ``DAPOConfig.max_batch_tokens``); perplexity runs one
    text at a time with a chunked LM head (:func:`qscope_utils.recon.lm_loss`).
    """
    model.eval()
    n = len(problems)
    prompts = [p.prompt for p in problems for _ in range(n_samples)]
    answers = [p.answer for p in problems for _ in range(n_samples)]
    ro = sample_rollouts(model, tokenizer, prompts, max_new_tokens, temperature, seed=seed,
                         max_batch_tokens=max_batch_tokens)
    g = sample_rollouts(model, tokenizer, [p.prompt for p in problems], max_new_tokens, seed=seed, do_sample=False,
                        max_batch_tokens=max_batch_tokens)
    from .repetition import repeat_ratio

    rollout = repeat_ratio(detector.flags(ro).reshape(n, n_samples), n_boot=n_boot, seed=seed)
    task = rollout if regime is None else regime_repeat_ratio(
        model, tokenizer, [p.prompt for p in problems], regime, detector, n_samples, seed=seed + 3, n_boot=n_boot,
        max_batch_tokens=max_batch_tokens)
    out = {"repeat_task": task, "repeat_task_rollout": rollout,
           "acc_sampled": _ci(answer_correct(ro.texts, answers, answer_rule).view(n, -1).mean(1).numpy(), n_boot, seed),
           "acc_greedy": _ci(answer_correct(g.texts, [p.answer for p in problems], answer_rule).numpy(), n_boot, seed),
           "repeat_task_greedy": _ci(detector.flags(g).astype(float), n_boot, seed),
           "mean_len": float(ro.lengths.float().mean()),
           "examples": ro.texts[:: max(1, n_samples)][:6]}
    kw = dict(detector=detector, n_samples=n_samples, max_new_tokens=max_new_tokens, temperature=temperature,
              n_boot=n_boot, max_batch_tokens=max_batch_tokens)
    if extra_prompts:
        out["repeat_text"] = _loops(model, tokenizer, extra_prompts, seed=seed + 1, **kw)
        out["repeat_text_greedy"] = _loops(model, tokenizer, extra_prompts, seed=seed + 1, do_sample=False, **kw)
    if stress_vectors:
        out["repeat_stress"] = _loops(model, tokenizer, [p.prompt for p in problems], seed=seed + 2,
                                      steer_vectors=stress_vectors, **kw)
    if ppl_texts:
        out["ppl"] = heldout_perplexity(model, tokenizer, ppl_texts)
    return out
