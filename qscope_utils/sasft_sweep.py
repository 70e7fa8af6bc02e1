"""The §7 sweep as independent jobs: the base model, plain SFT and one SASFT run per (target, λ > 0).

Each job trains (except the base model) and evaluates one model and returns its log and evaluation, so
the notebook runs them with :func:`qscope_utils.workers.map_jobs` (mini: two worker processes, one thread
each, same floats as one after another; paper: one after another, ``launch`` as before).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

import pandas as pd

from . import launch as LA
from . import sasft
from . import sasft_trainer as ST

__all__ = ["SweepContext", "SweepRun", "SweepResult", "sweep_runs", "run_and_evaluate"]


@dataclass
class SweepContext:
    """What every job of the sweep shares (sent once to each worker)."""

    model: Any
    """The base model (never modified: training works on a copy)."""
    tokenizer: Any
    saes: Mapping[int, Any]
    """layer -> TopKSAE of the penalised layers."""
    features: pd.DataFrame
    """All targets' selected features (``sasft.select_language_features``)."""
    examples: Sequence[sasft.SFTExample]
    train_args: ST.SASFTTrainArgs
    cfg: sasft.SASFTConfig
    prompts: pd.DataFrame
    """Evaluation prompts (``sasft.make_mini_eval_prompts`` / ``eval_frame``)."""
    ppl_texts: Mapping[str, list[str]]
    heldout: Sequence[sasft.SFTExample]
    backbone: str
    """Hub id or directory of the base model (launch jobs reload it from there)."""
    how: LA.Launch = LA.Launch()
    """inline training, ``accelerate launch`` jobs or finished runs."""


class SweepRun(NamedTuple):
    """One job: ``target`` None and ``lam`` None is the base model (no training); ``target`` None and
    ``lam`` 0 the plain-SFT control (penalty of all targets measured, weight 0)."""

    name: str
    target: str | None
    lam: float | None

    @property
    def slug(self) -> str:
        return "base" if self.lam is None else "sft" if self.target is None else f"sasft_{self.target}_{self.lam:g}"


class SweepResult(NamedTuple):
    run: SweepRun
    log: pd.DataFrame | None
    """Per-step training log (None for the base model)."""
    evaluation: dict
    """``sasft.evaluate_model``'s dict."""
    seconds: float


def sweep_runs(targets: Sequence[str], lambdas: Sequence[float]) -> list[SweepRun]:
    """base, SFT (λ = 0), then one SASFT run per target and λ > 0, in the report's order."""
    return ([SweepRun("base", None, None), SweepRun("SFT", None, 0.0)]
            + [SweepRun(f"SASFT[{t}] λ={lam:g}", t, float(lam)) for t in targets for lam in lambdas if lam > 0])


def run_and_evaluate(ctx: SweepContext, run: SweepRun) -> SweepResult:
    """Train ``run`` (through ``launch.obtain``) and evaluate it: a SASFT run on its own target's prompts,
    base and SFT on every target's."""
    t0 = time.perf_counter()
    if run.lam is None:
        model, log = ctx.model, None
    else:
        tab = ctx.features if run.target is None else ST.feature_table_for(ctx.features, run.target)
        penalty = sasft.SASFTPenalty(ctx.saes, tab)
        inline = lambda: ST.train_sasft(ctx.model, ctx.tokenizer, ctx.examples, ctx.train_args, penalty, run.lam)
        job = lambda d: LA.write_sasft_job(d, ctx.backbone, ctx.examples, tab, ctx.saes, ctx.train_args, run.lam)
        model, log = ctx.how.obtain(run.slug, "sasft_trainer", inline, job)
        log = log.assign(lam=run.lam, target=run.target or "all", run=run.name)
    ev = sasft.evaluate_model(model, ctx.tokenizer, ctx.prompts, ctx.cfg, ctx.ppl_texts, ctx.heldout,
                              targets=None if run.target is None else [run.target])
    return SweepResult(run, log, ev, time.perf_counter() - t0)
