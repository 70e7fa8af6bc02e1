"""Independent jobs (training runs, checkpoint evaluations) on worker processes, one torch thread each.

The mini models are tiny: one CPU thread runs them about as fast as two, so a notebook that trains or
scores several models one after another leaves a core idle. :func:`map_jobs` runs ``fn(context, job)``
for every job on ``workers`` spawned processes; each worker receives ``context`` once (pickled: the
backbone, tokenizer, SAEs, data) and runs with ``threads`` torch threads. With ``workers=1`` the jobs
run here, in order, with the same thread count.

Same answer either way: every job must seed what it draws (as ``generate`` and TRL's trainers do) and
depend on nothing but ``context`` and ``job``; a job then computes the same floats in a worker as in the
notebook's process (same thread count, same kernels). ``tests/test_workers.py`` checks this on a real
model. On a GPU (paper profile) use ``workers=1``: :func:`default_workers` gives it.

Progress: one tqdm bar over the jobs, advanced as each finishes (terminal and notebook). Results come
back in job order.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm.auto import tqdm

__all__ = ["map_jobs", "imap_jobs", "default_workers"]

_CONTEXT: Any = None


def default_workers(device: str = "cpu", requested: int | None = None) -> int:
    """Worker processes for a profile: ``requested`` if given, else 2 on a CPU device with >= 2 cores
    (the mini/smoke models), 1 on a GPU (one model per device; memory is planned for one)."""
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"workers={requested} must be >= 1 (1 runs the jobs in this process)")
        return int(requested)
    if not str(device).startswith("cpu"):
        return 1
    return max(1, min(2, os.cpu_count() or 1))


def _init(context: Any, threads: int) -> None:
    global _CONTEXT
    torch.set_num_threads(threads)
    _CONTEXT = context
    # TRL 1.16 sets transformers 5's renamed gradient-checkpointing fields itself; in the notebook's own process
    # these show once in its output, in every worker they would repeat on the terminal
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)


def _call(fn: Callable, job: Any) -> Any:
    return fn(_CONTEXT, job)


def map_jobs(fn: Callable[[Any, Any], Any], jobs: Sequence[Any], context: Any = None, workers: int = 1,
             threads: int = 1, desc: str = "jobs", progress: bool = True) -> list:
    """``[fn(context, job) for job in jobs]``, on ``workers`` processes (see :func:`imap_jobs`)."""
    return list(imap_jobs(fn, jobs, context, workers, threads, desc, progress))


def imap_jobs(fn: Callable[[Any, Any], Any], jobs: Sequence[Any], context: Any = None, workers: int = 1,
              threads: int = 1, desc: str = "jobs", progress: bool = True) -> Iterator:
    """Yield ``fn(context, job)`` for each job, in job order, computed on ``workers`` processes.

    fn: a module-level function (workers import it by name); context: shared inputs, sent once per
        worker; jobs: one item per call, small and picklable; threads: torch threads per worker (and
        here, when ``workers`` is 1). With one worker each result is yielded before the next job starts,
        so a caller can store or free it first (a trained 8B policy is 30 GiB). An exception in a job is
        raised here, naming the job.
    """
    jobs = list(jobs)
    if workers <= 1 or len(jobs) <= 1:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for j in tqdm(jobs, desc=desc, disable=not progress):
                yield fn(context, j)
        finally:
            torch.set_num_threads(old)
        return
    done: dict[int, Any] = {}
    nxt = 0
    ctx = mp.get_context("spawn")      # fork would copy the parent's torch thread pools and locks
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init,
                             initargs=(context, threads)) as ex:
        futs = {ex.submit(_call, fn, j): i for i, j in enumerate(jobs)}
        for f in tqdm(as_completed(futs), total=len(futs), desc=desc, disable=not progress):
            i = futs[f]
            try:
                done[i] = f.result()
            except Exception as e:   # noqa: BLE001 - re-raised with the job named
                raise RuntimeError(f"{desc}: job {i} ({jobs[i]!r:.200}) failed in a worker: {e}") from e
            while nxt in done:
                yield done.pop(nxt)
                nxt += 1
