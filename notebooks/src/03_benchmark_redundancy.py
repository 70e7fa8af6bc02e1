# %% [markdown]
# # 03 · Benchmark redundancy and similarity from SAE features (report §4)
#
# For every benchmark sample x we take the SAE's active set at the **last token**,
# F(x) = {j : z_j(x) > 0}, and the benchmark footprint F(D) = ∪ F(x). Two redundancy measures are
# compared (docs/CONVENTIONS.md §4):
#
# * performance redundancy R(D) = (1/N) Σ_n τ_n, τ_n = E_{|S|=n}[Kendall τ(p, p̂(S))] over a family of
#   checkpoints (p: accuracies on all of D, p̂(S): on a random subset S);
# * feature redundancy R̂(D) = Σ_n c_n / |F(D)|, c_n = E_{|S|=n}[|F(S)| / |F(D)|] (no model evaluation needed).
#
# and benchmark similarity: overlap(D1, D2) = |F(D1) ∩ F(D2)| / |F(D1)|, overlap_min = |∩| / min, against
# the correlation of two benchmarks' scores across checkpoints (direct, and partial controlling for a
# general benchmark, MMLU in the report).
#
# **mini / smoke**: the checkpoints are the mini model zoo (two data mixtures × several training steps);
# the benchmarks are built from held-out corpus data and held-out generated arithmetic
# (`qscope_utils.benchmarks`). **paper**: the feature side is exact (Qwen-Scope SAE, chosen layer,
# benchmark prompts from `datasets`); the report's 26 in-house checkpoints are not public, so R and the
# score correlations need per-sample results supplied as files (`correctness_dir`).
#
# Expectations over subsets: the first n items of a random permutation are a random n-subset, so every
# permutation gives one draw for every n (seeded; n_draws and seed are recorded). Intervals are ±1
# standard error over draws (R, R̂) and Fisher-z 95% intervals (correlations).

# %% tags=["parameters"]
profile = "mini"          # mini | smoke | paper
n_items = None            # items per mini benchmark; None: profile default
n_draws = None            # random permutations per expectation; None: default
layer = None              # SAE layer of the headline figures; None: middle layer
workers = None            # checkpoints scored at once in worker processes, 1 thread each (None: 2 on a CPU
                          # profile, 1 on a GPU; the same results for any number)
seed = 0
config = None             # any other RedundancyConfig field, e.g. -y 'config: {pair_benchmarks: [GSM8K, MATH, MBPP]}'
# paper profile only
paper_benchmarks = None   # names in benchmarks.PAPER_BENCHMARKS (None: all 17), e.g. -y 'paper_benchmarks: [GSM8K, MATH]'
paper_layer = 18          # Qwen3-8B-Base layer (the report does not say which): a parameter
correctness_dir = None    # folder with <benchmark>.csv|.parquet per-sample results (see read_correctness); the
                          # report's 26 in-house checkpoints are not public, so by default only the feature side runs

# %%
from qscope_utils.texts import require_languages
require_languages(profile, "03")  # a custom QSCOPE_CORPUS_DIR must hold what 03 reads (data/README.md)
from qscope_utils.plan import show_plan; show_plan("03", globals())  # downloads, peak GPU memory, GPU time (nothing runs)

import json
import time
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from qscope_utils import benchmarks as bm
from qscope_utils import redundancy as rd
from qscope_utils.params import as_list, given, override_config
from qscope_utils.profiles import get_profile
from qscope_utils import figures as F
from qscope_utils.report import save_json, save_table
from qscope_utils.scope import open_scope
from qscope_utils import workers as W

