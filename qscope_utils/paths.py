"""Where things live: the repo root, per-profile artefact caches (data/) and outputs (results/).

``QSCOPE_HOME`` overrides the root (tests point it at a temporary directory);
``QSCOPE_DATA`` overrides the artefact cache root and ``QSCOPE_RESULTS`` the results root
(tests send notebook outputs to a temporary directory).

``QSCOPE_SEED=N`` selects the build seed of the built profiles (mini, smoke): seed 0 (the default)
lives in ``data/mini`` and writes ``results/mini``; seed N > 0 in ``data/mini-seedN`` and
``results/mini-seedN`` (:func:`seeded`), so builds of several seeds coexist and seed 0's stay valid.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["repo_root", "data_dir", "results_dir", "rel", "portable", "BUILT_PROFILES", "build_seed", "seeded"]

BUILT_PROFILES = ("mini", "smoke")
"""Profiles whose scope this project builds itself: the only ones a build seed applies to."""


def repo_root() -> Path:
    env = os.environ.get("QSCOPE_HOME")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def build_seed() -> int:
    """The build seed of the mini/smoke scope: ``$QSCOPE_SEED`` (a non-negative integer), else 0."""
    raw = os.environ.get("QSCOPE_SEED", "").strip()
    if not raw:
        return 0
    if not re.fullmatch(r"[0-9]+", raw):
        raise ValueError(f"QSCOPE_SEED={raw!r} is not a non-negative integer: set e.g. QSCOPE_SEED=1 "
                         f"(or unset it for seed 0)")
    return int(raw)


def seeded(profile: str, seed: int | None = None) -> str:
    """Folder name of ``profile`` for one build seed (``seed`` None: :func:`build_seed`).

    ``seeded("mini", 0) == "mini"``, ``seeded("mini", 2) == "mini-seed2"``; a profile that is not
    built here (paper) and any other folder name (``_sources``) are returned unchanged.
    """
    if profile not in BUILT_PROFILES:
        return profile
    s = build_seed() if seed is None else int(seed)
    if s < 0:
        raise ValueError(f"build seed {s} must be >= 0")
    return f"{profile}-seed{s}" if s else profile


def data_dir(profile: str) -> Path:
    """Artefact cache of one profile (of the current build seed, :func:`seeded`): corpus, tokenizer,
    models, SAEs (never committed)."""
    root = Path(os.environ["QSCOPE_DATA"]) if os.environ.get("QSCOPE_DATA") else repo_root() / "data"
    return root / seeded(profile)


def results_dir(profile: str, create: bool = True) -> Path:
    """Where notebooks of one profile (of the current build seed, :func:`seeded`) write figures (PNG)
    and tables (CSV/JSON)."""
    root = Path(os.environ["QSCOPE_RESULTS"]) if os.environ.get("QSCOPE_RESULTS") else repo_root() / "results"
    p = root / seeded(profile)
    if create:
        p.mkdir(parents=True, exist_ok=True)
    return p


def _roots() -> list[tuple[Path, str]]:
    """(absolute root, how it is shown) pairs, most specific first."""
    out = []
    for env, shown in (("QSCOPE_DATA", "data"), ("QSCOPE_RESULTS", "results")):
        if os.environ.get(env):
            out.append((Path(os.environ[env]).resolve(), shown))
    out.append((repo_root(), ""))
    return out


def rel(p: str | Path) -> str:
    """How a path is shown in outputs: relative to the repository root (``data/mini/models/main``).

    Paths under ``QSCOPE_DATA`` / ``QSCOPE_RESULTS`` show as ``data/...`` / ``results/...``; a hub id
    (``Qwen/Qwen3-8B-Base``) or any other relative string is returned unchanged; an absolute path
    outside the repository is returned as it is (it is not portable, but it is true).
    """
    s = str(p)
    if not os.path.isabs(s):
        return s
    q = Path(s).resolve()
    for root, shown in _roots():
        if q == root or root in q.parents:
            tail = q.relative_to(root).as_posix()
            return "/".join(x for x in (shown, tail) if x and x != ".") or "."
    return s


def portable(obj):
    """``obj`` with every absolute path string under the repository (or data/results roots) made :func:`rel`."""
    if isinstance(obj, dict):
        return {k: portable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [portable(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(portable(v) for v in obj)
    if isinstance(obj, Path):
        return rel(obj)
    if isinstance(obj, str) and obj.startswith("/") and "\n" not in obj and len(obj) < 4096:
        return rel(obj)
    return obj
