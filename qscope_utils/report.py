"""Writing results: figures (PNG), tables (CSV) and records (JSON) under results/<profile>/.

Every JSON record gets a ``_meta`` block with the profile, the notebook's seed, a timestamp and the
provenance of :func:`qscope_utils.provenance.provenance` (build seed, library versions, CPU model,
torch threads, device), so a number in results/ can be traced to how and where it was made. Paths
are written relative to the repository root (``paths.rel``), never as this machine's absolute paths.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from .paths import portable, rel, results_dir
from .provenance import provenance

__all__ = ["save_fig", "save_table", "save_json", "meta"]


def meta(profile: str, seed: int | None = None, **extra) -> dict:
    """The ``_meta`` block: profile, the notebook's ``seed``, creation time, :func:`provenance`, ``extra``."""
    return {"profile": profile, "seed": seed, "created": _dt.datetime.now().isoformat(timespec="seconds"),
            **provenance(profile), **extra}


def save_fig(fig, profile: str, name: str, dpi: int = 120) -> None:
    """Save a matplotlib figure as results/<profile>/<name>.png.

    Returns None so that a notebook cell ending in ``save_fig(...)`` shows no path repr.
    """
    p = results_dir(profile) / f"{name}.png"
    fig.savefig(p, dpi=dpi, bbox_inches="tight")


def save_table(df, profile: str, name: str, index: bool = False) -> Path:
    """Save a DataFrame as results/<profile>/<name>.csv."""
    p = results_dir(profile) / f"{name}.csv"
    obj = df.select_dtypes(include="object").columns
    if len(obj):  # absolute paths under the repository are written relative to it
        df = df.assign(**{c: df[c].map(portable) for c in obj})
    df.to_csv(p, index=index)
    return p


def save_json(obj: dict, profile: str, name: str, seed: int | None = None, **extra) -> Path:
    """Save a dict as results/<profile>/<name>.json with a ``_meta`` block.

    Absolute paths under the repository (e.g. a built profile's backbone directory) are written
    relative to the repository root (:func:`qscope_utils.paths.rel`), so results are portable.
    """
    p = results_dir(profile) / f"{name}.json"
    rec = portable({**obj, "_meta": meta(profile, seed, **extra)})
    p.write_text(json.dumps(rec, indent=2, default=_default))
    return p


def _default(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return rel(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")
