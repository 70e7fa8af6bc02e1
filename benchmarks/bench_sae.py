"""SAE encode / decode throughput against the bound of one dense matmul of the same size.

For each shape (d_model x d_sae, k, dtype) and N tokens:
  bound  = time of F.linear(x, W_enc) alone (the same dense GEMM encode calls, without bias)
  encode = time of TopKSAE.encode_sparse (matmul + bias + top-k + ReLU)
  ratio  = bound / encode (1.0 = encode costs no more than its matmul; target >= 0.8)
Decode: sparse (embedding_bag over the k active columns) vs dense (scatter to (N, d_sae), matmul).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from common import timeit, write
from qscope_utils.sae import TopKSAE

REAL = [(2048, 32768, 50), (2048, 32768, 100), (4096, 65536, 50), (4096, 65536, 100)]
MINI = [(128, 2048, 32), (64, 1024, 8)]


def bench_shape(d_model: int, d_sae: int, k: int, dtype: torch.dtype, n_tokens: int, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    sae = TopKSAE(d_model, d_sae, k, dtype=dtype, device=device).requires_grad_(False)
    x = torch.randn(n_tokens, d_model, dtype=dtype, device=device)
    with torch.no_grad():
        t_mm = timeit(lambda: F.linear(x, sae.W_enc), repeats)  # the same GEMM call encode makes, no bias
        t_enc = timeit(lambda: sae.encode_sparse(x), repeats)
        pre = sae.pre_acts(x)
        t_topk = timeit(lambda: pre.topk(k, dim=-1, sorted=False), repeats)
        codes = sae.encode_sparse(x)
        t_sparse = timeit(lambda: sae.decode_sparse(codes), repeats)
        t_dense = timeit(lambda: sae.decode(codes.to_dense()), repeats)
    return {"d_model": d_model, "d_sae": d_sae, "k": k, "dtype": str(dtype).split(".")[-1], "n_tokens": n_tokens,
            "matmul_s": t_mm, "encode_s": t_enc, "topk_s": t_topk, "encode_tokens_per_s": n_tokens / t_enc,
            "bound_tokens_per_s": n_tokens / t_mm, "encode_vs_bound": t_mm / t_enc, "topk_share": t_topk / t_enc,
            "decode_sparse_s": t_sparse, "decode_dense_s": t_dense, "sparse_decode_speedup": t_dense / t_sparse}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="mini shapes only, few repeats (for tests)")
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    shapes = MINI if args.quick else MINI + REAL
    dtypes = [torch.float32] if args.quick else [torch.float32, torch.bfloat16]
    rows = []
    for d_model, d_sae, k in shapes:
        for dt in dtypes:
            real = d_sae >= 32768
            n = args.tokens or (128 if real and args.device == "cpu" else 1024 if args.device == "cpu" else 8192)
            r = bench_shape(d_model, d_sae, k, dt, n, repeats=2 if args.quick else (3 if real else 10), device=args.device)
            rows.append(r)
            print(f"{d_model:>5}x{d_sae:<6} k={k:<3} {r['dtype']:<8} N={n:<5} encode {r['encode_tokens_per_s']:>10.0f} tok/s "
                  f"bound {r['bound_tokens_per_s']:>10.0f} tok/s ratio {r['encode_vs_bound']:.2f} "
                  f"topk {100 * r['topk_share']:.0f}%  sparse-decode x{r['sparse_decode_speedup']:.1f}", flush=True)
    out = {"rows": rows, "target_encode_vs_bound": 0.8, "quick": args.quick}
    write("sae_encode_decode" + ("_quick" if args.quick else ""), out)
    return out


if __name__ == "__main__":
    main()
