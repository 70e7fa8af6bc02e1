"""qscope_utils.workers: jobs on worker processes give what they give in this process, in job order."""
from __future__ import annotations

import time

import pytest
import torch

from qscope_utils import workers as W


def _sample(ctx, seed: int) -> list[list[int]]:
    """Sampled continuations of the context's prompts (seeded per job, like every notebook job)."""
    from qscope_utils.generation import generate

    model, tok, prompts = ctx
    _, ids = generate(model, tok, prompts, max_new_tokens=6, do_sample=True, seed=seed, batch_size=2, return_ids=True)
    return [r.tolist() for r in ids] + [[torch.get_num_threads()]]


def _slow_square(delay: float, x: int) -> int:
    time.sleep(delay * (3 - x))        # later jobs finish first
    return x * x


def _fail_on_two(ctx, x: int) -> int:
    if x == 2:
        raise ValueError("two is bad")
    return x


def test_worker_results_equal_in_process_results_in_job_order(tiny_model):
    model, tok = tiny_model
    ctx = (model, tok, ["The quick", "Sparse auto", "1 + 2"])
    seeds = [3, 0, 7, 1]
    here = W.map_jobs(_sample, seeds, ctx, workers=1, threads=1, progress=False)
    there = W.map_jobs(_sample, seeds, ctx, workers=2, threads=1, progress=False)
    assert there == here                                   # same tokens, same order, one thread in the workers
    assert here[-1][-1] == [1] and there[0][-1] == [1]
    assert len({str(r[:-1]) for r in here}) == len(seeds)  # distinct seeds, distinct samples: order is tested


def test_imap_yields_in_job_order_when_later_jobs_finish_first():
    assert list(W.imap_jobs(_slow_square, [0, 1, 2], 0.3, workers=2, progress=False)) == [0, 1, 4]


def test_a_failing_job_is_named():
    with pytest.raises(RuntimeError, match=r"job 2 \(2\).*two is bad"):
        W.map_jobs(_fail_on_two, [0, 1, 2], None, workers=2, progress=False)
    with pytest.raises(ValueError, match="two is bad"):     # in process: the job's own error
        W.map_jobs(_fail_on_two, [0, 1, 2], None, workers=1, progress=False)


def test_in_process_run_restores_the_thread_count():
    n = torch.get_num_threads()
    assert W.map_jobs(lambda c, x: torch.get_num_threads(), [0], None, workers=1, threads=1, progress=False) == [1]
    assert torch.get_num_threads() == n


def test_default_workers():
    assert W.default_workers("cuda") == 1 and W.default_workers("cuda:0", 3) == 3
    assert W.default_workers("cpu") == min(2, __import__("os").cpu_count() or 1)
    with pytest.raises(ValueError, match="workers=0"):
        W.default_workers("cpu", 0)


def test_launched_runs_use_no_workers():
    from qscope_utils.launch import Launch

    assert Launch().workers("cpu") == W.default_workers("cpu") and Launch().workers("cpu", 3) == 3
    assert Launch("launch", "/tmp/runs").workers("cpu", 3) == 1 and Launch("read", "/tmp/runs").workers("cpu") == 1
