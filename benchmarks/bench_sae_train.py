"""TopK SAE training throughput (tokens/s) at the mini and smoke shapes, on synthetic activations.

Uses the same ``qscope_utils.mini.sae_train.train_sae`` loop (TopK + AuxK, Adam) that builds the mini
scope, on a low-rank Gaussian activation set of the profile's width, so the number does not depend
on a built scope. The build's own per-layer tokens/s is recorded in its stamp (README build table).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write  # noqa: E402
from qscope_utils.mini.sae_train import train_sae  # noqa: E402
from qscope_utils.profiles import SMOKE_SCOPE, MiniScopeConfig  # noqa: E402


def synthetic_acts(n: int, d: int, rank: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g)
    return (torch.randn(n, rank, generator=g).relu() @ basis + 0.1 * torch.randn(n, d, generator=g)).contiguous()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for name, sc in (("mini", MiniScopeConfig()), ("smoke", SMOKE_SCOPE)):
        n = 50_000 if args.quick else 300_000
        acts = synthetic_acts(n, sc.hidden_size)
        t0 = time.perf_counter()
        _, log = train_sae(acts, sc.sae_expansion * sc.hidden_size, sc.sae_k, sc.sae_lr, sc.sae_batch_tokens)
        dt = time.perf_counter() - t0
        rows.append({"profile": name, "d_model": sc.hidden_size, "d_sae": sc.sae_expansion * sc.hidden_size,
                     "k": sc.sae_k, "tokens": n, "seconds": dt, "tokens_per_s": n / dt})
        print(f"SAE training {name}: {sc.hidden_size}x{sc.sae_expansion * sc.hidden_size} k={sc.sae_k}: "
              f"{n / dt:.0f} tokens/s", flush=True)
    out = {"rows": rows, "quick": args.quick}
    write("sae_training" + ("_quick" if args.quick else ""), out)
    return out


if __name__ == "__main__":
    main()
