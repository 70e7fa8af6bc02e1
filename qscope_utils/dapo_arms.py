"""The §8 arms as independent jobs: vanilla DAPO and each SAE-arm variant trained from the same policy.

Each job trains one arm (through ``launch.obtain``: inline, ``accelerate launch`` or a finished run) and
returns the trained policy and its curves, so notebook 07 runs them with
:func:`qscope_utils.workers.map_jobs` (mini: two worker processes, one thread each, the same floats as one
after another; paper: one after another, each policy spilled to disk by the notebook's ``PolicyStore``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple

import pandas as pd
import torch

from . import dapo_trainer as DT
from . import launch as LA

__all__ = ["ArmContext", "Arm", "ArmResult", "train_arm"]


@dataclass
class ArmContext:
    """What every arm shares (sent once to each worker)."""

    model: Any
    """The policy before RL (never modified: training works on a copy)."""
    tokenizer: Any
    dapo: Any
    """The ``dapo.DAPOConfig`` of every arm."""
    detector: Any
    """The ``repetition.RepetitionDetector`` of the rewards' repeat bookkeeping."""
    backbone: str
    """Hub id or directory of the policy (launch jobs reload it from there)."""
    how: LA.Launch = LA.Launch()
    """inline training, ``accelerate launch`` jobs or finished runs (``how.cpu``: CPU training, float32)."""
    lora_r: int = 0
    steer: Mapping[int, torch.Tensor] | None = field(default=None)
    """layer -> steering vector (alpha x decoder column) of the SAE arms."""


class Arm(NamedTuple):
    """One arm: ``variant`` None is vanilla DAPO (no steering); else ``SteeredRowPolicy`` keyword arguments."""

    key: str
    """Name of the arm in tables and the policy store."""
    slug: str
    """Run folder name (launch / read)."""
    variant: Mapping | None = None


class ArmResult(NamedTuple):
    arm: Arm
    model: Any
    curves: pd.DataFrame
    seconds: float


def train_arm(ctx: ArmContext, arm: Arm) -> ArmResult:
    """Train one arm from ``ctx.model``; vanilla when ``arm.variant`` is None, else steered rows by the variant."""
    steer = ctx.steer if arm.variant is not None else None
    pol = DT.SteeredRowPolicy(**arm.variant) if arm.variant is not None else None
    inline = lambda: DT.train_dapo(ctx.model, ctx.tokenizer, ctx.dapo, ctx.detector, steer_vectors=steer, policy=pol,
                                   use_cpu=ctx.how.cpu, bf16=not ctx.how.cpu, lora_r=ctx.lora_r)
    job = lambda d: LA.write_dapo_job(d, ctx.backbone, ctx.dapo, steer, {"policy": dict(arm.variant or {}),
                                      "detector": vars(ctx.detector), "use_cpu": ctx.how.cpu, "bf16": not ctx.how.cpu,
                                      "lora_r": ctx.lora_r})
    t0 = time.perf_counter()
    model, curves = ctx.how.obtain(arm.slug, "dapo_trainer", inline, job)
    return ArmResult(arm, model, curves, time.perf_counter() - t0)
