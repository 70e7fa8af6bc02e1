"""How a result was made: build seed, library versions, CPU, threads and device.

Training amplifies floating-point differences between machines (another CPU's kernels give another
model), so every summary JSON records where it was computed. One function,
:func:`provenance`, feeds the ``_meta`` block of :func:`qscope_utils.report.save_json`.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["provenance", "cpu_model"]


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name: the first ``model name`` line of ``/proc/cpuinfo`` (Linux), else
    :func:`platform.processor` (macOS, Windows), else ``"unknown"``."""
    try:
        for line in Path(cpuinfo).read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _device(profile: str | None) -> str | None:
    if profile is None:
        return None
    from .profiles import get_profile

    try:
        return str(get_profile(profile).device)
    except ValueError:          # not a profile name (a results folder, a test's label)
        return None


def provenance(profile: str | None = None) -> dict:
    """``{build_seed, torch, transformers, python, platform, cpu, cpu_count, torch_threads, device[, gpu]}``.

    ``build_seed`` is the mini/smoke scope's seed (``QSCOPE_SEED``, :func:`qscope_utils.paths.build_seed`),
    None for profiles not built here (paper) or no profile; ``device`` is the profile's device
    (``QSCOPE_DEVICE`` honoured); ``torch_threads`` is torch's intra-op thread count now; ``gpu`` (the
    CUDA device's name) is present only when the device is CUDA and one is visible.
    """
    import torch
    import transformers

    from .paths import BUILT_PROFILES, build_seed

    device = _device(profile)
    out = {"build_seed": build_seed() if profile in BUILT_PROFILES else None,
           "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "platform": platform.platform(),
           "cpu": cpu_model(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": device}
    if device and device.startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out
