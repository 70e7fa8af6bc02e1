"""Timing helpers shared by the benchmark scripts (wall clock, warm-up, median of repeats)."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# results/benchmarks/, or $QSCOPE_RESULTS/benchmarks/ when set (then nothing is written into the repository)
OUT = (Path(os.environ["QSCOPE_RESULTS"]) if os.environ.get("QSCOPE_RESULTS") else ROOT / "results") / "benchmarks"


def timeit(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def device_info() -> dict:
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": "cpu"}
    if torch.cuda.is_available():
        info.update(device="cuda", gpu=torch.cuda.get_device_name(0))
    return info


def write(name: str, payload: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    p = OUT / f"{name}.json"
    p.write_text(json.dumps({**payload, "device_info": device_info(),
                             "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2))
    return p