t_start = time.perf_counter()
prof = get_profile(profile)
cfg = override_config(rd.RedundancyConfig.for_profile(profile), config)
cfg = replace(cfg, seed=seed, **given(n_items=n_items, n_draws=n_draws))
paper_benchmarks = as_list(paper_benchmarks, "paper_benchmarks")
scope = open_scope(prof)
main_layer = layer if layer is not None else (paper_layer if profile == "paper" else scope.n_layers // 2)
layers = scope.layers() if cfg.sweep_layers else [main_layer]
if main_layer not in layers:
    layers = sorted(set(layers) | {main_layer})
print(f"SAE group {scope.group.repo_id}; headline layer {main_layer}; layers {layers}\nconfig: {cfg}")

# %% [markdown]
# ## Benchmarks and correctness matrices

# %%
if prof.is_built:
    benches = bm.mini_benchmarks(prof, cfg.n_items, cfg.n_general, cfg.n_choices, cfg.seed)
    zoo = bm.load_zoo(prof)
    print(zoo[["name", "mixture", "step", "tokens_seen"]].to_string(index=False))
    correct = bm.correctness_matrices(zoo, benches, cfg.batch_size, cfg.max_new_tokens, cfg.max_length,
                                      device=prof.device, workers=W.default_workers(prof.device, workers), threads=1)
else:
    names = paper_benchmarks or list(bm.PAPER_BENCHMARKS)
    benches = {n: bm.load_hf_benchmark(n, n=cfg.n_items, seed=cfg.seed) for n in names}
    correct = {}
    for n, b in benches.items():
        files = [p for ext in ("csv", "parquet") for p in ([Path(correctness_dir) / f"{n}.{ext}"] if correctness_dir else [])]
        files = [p for p in files if p.exists()]
        if files:
            correct[n] = bm.align_correctness(bm.read_correctness(files[0]), b)
    print(f"per-sample results found for {sorted(correct)}; the report's 26 in-house checkpoints are not public, "
          f"so R and score correlations cover only these")
bench_table = pd.DataFrame([b.describe() for b in benches.values()])
save_table(bench_table, profile, "03_benchmarks")
scores = pd.DataFrame({n: c.mean(1) for n, c in correct.items()})      # checkpoints x benchmarks accuracy
if len(scores):
    save_table(scores.reset_index(names="checkpoint"), profile, "03_scores")
display_cols = ["name", "kind", "role", "n_items", "n_choices", "split"]
print(bench_table[[c for c in display_cols if c in bench_table]].to_string(index=False))
scores.round(3)

# %% [markdown]
# ## Last-token feature sets (one forward pass per benchmark, all layers; each layer file read once)

# %%
fsets = rd.feature_sets_by_layer(scope.model, scope.tokenizer, scope.saes, {n: b.prompts for n, b in benches.items()},
                                 layers, batch_size=cfg.batch_size, max_length=cfg.feature_max_length, progress=False)
F_main = fsets[main_layer]
print({n: (F.shape[0], rd.footprint_size(F), round(F.getnnz() / F.shape[0], 1)) for n, F in F_main.items()},
      "(N, |F(D)|, mean |F(x)|)")

# %% [markdown]
# ## R vs R̂

# %%
table, taus, covs = rd.redundancy_by_benchmark(correct, F_main, cfg.n_draws, cfg.seed, cfg.max_grid, cfg.nan_policy)
if not correct:   # paper without result files: the feature side alone
    table = pd.DataFrame([{"benchmark": n, **rd.coverage_curve(F, cfg.n_draws, cfg.seed).summary()}
                          for n, F in F_main.items()])
save_table(table, profile, "03_redundancy")
rho = rd.rho_r_rhat(table) if "R" in table else None
rho_cov = rd.rho_r_rhat(table, "mean_coverage") if "R" in table else None
print(f"Spearman rho(R, R_hat) = {rd.fmt_corr(rho) if rho else 'n/a'}   (report: {rd.PAPER['rho_R_Rhat']})")
print(f"Spearman rho(R, mean c_n) = {rd.fmt_corr(rho_cov) if rho_cov else 'n/a'}   (size-free companion)")
table.round(4)

# %%
fig_meta = {"group": scope.group.repo_id, "layer": main_layer, "config": {"control": cfg.control},
            "n_checkpoints": len(next(iter(correct.values()))) if correct else 0,
            "estimation": {"n_draws": cfg.n_draws, "seed": cfg.seed}, "rho_R_Rhat": rho}
if rho is not None:
    save_table(F.curve_table(taus, covs), profile, "03_curves")
    fig = F.render(profile, "03_R_vs_Rhat", fig_meta)   # drawn from the saved tables (qscope_utils.figures)

# %% [markdown]
# ## Footprint overlap

# %%
fps = {n: rd.footprint(F) for n, F in F_main.items()}
ov, ovm = rd.overlap_matrices(fps)
save_table(ov.reset_index(names="benchmark"), profile, "03_overlap")
save_table(ovm.reset_index(names="benchmark"), profile, "03_overlap_min")
pair_gm = ("gsm", "math") if prof.is_built else ("GSM8K", "MATH")
ov_gm = (float(ov.loc[pair_gm]), float(ov.loc[pair_gm[::-1]])) if set(pair_gm) <= set(ov.index) else (np.nan, np.nan)
print(f"overlap({pair_gm[0]}, {pair_gm[1]}) = {ov_gm[0]:.2f}, overlap({pair_gm[1]}, {pair_gm[0]}) = {ov_gm[1]:.2f}"
      f"   (report GSM8K/MATH: {rd.PAPER['overlap_GSM8K_MATH']} / {rd.PAPER['overlap_MATH_GSM8K']})")
fig = F.render(profile, "03_overlap_heatmap")

# %% [markdown]
# ## Similarity: overlap_min vs score correlation over the pairs of 8 benchmarks
# Score vectors are accuracies across checkpoints; the partial correlation removes what both share with
# the general control (`cfg.control`).

# %%
sim, sim_all = {}, {}
pair_names = [n for n in cfg.pair_benchmarks if n in scores]
if len(pair_names) >= 3 and cfg.control in scores:
    pairs = rd.score_correlations(scores, pair_names, control=cfg.control)
    pairs, sim = rd.similarity_vs_overlap(pairs, ovm)
    save_table(pairs, profile, "03_pairs")
    others = [n for n in scores if n != cfg.control]
    _, sim_all = rd.similarity_vs_overlap(rd.score_correlations(scores, others, control=cfg.control), ovm)
    fig = F.render(profile, "03_similarity", {**fig_meta, "similarity_28_pairs": sim})
    for k, v in sim.items():
        print(f"{k:18s} ours {rd.fmt_corr(v):32s} report {100 * rd.PAPER[k]:.1f}")
    print(f"robustness, all {len(others) * (len(others) - 1) // 2} pairs of {len(others)} non-control benchmarks:",
          {k: round(v['r'], 3) for k, v in sim_all.items()})
else:
    print("score correlations need per-sample results for the pair benchmarks and the control: skipped")

# %% [markdown]
# ## Layer sweep: do the conclusions depend on the SAE layer?

# %%
sweep = []
for l in layers:
    t_l, _, _ = rd.redundancy_by_benchmark(correct, fsets[l], cfg.n_draws, cfg.seed, cfg.max_grid, cfg.nan_policy)
    _, ovm_l = rd.overlap_matrices({n: rd.footprint(F) for n, F in fsets[l].items()})
    row = {"layer": l, "rho_R_Rhat": rd.rho_r_rhat(t_l)["r"] if len(t_l) else np.nan}
    if sim:
        _, s_l = rd.similarity_vs_overlap(pairs.drop(columns="overlap_min"), ovm_l)
        row |= {k: v["r"] for k, v in s_l.items()}
    sweep.append(row)
sweep = pd.DataFrame(sweep)
save_table(sweep, profile, "03_layer_sweep")
sweep.round(3)

# %%
summary = {
    "group": scope.group.repo_id, "layer": main_layer, "config": cfg.to_dict(),
    "n_checkpoints": int(len(scores)), "checkpoints": list(scores.index),
    "benchmarks": {n: len(b) for n, b in benches.items()},
    "rho_R_Rhat": rho, "rho_R_mean_coverage": rho_cov,
    "overlap_gsm_math": ov_gm[0], "overlap_math_gsm": ov_gm[1],
    "similarity_28_pairs": sim, "similarity_all_pairs": sim_all,
    "layer_sweep": sweep.to_dict(orient="records"),
    "paper": rd.PAPER,
    "estimation": {"n_draws": cfg.n_draws, "seed": cfg.seed, "max_grid": cfg.max_grid, "nan_policy": cfg.nan_policy,
                   "method": "prefix of random permutations; c_n at every n, tau_n on the grid"},
    "seconds": round(time.perf_counter() - t_start, 1),
}
save_json(summary, profile, "03_summary", seed=cfg.seed)
print(json.dumps({k: summary[k] for k in ("rho_R_Rhat", "overlap_gsm_math", "overlap_math_gsm", "seconds")},
                 indent=1, default=str))

# %% [markdown]
# ## What we found vs the report
# Generated from the summary this notebook just saved (`qscope_utils.findings`); verdict words are
# defined in `docs/CONVENTIONS.md`.

# %%
from IPython.display import Markdown

from qscope_utils.findings import for_notebook

Markdown(for_notebook("03", profile))
