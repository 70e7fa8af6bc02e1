"""Mini pretraining throughput: one process on every thread vs one one-thread process per core.

The mini build trains the trunk up to the branch point alone, on every torch thread, then the trunk's
rest and each branch at once, one worker process each (``qscope_utils.mini.pretrain``). This measures
why: tokens/s of the real training step (``Qwen3ForCausalLM`` of ``MiniScopeConfig``, AdamW, clipping)
(``pretrain.train_step``) in one process with all threads, against the summed tokens/s of ``workers`` one-thread processes
stepping at the same time. Writes ``results/benchmarks/pretrain_threads.json``.

    .venv/bin/python benchmarks/bench_pretrain_threads.py [--quick]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write  # noqa: E402


def _steps_per_s(threads: int, steps: int, barrier=None) -> float:
    """Training steps per second of the mini model at ``threads`` torch threads (after 2 warm-up steps)."""
    import torch
    from transformers import Qwen3ForCausalLM

    from qscope_utils.mini.pretrain import new_optimizer, qwen3_config, train_step
    from qscope_utils.profiles import MiniScopeConfig

    torch.set_num_threads(threads)
    sc = MiniScopeConfig()
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(qwen3_config(sc, sc.vocab_size, 1, 2)).train()
    opt = new_optimizer(model, sc)
    x = torch.randint(0, sc.vocab_size, (sc.batch_size, sc.seq_len + 1))
    for _ in range(2):
        train_step(model, opt, x)
    if barrier is not None:
        barrier.wait()
    t0 = time.perf_counter()
    for _ in range(steps):
        train_step(model, opt, x)
    return steps / (time.perf_counter() - t0)


def _worker(args):
    threads, steps, barrier = args
    return _steps_per_s(threads, steps, barrier)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from qscope_utils.profiles import MiniScopeConfig

    sc = MiniScopeConfig()
    steps = 4 if args.quick else 15
    cores = os.cpu_count() or 1
    workers = max(1, min(2, cores))
    tokens = sc.batch_size * sc.seq_len
    one = _steps_per_s(cores, steps) * tokens
    ctx = mp.get_context("spawn")
    with ctx.Manager() as m:
        barrier = m.Barrier(workers)
        with ctx.Pool(workers) as pool:
            rates = pool.map(_worker, [(1, steps, barrier)] * workers)
    many = sum(rates) * tokens
    res = {"tokens_per_step": tokens, "steps": steps, "one_process_threads": cores, "one_process_tokens_per_s": one,
           "workers": workers, "per_worker_tokens_per_s": [r * tokens for r in rates], "workers_tokens_per_s": many,
           "speedup": many / one}
    print(f"mini pretraining step: 1 process x {cores} threads {one:,.0f} tokens/s; {workers} processes x 1 thread "
          f"{many:,.0f} tokens/s (x{many / one:.2f})")
    write("pretrain_threads" + ("_quick" if args.quick else ""), res)
    return res


if __name__ == "__main__":
    main()
