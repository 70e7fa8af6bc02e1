"""The pre-registered evaluation regime of §8 (notebook 07; docs/CONVENTIONS.md §8).

The report's headline is that the repeat ratio of ORDINARY samples drops sharply after SAE-guided
DAPO. A drop is only testable where the unsteered policy loops often enough to leave room for one.
Before any RL training, notebook 07 measures the pre-RL policy's repeat ratio on TRAINING-split
prompts over a small grid of generation settings (:func:`regime_grid`, :func:`pilot_regimes`) and
picks the evaluation regime by a rule fixed in advance (:func:`pick_regime`); the arms are then
compared in that regime, whatever their results.

A setting (:class:`GenerationRegime`) is a temperature (0 = greedy), a length limit and an
end-of-text floor: the number of tokens during which end-of-text is suppressed (HF
``min_new_tokens``), i.e. a minimum response length, as a long chain of thought imposes on a
reasoning model. Its cost is the generated-token budget per prompt: responses per prompt x the
length limit (what a batched ``generate`` decodes when any row runs to the limit).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from torch import nn

from .repetition import RepetitionDetector, repeat_ratio, sample_rollouts

__all__ = ["GenerationRegime", "regime_grid", "regime_repeat_ratio", "pilot_regimes", "pick_regime"]


@dataclass(frozen=True)
class GenerationRegime:
    """One generation setting of the repeat-ratio evaluation.

    temperature: softmax temperature of the sampler; 0 = greedy decoding (one response per prompt,
    more samples would be copies). max_new_tokens: the length limit, tokens. min_new_tokens: tokens
    during which end-of-text is suppressed (0 = the model may stop at once; = max_new_tokens: every
    response runs to the limit, and a loop is then judged by its periodic tail alone).
    """

    temperature: float
    max_new_tokens: int
    min_new_tokens: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 = greedy)")
        if self.max_new_tokens < 1 or not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"need 0 <= min_new_tokens <= max_new_tokens and max_new_tokens >= 1 tokens, got "
                             f"min {self.min_new_tokens}, max {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def rows(self, n_samples: int) -> int:
        """Responses per prompt: ``n_samples`` when sampling, 1 when greedy."""
        return 1 if self.greedy else n_samples

    def budget(self, n_samples: int) -> int:
        """Generated-token budget per prompt (responses x length limit): the rule's cost."""
        return self.rows(n_samples) * self.max_new_tokens

    @property
    def label(self) -> str:
        t = "greedy" if self.greedy else f"T={self.temperature:g}"
        return f"{t}, {self.max_new_tokens} tokens, end-of-text after {self.min_new_tokens}"


def regime_grid(base_max_new_tokens: int, temperatures: Sequence[float], length_mults: Sequence[int],
                eos_floors: Sequence[float]) -> list[GenerationRegime]:
    """The pilot grid: temperature x length limit (``length_mults`` x ``base_max_new_tokens``) x
    end-of-text floor (a share 0..1 of the length limit, rounded to tokens), in that nesting order."""
    if not (temperatures and length_mults and eos_floors):
        raise ValueError("regime grid needs at least one temperature, length multiple and end-of-text floor")
    if any(not 0 <= f <= 1 for f in eos_floors) or any(m < 1 for m in length_mults):
        raise ValueError(f"eos_floors must lie in [0, 1] (got {list(eos_floors)}) and length_mults be >= 1 "
                         f"(got {list(length_mults)})")
    return [GenerationRegime(float(t), int(m * base_max_new_tokens), int(round(f * m * base_max_new_tokens)))
            for t in temperatures for m in length_mults for f in eos_floors]


