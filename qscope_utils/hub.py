"""The Hugging Face cache, offline: find a file or a repo snapshot, or fail with ONE line that
gives the exact ``hf download`` command (the pinned huggingface_hub installs the ``hf`` CLI; its
older name no longer exists).

With ``HF_HUB_OFFLINE=1`` offline is certain: only the cache is consulted (no network attempt, no
retries). Otherwise the hub is tried once through ``huggingface_hub`` and a failure is reported
the same way. Errors are raised ``from None``: the message is the whole story.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["hub_offline", "hf_download_command", "hub_file", "hub_snapshot", "offline_missing", "missing_lines"]


def hub_offline() -> bool:
    """Offline mode is certain (``HF_HUB_OFFLINE`` set truthy, in the environment or huggingface_hub)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def hf_download_command(repo_id: str, filename: str | None = None, revision: str | None = None) -> str:
    """``hf download <repo> [<file>] [--revision R]``: the command that fills the cache."""
    cmd = f"hf download {repo_id}" + (f" {filename}" if filename else "")
    return cmd + (f" --revision {revision}" if revision else "")


def offline_missing(repo_id: str, filename: str | None = None, revision: str | None = None,
                    what: str = "") -> FileNotFoundError:
    """The one-line error for an artefact that is neither cached nor downloadable."""
    name = f"{repo_id}/{filename}" if filename else repo_id
    return FileNotFoundError(
        f"{what + ' ' if what else ''}{name} is not in the Hugging Face cache and the hub cannot be reached "
        f"(HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', '0')}). Fix: run "
        f"`{hf_download_command(repo_id, filename, revision)}` once with network access.")


def hub_file(repo_id: str, filename: str, revision: str | None = None) -> Path:
    """Local path of one hub file (downloaded when online and not cached)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import LocalEntryNotFoundError

    if hub_offline():
        hit = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(hit, str) and os.path.isfile(hit):
            return Path(hit)
        raise offline_missing(repo_id, filename, revision)
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError:
        raise offline_missing(repo_id, filename, revision) from None


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The cached snapshot directory of a repo, or None when nothing of it is cached (no network)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def missing_lines(repo_id: str, filenames: list[str] | None = None, revision: str | None = None) -> list[str]:
    """One line per artefact of ``repo_id`` that is not in the cache: each named file, or the whole
    repo when ``filenames`` is None. For a preflight that lists everything missing at once (no network)."""
    from huggingface_hub import try_to_load_from_cache

    if filenames is None:
        return [] if hub_snapshot(repo_id, revision) is not None else [str(offline_missing(repo_id, None, revision))]
    out = []
    for f in filenames:
        hit = try_to_load_from_cache(repo_id, f, revision=revision)
        if not (isinstance(hit, str) and os.path.isfile(hit)):
            out.append(str(offline_missing(repo_id, f, revision)))
    return out
