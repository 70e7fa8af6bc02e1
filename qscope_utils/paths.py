"""Where things live: the repo root, per-profile artefact caches (data/) and outputs (results/).

``QSCOPE_HOME`` overrides the root (tests point it at a temporary directory);
``QSCOPE_DATA`` overrides the artefact cache root and ``QSCOPE_RESULTS`` the results root
(tests send notebook outputs to a temporary directory).
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_root", "data_dir", "results_dir"]


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