def regime_repeat_ratio(model: nn.Module, tokenizer, prompts: list[str], regime: GenerationRegime,
                        detector: RepetitionDetector, n_samples: int, seed: int, n_boot: int = 1000,
                        max_batch_tokens: int | None = None, steer_vectors=None) -> dict:
    """Repeat ratio of ``regime.rows(n_samples)`` responses per prompt in ``regime`` (bootstrap CI over
    prompts, :func:`qscope_utils.repetition.repeat_ratio`) plus ``generated_tokens`` (response tokens,
    end-of-text included), ``budget_tokens`` (prompts x :meth:`GenerationRegime.budget`) and ``mean_len``."""
    k = regime.rows(n_samples)
    ro = sample_rollouts(model, tokenizer, [p for p in prompts for _ in range(k)], regime.max_new_tokens,
                         regime.temperature or 1.0, seed=seed, do_sample=not regime.greedy,
                         steer_vectors=steer_vectors, max_batch_tokens=max_batch_tokens,
                         min_new_tokens=regime.min_new_tokens)
    out = repeat_ratio(detector.flags(ro).reshape(len(prompts), k), n_boot=n_boot, seed=seed)
    return {**out, "generated_tokens": int(ro.lengths.sum()), "budget_tokens": len(prompts) * regime.budget(n_samples),
            "mean_len": float(ro.lengths.float().mean())}


def pilot_regimes(model: nn.Module, tokenizer, prompts: list[str], grid: Sequence[GenerationRegime],
                  detector: RepetitionDetector, n_samples: int, seed: int, n_boot: int = 1000,
                  max_batch_tokens: int | None = None) -> pd.DataFrame:
    """One row per grid setting: the regime's fields, ``ratio``, ``lo``, ``hi``, ``n_prompts``,
    ``n_samples``, ``generated_tokens``, ``budget_tokens``, ``mean_len`` (same prompts and seed everywhere)."""
    rows = []
    for r in grid:
        m = regime_repeat_ratio(model, tokenizer, prompts, r, detector, n_samples, seed, n_boot, max_batch_tokens)
        rows.append({**asdict(r), "label": r.label, **m})
    return pd.DataFrame(rows)


def pick_regime(table: pd.DataFrame, band: tuple[float, float] = (0.3, 0.7)) -> dict:
    """The evaluation regime, by a rule fixed before any arm is trained.

    Among the pilot settings (``table`` from :func:`pilot_regimes`, pre-RL policy, training prompts):
    the CHEAPEST (lowest ``budget_tokens``; ties: grid order) whose repeat ratio lies in ``band`` =
    [lo, hi] (room both for a drop and for a rise); if none does, the one whose ratio is CLOSEST to the
    band (distance to its nearer edge; ties: cheapest, then grid order). Returns the chosen row's
    ``temperature``, ``max_new_tokens``, ``min_new_tokens``, ``label``, ``ratio``, ``lo``, ``hi``,
    ``budget_tokens``, plus ``rule`` ("in band" | "closest to band"), ``band`` and ``description``.
    """
    lo, hi = band
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"band must satisfy 0 <= lo <= hi <= 1, got {band}")
    if table.empty:
        raise ValueError("empty pilot table: the regime grid has no settings")
    t = table.reset_index(drop=True).assign(_order=np.arange(len(table)))
    dist = np.maximum(lo - t.ratio, 0) + np.maximum(t.ratio - hi, 0)
    t = t.assign(_dist=dist)
    inside = t[t._dist == 0]
    if len(inside):
        row, rule = inside.sort_values(["budget_tokens", "_order"]).iloc[0], "in band"
    else:
        row, rule = t.sort_values(["_dist", "budget_tokens", "_order"]).iloc[0], "closest to band"
    keys = ("temperature", "max_new_tokens", "min_new_tokens", "label", "ratio", "lo", "hi", "budget_tokens")
    out = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys}
    return {**out, "rule": rule, "band": [float(lo), float(hi)],
            "description": f"cheapest pilot setting (generated-token budget per prompt) whose pre-RL repeat ratio on "
                           f"training prompts lies in [{lo:g}, {hi:g}]; if none, the one closest to that band "
                           f"(ties: cheapest). Fixed before any arm is trained."}
