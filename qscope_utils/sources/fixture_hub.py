"""A Hugging Face hub cache holding every adapter's miniature, for offline tests of the real load path.

Layout, as ``huggingface_hub`` writes it (``snapshot_download`` reads it with ``HF_HUB_OFFLINE=1``)::

    <hf_home>/hub/datasets--<org>--<name>/snapshots/<sha>/<files as on the hub>
    <hf_home>/hub/datasets--<org>--<name>/refs/main             (contains <sha>)
    <hf_home>/hub/datasets--<org>--<name>/refs/<revision>       (named revisions, e.g. refs/convert/parquet)

``<sha>`` is the adapter's revision when that is a 40-hex commit, else a fixture sha derived from the
repo id and revision (fixture only: it names no real commit).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Iterable

__all__ = ["write_fixture_hub", "repo_cache_dir", "fixture_sha"]


def repo_cache_dir(hub: Path, repo_id: str) -> Path:
    return Path(hub) / ("datasets--" + repo_id.replace("/", "--"))


def fixture_sha(repo_id: str, revision: str) -> str:
    """The snapshot folder name used for (repo, revision): the revision itself if it is a commit sha."""
    if re.fullmatch(r"[0-9a-f]{40}", revision or ""):
        return revision
    return hashlib.sha1(f"qscope-fixture:{repo_id}@{revision}".encode()).hexdigest()


def write_fixture_hub(hf_home: str | Path, names: Iterable[str] | None = None, n_rows: int = 12) -> Path:
    """Write the miniature of every source in ``names`` (default: all hub-hosted ones) as dataset repos in the
    hub cache ``hf_home/hub``; returns that hub directory. User-supplied sources (no hub id) are skipped.

    Point the process at it with ``HF_HOME=<hf_home>`` (or ``HF_HUB_CACHE=<hf_home>/hub``) and
    ``HF_HUB_OFFLINE=1``; then ``SOURCES[name].load(...)`` reads the miniature through ``snapshot_download``.
    """
    from . import SOURCES, get_source

    hub = Path(hf_home) / "hub"
    for name in (list(SOURCES) if names is None else list(names)):
        src = get_source(name)
        if src.is_user_supplied:
            continue
        repo = repo_cache_dir(hub, src.repo_id)
        sha = fixture_sha(src.repo_id, src.revision)
        src.write_miniature(repo / "snapshots" / sha, n_rows)
        refs = repo / "refs"
        for ref in {"main", src.revision} - {sha}:
            (refs / ref).parent.mkdir(parents=True, exist_ok=True)
            if ref == "main" and (refs / "main").exists():
                continue                     # another revision of the same repo already owns main
            (refs / ref).write_text(sha)
    return hub
