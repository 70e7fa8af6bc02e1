"""Where things live: the repo root, per-profile artefact caches (data/) and outputs (results/).

``QSCOPE_HOME`` overrides the root (tests point it at a temporary directory);
``QSCOPE_DATA`` overrides the artefact cache root and ``QSCOPE_RESULTS`` the results root
(tests send notebook outputs to a temporary directory).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "data_dir", "results_dir", "rel", "portable"]


def repo_root() -> Path:
    env = os.environ.get("QSCOPE_HOME")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def data_dir(profile: str) -> Path:
    """Artefact cache of one profile: corpus, tokenizer, models, SAEs (never committed)."""
    root = Path(os.environ["QSCOPE_DATA"]) if os.environ.get("QSCOPE_DATA") else repo_root() / "data"
    return root / profile


def results_dir(profile: str, create: bool = True) -> Path:
    """Where notebooks of one profile write figures (PNG) and tables (CSV/JSON)."""
    root = Path(os.environ["QSCOPE_RESULTS"]) if os.environ.get("QSCOPE_RESULTS") else repo_root() / "results"
    p = root / profile
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
