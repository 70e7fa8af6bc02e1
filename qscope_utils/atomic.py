"""Atomic writes: every artefact is written to a temporary name beside it, then renamed over it.

A reader (or a resumed build) therefore sees either the old complete file or the new complete
file, never a half-written one, even when the writer is killed (SIGKILL, power cut after fsync).
Files are fsync'ed before the rename; directories (``atomic_dir``) are filled under
``<name>.tmp`` and swapped in with one rename (the old copy is removed just before).

Fault injection (tests only): ``QSCOPE_FAULT_KILL="<substring>[@<n>][+]"`` makes the process kill
itself with SIGKILL at the n-th (default 1st) atomic write whose destination path contains
``<substring>``: just before the rename (the temporary is complete, the destination untouched),
or just after it with a trailing ``+``. Several rules may be separated by ``;``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_dir", "atomic_write_text", "atomic_write_json", "atomic_torch_save",
           "atomic_savez", "file_digest", "safetensors_problem", "CorruptFileError", "FAULT_ENV"]

FAULT_ENV = "QSCOPE_FAULT_KILL"


class CorruptFileError(ValueError):
    """A cached artefact exists but cannot be read (truncated download, killed writer, disk error).
    The message names the file, what is wrong and the command that fixes it."""

    def __init__(self, path: str | os.PathLike, problem: str, fix: str):
        self.path, self.problem, self.fix = Path(path), problem, fix
        super().__init__(f"{path} is damaged: {problem}. Fix: {fix}")
_fault_counts: dict[str, int] = {}


def _fault_point(dest: Path, after: bool) -> None:
    """SIGKILL this process if a ``QSCOPE_FAULT_KILL`` rule matches ``dest`` (see module docstring)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for rule in filter(None, (r.strip() for r in spec.split(";"))):
        want_after = rule.endswith("+")
        body = rule.rstrip("+")
        sub, _, nth = body.partition("@")
        if want_after != after or sub not in str(dest):
            continue
        _fault_counts[rule] = _fault_counts.get(rule, 0) + 1
        if _fault_counts[rule] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on normal exit fsync it and rename it over ``path``.

    On an exception the temporary is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        _fault_point(path, after=False)
        os.replace(tmp, path)
        _fault_point(path, after=True)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary directory ``<path>.tmp``; on normal exit it replaces ``path``.

    A crash leaves either the old directory, or (between removing it and the rename) no directory
    and a stale ``.tmp`` that the next write clears: never a partly written ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _fault_point(path, after=False)
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        _fault_point(path, after=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (utf-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj, **kw) -> Path:
    """``json.dumps(obj, **kw)`` written atomically (indent=1 unless given)."""
    kw.setdefault("indent", 1)
    return atomic_write_text(path, json.dumps(obj, **kw))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically."""
    import torch

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:     # a file object: the zip's record prefix is then "archive", not
            torch.save(obj, f)         # the (process-specific) temporary name, so equal data -> equal bytes
    return Path(path)


def atomic_savez(path: str | os.PathLike, **arrays) -> Path:
    """``numpy.savez(path, **arrays)`` atomically (``path`` should end in .npz)."""
    import numpy as np

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:      # a file object: savez would otherwise append .npz to the temp name
            np.savez(f, **arrays)
    return Path(path)


def file_digest(path: str | os.PathLike) -> dict:
    """{"bytes": size, "sha256": hex digest} of a file (to detect truncated or altered artefacts)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return {"bytes": Path(path).stat().st_size, "sha256": h.hexdigest()}


def safetensors_problem(path: str | os.PathLike) -> str | None:
    """None if a ``.safetensors`` file is whole, else what is wrong with it (truncated, bad header).

    Checks the format's own invariant: 8-byte header length, JSON header, and tensors whose byte
    ranges end exactly at the end of the file. Reads only the header.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        return f"it is {size} bytes long, shorter than the 8-byte header length"
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if 8 + n > size:
            return f"it is truncated inside its header ({size} bytes, header needs {8 + n})"
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError):
            return "its header is not valid safetensors JSON"
    if 8 + n + end != size:
        return f"it holds {size} bytes but its header describes {8 + n + end} (truncated or damaged)"
    return None
