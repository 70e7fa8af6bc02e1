"""Build seeds for a run: ``./run_all.sh --seed N`` (one seed) and ``--seeds N`` (seeds 0..N-1).

The seed travels as ``QSCOPE_SEED`` (read by :func:`qscope_utils.paths.build_seed`), which the
notebook kernels inherit: seed N's scope is built into ``data/<profile>-seedN`` and its results go
to ``results/<profile>-seedN`` (seed 0 keeps ``data/<profile>`` and ``results/<profile>``). A
multi-seed run runs the notebooks once per seed, then aggregates across seeds with
``scripts/summarize.py --seeds N`` into ``results/<profile>-seeds/``. It takes N times as long as a
default run; an interrupted one is finished by rerunning the missing seeds (``--seed K``; every
build stage is cached) and then ``scripts/summarize.py --profile P --seeds N``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .paths import BUILT_PROFILES, build_seed, seeded

__all__ = ["seed_env", "check_seed_options", "run_seeds"]


def check_seed_options(profile: str, seed: int | None, seeds: int | None) -> str | None:
    """The problem with ``--seed`` / ``--seeds`` for ``profile`` as one line, or None when they are fine."""
    if seed is not None and seeds is not None:
        return "give either --seed N (one build seed) or --seeds N (seeds 0..N-1), not both"
    if seed is None and seeds is None:
        try:
            build_seed()                 # a bad QSCOPE_SEED in the environment fails here, in one line
        except ValueError as e:
            return str(e)
        return None
    if profile not in BUILT_PROFILES:
        return (f"--seed/--seeds choose the build seed of {' or '.join(BUILT_PROFILES)}; the {profile} profile "
                f"downloads its models and has no build seed")
    if seed is not None and seed < 0:
        return f"--seed {seed}: a build seed is a non-negative integer"
    if seeds is not None and seeds < 1:
        return f"--seeds {seeds}: give the number of build seeds, at least 1"
    return None


@contextmanager
def seed_env(seed: int | None) -> Iterator[None]:
    """``QSCOPE_SEED=seed`` inside the block (inherited by notebook kernels), restored after; None: unchanged."""
    if seed is None:
        yield
        return
    old = os.environ.get("QSCOPE_SEED")
    os.environ["QSCOPE_SEED"] = str(seed)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("QSCOPE_SEED", None)
        else:
            os.environ["QSCOPE_SEED"] = old


def run_seeds(profile: str, n_seeds: int, run_one: Callable[[], object],
              aggregate: Callable[[str, int], int] | None = None) -> list:
    """``run_one()`` under build seeds 0..n_seeds-1 in turn, then the across-seed aggregate.

    ``aggregate(profile, n_seeds)`` defaults to running ``scripts/summarize.py --seeds`` (its exit code
    is returned by it; a failed aggregate raises). Returns what ``run_one`` returned, per seed.
    """
    out = []
    for s in range(n_seeds):
        print(f"[run_all] {profile}: build seed {s} of 0..{n_seeds - 1} (data/{seeded(profile, s)}, "
              f"results/{seeded(profile, s)})", flush=True)
        with seed_env(s):
            out.append(run_one())
    rc = (aggregate or _summarize)(profile, n_seeds)
    if rc:
        raise RuntimeError(f"the across-seed summary failed (exit {rc}): rerun "
                           f"`python scripts/summarize.py --profile {profile} --seeds {n_seeds}`")
    return out


def _summarize(profile: str, n_seeds: int) -> int:
    script = Path(__file__).resolve().parents[1] / "scripts" / "summarize.py"
    return subprocess.run([sys.executable, str(script), "--profile", profile, "--seeds", str(n_seeds)]).returncode
