"""Benchmarks at the PAPER's tensor widths, each a ratio against a baseline timed in the same run:

1. SAE TopK encode at d_model x d_sae = 2048 x 32768 (Qwen3-1.7B W32K) and 4096 x 65536 (8B W64K):
   ``encode_vs_gemm`` = time of the same-size dense GEMM ``F.linear(x, W_enc)`` / time of encode (1.0: encode
   costs no more than its matmul). Sparse decode: ``sparse_decode_vs_gemm`` = time of the dense decode GEMM
   ``F.linear(z_dense, W_dec)`` / time of ``decode_sparse`` (> 1: the sparse decode is faster than the GEMM).
   (bench_sae.bench_shape does the timing; this adds the decode GEMM.)
2. Steering overhead in generate on a random-weight Qwen3-1.7B-shape backbone (hidden 2048, 28 layers,
   vocab 151,936): ``ratio`` = unhooked seconds / hooked seconds (1.0 = free).
3. One-pass capture of every layer's residual vs one plain forward of the same batch (no early stop):
   ``ratio`` = forward seconds / capture seconds (1.0 = capturing costs nothing).

On a CPU the token counts are reduced, never the widths; bf16 is skipped on a CPU without bf16 matrix
units (about 100x slower than fp32 there). ``--quick`` (CI) uses small widths and a 2-layer backbone,
and says so in its JSON (``"quick": true``). Output: results/benchmarks/paper_shape[_quick].json.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, ROOT, timeit, write  # noqa: E402

sys.path.insert(0, str(ROOT))
from bench_pipeline import bench_steering  # noqa: E402
from bench_sae import bench_shape  # noqa: E402

SAE_SHAPES = [(2048, 32768, 50), (4096, 65536, 50)]
QUICK_SAE_SHAPES = [(128, 2048, 32)]


def ratio(baseline_s: float, measured_s: float) -> float:
    """Baseline seconds / measured seconds: 1.0 = as fast as the baseline, 0.5 = twice as slow."""
    if baseline_s <= 0 or measured_s <= 0:
        raise ValueError(f"timings must be positive, got baseline {baseline_s} and measured {measured_s}")
    return baseline_s / measured_s


def bench_sae_row(d_model: int, d_sae: int, k: int, dtype: torch.dtype, n_tokens: int, repeats: int,
                  device: str) -> dict:
    """bench_sae's encode/decode timings plus the dense decode GEMM, as ratios against the GEMMs."""
    r = bench_shape(d_model, d_sae, k, dtype, n_tokens, repeats, device)
    torch.manual_seed(0)
    W_dec = torch.randn(d_model, d_sae, dtype=dtype, device=device)
    z = torch.randn(n_tokens, d_sae, dtype=dtype, device=device)
    with torch.no_grad():
        t_gemm = timeit(lambda: F.linear(z, W_dec), repeats)
    return {**r, "decode_gemm_s": t_gemm, "encode_vs_gemm": ratio(r["matmul_s"], r["encode_s"]),
            "sparse_decode_vs_gemm": ratio(t_gemm, r["decode_sparse_s"])}


def backbone(quick: bool, device: str):
    """(model, tokenizer, shape): random weights of the 1.7B shape (quick: 2 layers, hidden 128)."""
    from dataclasses import replace

    from qscope_utils.model_shapes import BACKBONE_SHAPES
    from qscope_utils.testing.paper_hub import fixture_tokenizer, random_backbone

    shape = BACKBONE_SHAPES["Qwen/Qwen3-1.7B-Base"]
    if quick:
        shape = replace(shape, hidden_size=128, intermediate_size=384, n_layers=2, n_heads=2, n_kv_heads=1,
                        head_dim=64, vocab_size=1024)
    tok = fixture_tokenizer()
    tok.padding_side = "left"
    model = random_backbone(shape, tok, torch.float32 if device == "cpu" else torch.bfloat16).to(device)
    return model, tok, shape


def bench_capture_vs_forward(model, tok, n_texts: int, max_length: int, repeats: int) -> dict:
    """Every layer captured in one pass (``capture_residuals``, no early stop) vs a plain forward."""
    from bench_pipeline import texts

    from qscope_utils.hooks import capture_residuals

    enc = tok(texts(n_texts, seed=3), return_tensors="pt", padding=True, truncation=True, max_length=max_length)
    ids, am = enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device)
    L = model.config.num_hidden_layers
    with torch.no_grad():
        t_fwd = timeit(lambda: model(input_ids=ids, attention_mask=am, use_cache=False), repeats)
        t_cap = timeit(lambda: capture_residuals(model, ids, am, list(range(L)), stop_early=False), repeats)
    return {"layers": L, "texts": n_texts, "tokens": int(ids.numel()), "forward_s": t_fwd, "capture_s": t_cap,
            "ratio": ratio(t_fwd, t_cap)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small widths, 2-layer backbone (CI)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip", nargs="*", default=[], choices=["sae", "steering", "capture"])
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    name = "paper_shape" + ("_quick" if args.quick else "")
    out = _previous(name, args.device) if args.skip else {}    # parts skipped now keep their last results
    out.update(quick=args.quick, device=args.device)
    if "sae" not in args.skip:
        dtypes = [torch.float32] if cpu else [torch.float32, torch.bfloat16]
        n = 64 if args.quick else (256 if cpu else 8192)
        rows = []
        for d_model, d_sae, k in (QUICK_SAE_SHAPES if args.quick else SAE_SHAPES):
            for dt in dtypes:
                r = bench_sae_row(d_model, d_sae, k, dt, n, 2 if args.quick else 5, args.device)
                rows.append(r)
                print(f"[paper-shape] SAE {d_model}x{d_sae} k={k} {r['dtype']} N={n}: encode {r['encode_vs_gemm']:.2f} "
                      f"of its GEMM, sparse decode x{r['sparse_decode_vs_gemm']:.1f} vs dense decode GEMM", flush=True)
        out["sae"] = {"rows": rows, "skipped": "bfloat16 on cpu (no bf16 matrix units: ~100x slower)" if cpu else None}
    if {"steering", "capture"} - set(args.skip):
        model, tok, shape = backbone(args.quick, args.device)
        out["backbone"] = {**shape.__dict__, "n_params": shape.n_params, "dtype": str(model.dtype).split(".")[-1],
                           "weights": "random"}
        if "steering" not in args.skip:
            n_p, n_t = (2, 4) if cpu else (16, 32)
            bench_steering(model, tok, n_p, n_t, 1)      # warm-up of both arms (first-call allocations), discarded
            st = bench_steering(model, tok, n_p, n_t, 1 if args.quick else 5)
            out["steering_overhead"] = st
            print(f"[paper-shape] steering in generate: {st['ratio']:.3f} of unhooked tokens/s "
                  f"({st['prompts']} prompts x {st['new_tokens']} tokens)", flush=True)
        if "capture" not in args.skip:
            cap = bench_capture_vs_forward(model, tok, 2 if cpu else 16, 32 if cpu else 256, 2 if args.quick else 3)
            out["capture"] = cap
            print(f"[paper-shape] capture {cap['layers']} layers in one pass: {cap['ratio']:.3f} of a plain forward "
                  f"({cap['tokens']} tokens)", flush=True)
    write(name, out)
    return out


def _previous(name: str, device: str) -> dict:
    """The parts of the last run's JSON on the same device (``--skip`` reruns keep them), else {}."""
    import json

    p = OUT / f"{name}.json"
    old = json.loads(p.read_text()) if p.exists() else {}
    old.pop("device_info", None), old.pop("created", None)
    return old if old.get("device") == device else {}


if __name__ == "__main__":
    main()
