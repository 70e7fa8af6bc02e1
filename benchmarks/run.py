"""Run every benchmark and print one table. JSON results land in results/benchmarks/
($QSCOPE_RESULTS/benchmarks/ when QSCOPE_RESULTS is set).

    .venv/bin/python benchmarks/run.py            # full (real SAE shapes too: ~3 GB RAM, a few minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick    # mini shapes only (seconds)
The redundancy-metric scaling benchmark is benchmarks/bench_redundancy.py (section §4); the paper-width
ratios (SAE encode / sparse decode vs their GEMMs, steering and capture on a random Qwen3-1.7B-shape
backbone: ~10 GB RAM on a CPU) are benchmarks/bench_paper_shape.py (``--only paper_shape``); why the mini build
trains its mixtures on one-thread worker processes is benchmarks/bench_pretrain_threads.py (standalone).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_paper_shape  # noqa: E402
import bench_pipeline  # noqa: E402
from common import OUT  # noqa: E402
import bench_sae  # noqa: E402
import bench_sae_train  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", nargs="*", choices=["sae", "pipeline", "train", "redundancy", "paper_shape"],
                    help="re-run only these; the table is rebuilt from the saved JSON of the others")
    args = ap.parse_args(argv)
    flag = ["--quick"] if args.quick else []
    suffix = "_quick" if args.quick else ""
    todo = set(args.only or ["sae", "pipeline", "train", "redundancy", "paper_shape"])
    import bench_redundancy
    runs = {"sae": (bench_sae, "sae_encode_decode"), "pipeline": (bench_pipeline, "pipeline"),
            "train": (bench_sae_train, "sae_training"), "redundancy": (bench_redundancy, "redundancy_scaling"),
            "paper_shape": (bench_paper_shape, "paper_shape")}
    res = {}
    for name, (mod, stem) in runs.items():
        if name in todo:
            res[name] = mod.main(flag)
        elif name != "redundancy":
            saved = OUT / f"{stem}{suffix}.json"
            res[name] = json.loads(saved.read_text()) if saved.exists() else None
    lines = table(res["sae"], res["pipeline"], res["train"], quick=args.quick) + paper_shape_rows(res["paper_shape"], args.quick)
    print("\n".join(lines))
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / f"TABLE{suffix}.md"
    out.write_text("\n".join(lines) + "\n")


def paper_shape_rows(ps: dict | None, quick: bool = False) -> list[str]:
    """Table rows of bench_paper_shape (ratios against the baseline timed in the same run)."""
    if ps is None:
        return [_missing("paper-width ratios", "paper_shape", quick)]
    lines = [f"| paper width: encode {r['d_model']}x{r['d_sae']} k={r['k']} {r['dtype']} ({ps['device']}) | "
             f"{r['encode_vs_gemm']:.2f} of its GEMM; sparse decode x{r['sparse_decode_vs_gemm']:.1f} vs the decode GEMM | "
             f">= 0.8 |" for r in ps.get("sae", {}).get("rows", [])]
    bb = ps.get("backbone", {})
    if "steering_overhead" in ps:
        lines.append(f"| paper width: steering in generate ({bb['hidden_size']}x{bb['n_layers']}, {ps['device']}) | "
                     f"{ps['steering_overhead']['ratio']:.3f} of unhooked | >= 0.95 |")
    if "capture" in ps:
        lines.append(f"| paper width: capture {ps['capture']['layers']} layers in one pass ({ps['device']}) | "
                     f"{ps['capture']['ratio']:.3f} of one plain forward | ~1 |")
    return lines


def _missing(what: str, only: str, quick: bool) -> str:
    q = " --quick" if quick else ""
    return f"| {what} | not run yet (`benchmarks/run.py{q} --only {only}`) | - |"


def table(sae: dict | None, pipe: dict | None, train: dict | None, quick: bool = False) -> list[str]:
    """Markdown rows of the benchmark table (what, measured, target); a benchmark without results says so."""
    lines = ["| what | measured | target |", "|---|---|---|"]
    if sae is None:
        lines.append(_missing("SAE encode / decode", "sae", quick))
    for r in (sae or {}).get("rows", []):
        lines.append(f"| encode {r['d_model']}x{r['d_sae']} k={r['k']} {r['dtype']} | {r['encode_tokens_per_s']:.0f} tok/s, "
                     f"{r['encode_vs_bound']:.2f} of matmul bound, top-k {100 * r['topk_share']:.0f}%; "
                     f"sparse decode x{r['sparse_decode_speedup']:.1f} vs dense | >= 0.8 |")
    if train is None:
        lines.append(_missing("SAE training", "train", quick))
    for r in (train or {}).get("rows", []):
        lines.append(f"| SAE training ({r['profile']}: {r['d_model']}x{r['d_sae']} k={r['k']}, TopK + AuxK) | "
                     f"{r['tokens_per_s']:.0f} tokens/s | - |")
    if pipe is None:
        lines.append(_missing("steering, capture, streaming RSS", "pipeline", quick))
        return lines
    st, cap = pipe["steering_overhead"], pipe["capture"]
    lines.append(f"| steering in generate (KV cache) | {st['ratio']:.3f} of unsteered tokens/s | >= 0.95 |")
    lines.append(f"| capture {cap['layers']} layers in one pass | x{cap['speedup']:.2f} vs one pass per layer | > 1 |")
    rss = {(r["reducer"], r["n_texts"]): r["peak_rss_mb"] for r in pipe["streaming_rss"]}
    for red in ("mean", "max"):
        sizes = sorted(n for (rr, n) in rss if rr == red)
        lines.append(f"| streaming {red}-stats peak RSS, {sizes[0]} -> {sizes[-1]} texts | "
                     f"{rss[(red, sizes[0])]:.0f} -> {rss[(red, sizes[-1])]:.0f} MB | flat |")
    return lines


if __name__ == "__main__":
    main()
