"""Pipeline benchmarks on a random-init Qwen3 at the mini profile's sizes (no built scope needed):

1. streaming feature statistics: peak RSS for N and 10 N texts (each in a fresh subprocess);
2. steering overhead in generate with the KV cache: tokens/s with a steering hook vs none;
3. capturing L layers in one forward pass vs one pass per layer.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, timeit, write  # noqa: E402

sys.path.insert(0, str(ROOT))
from qscope_utils.profiles import MiniScopeConfig  # noqa: E402
from qscope_utils.sae import TopKSAE  # noqa: E402

WORDS = "the of and to in is was for on that with as by at from it an be this are or his had not but".split()


def make_model_and_tokenizer(cfg: MiniScopeConfig, seed: int = 0):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=512, tie_word_embeddings=True)).eval()
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts(2000, seed), trainers.BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=["<|endoftext|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    return model, tok


def texts(n: int, seed: int = 0, words: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(n)]


def peak_rss_kb(reset: bool = False) -> int:
    """Peak resident set size of this process in KiB (VmHWM); ``reset`` first clears the high-water mark."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_child(n_texts: int, which: str) -> None:
    from qscope_utils.features import mean_activations, text_max_activations

    cfg = MiniScopeConfig()
    model, tok = make_model_and_tokenizer(cfg)
    saes = {l: TopKSAE(cfg.hidden_size, cfg.sae_expansion * cfg.hidden_size, cfg.sae_k).requires_grad_(False)
            for l in range(cfg.n_layers)}
    base = peak_rss_kb(reset=True)  # ru_maxrss survives fork/exec on Linux: reset the high-water mark
    t0 = time.perf_counter()
    fn = mean_activations if which == "mean" else text_max_activations
    fn(model, tok, saes, texts(n_texts, seed=1), batch_size=32, max_length=64, progress=False)
    peak = peak_rss_kb()
    print(json.dumps({"n_texts": n_texts, "reducer": which, "peak_rss_mb": peak / 1024,
                      "growth_mb": (peak - base) / 1024, "seconds": time.perf_counter() - t0,
                      "tokens": n_texts * 63}))


def bench_rss(n: int) -> list[dict]:
    out = []
    for which in ("mean", "max"):
        for size in (n, 10 * n):
            r = subprocess.run([sys.executable, __file__, "--rss-child", str(size), which], capture_output=True,
                               text=True, check=True)
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
            print(f"  stream[{which}] {size:>6} texts: peak RSS {out[-1]['peak_rss_mb']:.0f} MB "
                  f"(+{out[-1]['growth_mb']:.0f} MB during the pass)", flush=True)
    return out


def bench_steering(model, tok, n_prompts: int, new_tokens: int, repeats: int) -> dict:
    from qscope_utils.steering import steer

    enc = tok(texts(n_prompts, seed=2, words=12), return_tensors="pt", padding=True)
    vec = torch.randn(model.config.hidden_size)
    gen = lambda: model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, use_cache=True)

    def steered():
        with steer(model, {model.config.num_hidden_layers // 2: vec}):
            gen()
    # interleave to share background load between the two arms
    t_plain, t_steer = [], []
    for _ in range(repeats):
        t_plain.append(timeit(gen, 1, warmup=0)); t_steer.append(timeit(steered, 1, warmup=0))
    tp, ts = sorted(t_plain)[len(t_plain) // 2], sorted(t_steer)[len(t_steer) // 2]
    n_tok = n_prompts * new_tokens
    return {"prompts": n_prompts, "new_tokens": new_tokens, "plain_tokens_per_s": n_tok / tp,
            "steered_tokens_per_s": n_tok / ts, "ratio": tp / ts, "target": 0.95}


def bench_capture(model, tok, n_texts: int, repeats: int) -> dict:
    from qscope_utils.hooks import capture_residuals

    enc = tok(texts(n_texts, seed=3), return_tensors="pt", padding=True, truncation=True, max_length=128)
    L = model.config.num_hidden_layers
    ids, am = enc["input_ids"], enc["attention_mask"]
    t_one = timeit(lambda: capture_residuals(model, ids, am, list(range(L))), repeats)
    t_each = timeit(lambda: [capture_residuals(model, ids, am, [l]) for l in range(L)], repeats)
    return {"layers": L, "texts": n_texts, "one_pass_s": t_one, "pass_per_layer_s": t_each, "speedup": t_each / t_one}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rss-child", nargs=2, metavar=("N", "REDUCER"))
    args = ap.parse_args(argv)
    if args.rss_child:
        torch.set_num_threads(2)
        return rss_child(int(args.rss_child[0]), args.rss_child[1])
    cfg = MiniScopeConfig()
    model, tok = make_model_and_tokenizer(cfg)
    print("[pipeline] streaming statistics, peak RSS vs corpus size", flush=True)
    rss = bench_rss(20 if args.quick else 400)
    print("[pipeline] steering overhead in generate (KV cache on)", flush=True)
    st = bench_steering(model, tok, 4 if args.quick else 16, 8 if args.quick else 64, 1 if args.quick else 5)
    print(f"  plain {st['plain_tokens_per_s']:.0f} tok/s, steered {st['steered_tokens_per_s']:.0f} tok/s, ratio {st['ratio']:.3f}")
    print("[pipeline] capture all layers: one pass vs one pass per layer", flush=True)
    cap = bench_capture(model, tok, 8 if args.quick else 64, 1 if args.quick else 5)
    print(f"  one pass {cap['one_pass_s'] * 1e3:.0f} ms, per layer {cap['pass_per_layer_s'] * 1e3:.0f} ms, x{cap['speedup']:.2f}")
    out = {"streaming_rss": rss, "steering_overhead": st, "capture": cap, "quick": args.quick,
           "model": {"hidden_size": cfg.hidden_size, "layers": cfg.n_layers, "d_sae": cfg.sae_expansion * cfg.hidden_size}}
    write("pipeline" + ("_quick" if args.quick else ""), out)
    return out


if __name__ == "__main__":
    main()
