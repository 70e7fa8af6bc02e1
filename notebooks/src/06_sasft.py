# %% [markdown]
# # 06 · SASFT: SAE-guided SFT against unexpected code-switching (§7)
#
# SFT teaches a model to answer in one language; it may still slip into another ("code-switching").
# SASFT adds to the cross-entropy a penalty on the SAE features of the unwanted languages:
# `L = CE + λ · Σ_layers [Σ_{response tokens × features} ReLU(f_s(x) − α_j) / (tokens × features + 1)]`
# (the official code's normalisation), where `f_s` is the feature's PRE-activation computed from the live
# residual through the frozen encoder, and `α_j` its mean pre-activation on the response language j.
# Features: top-2 per unwanted language by the monolinguality score ν at the last two layers (docs/CONVENTIONS.md §7).
# Training is TRL's `SFTTrainer` with this penalty added in `compute_loss`
# (`qscope_utils.sasft_trainer.SASFTTrainer`); as in the official code, each SASFT run penalises ONE
# target language's features (the report's Table 4 rows are separate runs); the plain-SFT control is the
# same trainer with λ = 0 (same data order, steps and schedule). Paper runs take hours: `launch="launch"`
# starts each with `accelerate launch` (`configs/accelerate/`), `launch="read"` reads finished runs.
#
# **Mini setup.** The assistant must answer in English. User prompts are held-out snippets of the
# mini corpus in fr, de, es, it, zh, ru, ja; responses are English corpus texts. Like real
# multilingual SFT data, the data is noisy: 60% of the answers to zh / ru / ja prompts have a short
# snippet in the prompt's language spliced in (they are still labelled English). The base model
# simply continues in the prompt's language; plain SFT (λ = 0, identical data, steps and seeds)
# learns English answers *and* the occasional switch; SASFT adds the penalty on zh, ru and ja
# features (ja's kana stands in for the paper's Korean, absent from the corpus). Code-switch ratio
# into L: share of sampled responses to held-out L-language prompts that contain L's script (Han,
# Cyrillic, kana). λ is chosen on a third of the evaluation documents (val), reported on the rest (test).
#
# Why the noise: without it, plain SFT removed all code-switching within 60 steps when this notebook
# was designed (900-step checkpoint of the mini model, 12 val prompts per language x 2 seeds: base
# 0.92 / 0.83 / 0.54 for zh / ru / ja, after SFT 0.00 / 0.00 / 0.00), leaving nothing for SASFT to fix.

# %% tags=["parameters"]
profile = "mini"            # mini | smoke | paper
lambdas = None              # None: the sweep of the profile (lambda 0, plain SFT, is always included); -y 'lambdas: [0.0005, 0.001]'
steps = None                # None: the SFT steps of the profile (paper: one epoch)
lr = None                   # None: the profile (paper: 5e-5 for 1.7B, 5e-6 for 8B, official)
batch_size = None           # per-device micro-batch (None: profile; paper 1)
effective_batch = None      # examples per optimizer step by accumulation (None: profile; paper 32)
weight_decay = None         # None: profile (paper 0.1)
scheduler = None            # None: profile (paper "cosine")
warmup = None               # None: profile (paper 100)
max_length = None           # truncation in tokens (None: profile; paper 2048)
launch = "inline"           # inline (train here) | launch (accelerate launch per run) | read (finished runs)
run_dir = None              # launch / read: folder with one sub-folder per run
accelerate_config = None    # launch: a file in configs/accelerate (ddp_1.7b.yaml, zero3_8b.yaml, fsdp_8b.yaml)
num_processes = None        # launch: processes (None: the config file)
lora_r = 0                  # > 0: LoRA adapter of this rank (PEFT) instead of full fine-tuning
threads = 1                 # torch CPU threads per run (tiny matrices: one thread is as fast as two)
workers = None              # runs at once in worker processes (None: 2 on a CPU profile, 1 on a GPU; same results)
seed = 0
paper_model = "Qwen3-1.7B-Base"   # paper profile: Qwen3-1.7B-Base | Qwen3-8B-Base (backbone + SAE group)
sft_file = None             # paper: JSONL {prompt, response, response_lang}
eval_file = None            # paper: JSONL {text, lang} evaluation prompts
stats_file = None           # paper: JSONL {text, lang} for nu / alpha / perplexity
norm_ratio = "profile"      # massive-norm exclusion in the language statistics (x median token norm); "profile": paper 10, mini/smoke off
config = None               # any other SASFTConfig field, e.g. -y 'config: {layers: [26, 27], targets: [zh, ru, ko]}'

# %%
from qscope_utils.texts import require_languages
require_languages(profile, "06")  # a custom QSCOPE_CORPUS_DIR must hold what 06 reads (data/README.md)
from qscope_utils.plan import show_plan; show_plan("06", globals())  # downloads, peak GPU memory, GPU time (nothing runs)

import json
import time

import numpy as np
import pandas as pd
import torch

from qscope_utils import codeswitch as cs
from qscope_utils import launch as LA
from qscope_utils import sasft
from qscope_utils.params import as_list, given, override_config
from qscope_utils import sasft_sweep as SW
from qscope_utils import sasft_trainer as ST
from qscope_utils import workers as W
from qscope_utils.profiles import get_profile, massive_norm_ratio
from qscope_utils import figures as F
from qscope_utils.report import save_json, save_table
from qscope_utils.scope import group_for, open_scope

t_start = time.perf_counter()
if threads:
    torch.set_num_threads(threads)
torch.manual_seed(seed)
lambdas = as_list(lambdas, "lambdas")
over = given(lambdas=tuple(float(x) for x in lambdas) if lambdas is not None else None, steps=steps, lr=lr,
             batch_size=batch_size, effective_batch=effective_batch, weight_decay=weight_decay,
             scheduler=scheduler, warmup=warmup, max_length=max_length, sft_file=sft_file,
             eval_file=eval_file, stats_file=stats_file)
cfg = override_config(sasft.SASFTConfig.for_profile(profile, seed=seed, paper_model=paper_model, **over), config)
if 0.0 not in cfg.lambdas:
    cfg.lambdas = (0.0,) + tuple(cfg.lambdas)
if profile == "paper":
    backbone, group = sasft.PAPER_GROUPS[paper_model]
    prof = get_profile("paper", backbone=backbone, sae_repo=group)
else:
    prof = get_profile(profile)
layers = sasft.default_layers(group_for(prof).n_layers, cfg.layers)
scope = open_scope(prof, cache_size=len(layers))   # the penalty needs its layers together: each read once
tok = scope.tokenizer
saes = scope.saes.view(layers)                     # through the loader's cache (no extra copies alive)
print(f"backbone {prof.backbone}\nSAE group {scope.group.repo_id}, layers {layers}, top-{cfg.top_k} per language")

# %% [markdown]
# ## Data
# Mini: everything from the mini corpus (language statistics on the train split, prompts and
# perplexity texts from the held-out split). Paper: JSONL files given as parameters (the official
# 210k SFT set is not public).

# %%
if prof.is_built:
    stat_texts = sasft.mini_texts_by_lang(prof, cfg.stat_langs, "train", cfg.stat_docs_per_lang, cfg.seed)
    ppl_texts = sasft.mini_texts_by_lang(prof, cfg.stat_langs, "heldout", cfg.ppl_docs_per_lang, cfg.seed + 3)
    train_ex = sasft.make_mini_sft(prof, tok, cfg, split="train")
    heldout_ex = sasft.make_mini_sft(prof, tok, cfg, split="heldout", n=max(8, cfg.n_train // 8))
    prompts = sasft.make_mini_eval_prompts(prof, tok, cfg)
else:
    stat_texts = sasft.load_texts_jsonl(cfg.stats_file, cfg.stat_langs, cfg.stat_docs_per_lang)
    ppl_texts = {l: t[-cfg.ppl_docs_per_lang:] for l, t in
                 sasft.load_texts_jsonl(cfg.stats_file, cfg.stat_langs).items()}
    all_ex = sasft.load_sft_jsonl(cfg.sft_file)
    heldout_ex, train_ex = all_ex[:200], all_ex[200:]
    prompts = sasft.eval_frame(sasft.load_texts_jsonl(cfg.eval_file), cfg.eval_prompts_per_lang, cfg.val_every)
contam = {t: float(np.mean([cs.code_switched(e.response, t) for e in train_ex if e.prompt_lang == t]))
          for t in cfg.targets if any(e.prompt_lang == t for e in train_ex)}
print(f"{len(train_ex)} SFT examples, prompt languages {sorted({e.prompt_lang for e in train_ex})}; "
      f"{len(prompts)} eval prompts: {prompts.groupby(['lang', 'part']).size().to_dict()}")
print("share of SFT answers to L-prompts that contain L's script (the noise SFT can learn):", contam)
print("example:", train_ex[0])

# %% [markdown]
# ## Language features: monolinguality ν and α
# `ν_s(L)` = mean activation of s on L minus the mean of its per-language means over the other
# languages; `α_en(s)` = mean pre-activation of s on English (the response language).

# %%
norm_ratio = massive_norm_ratio(prof, norm_ratio)
stats = sasft.language_stats(scope.model, tok, saes, stat_texts, max_length=cfg.stat_max_length, norm_ratio=norm_ratio)
feats = sasft.select_language_features(stats, cfg.targets, layers, cfg.top_k, alpha_langs=list(cfg.stat_langs))
save_table(feats, profile, "06_features")
feats[["target", "layer", "feature", "nu", "mean_target", "rate_target", f"alpha_{cfg.response_lang}"]].round(3)

# %%
for g in cfg.stat_langs:          # mean activation per language of every selected feature (the figure's table)
    feats[f"mean_{g}"] = [float(stats[g][l]["mean"][f]) for l, f in zip(feats.layer, feats.feature)]
save_table(feats, profile, "06_features")
fig = F.render(profile, "06_language_features")

# %% [markdown]
# ## Base model, then plain SFT (λ = 0) and one SASFT run per target language and λ > 0
# Every run: the same TRL trainer, data order (sampler seed), steps and schedule. The control measures the
# penalty of all targets' features; a SASFT run penalises (and logs) its own target's features only.

# %%
on_cpu = not torch.cuda.is_available()
targs = ST.SASFTTrainArgs.from_config(cfg, use_cpu=on_cpu, lora_r=lora_r)
trunc = ST.truncation_count(tok, train_ex, cfg.max_length)   # prompt + response cut to max_length tokens
print(f"max_length {cfg.max_length}: {trunc.truncated} of {trunc.n_examples} SFT examples cut, {trunc.dropped} "
      f"dropped (prompt alone too long), longest {trunc.longest} tokens; micro-batch {cfg.batch_size} x "
      f"<= {cfg.max_length} tokens, {cfg.effective_batch} examples per optimizer step")
runs = SW.sweep_runs(cfg.targets, cfg.lambdas)
names = {(r.target, r.lam): r.name for r in runs if r.lam is not None}
how = LA.Launch(launch, run_dir, accelerate_config, num_processes, cpu=on_cpu)
ctx = SW.SweepContext(scope.model, tok, dict(saes), feats, train_ex, targs, cfg, prompts, ppl_texts, heldout_ex,
                      prof.backbone, how)
n_workers = how.workers(prof.device, workers)
done = W.map_jobs(SW.run_and_evaluate, runs, ctx, workers=n_workers, threads=threads or 1, desc="SASFT runs")
evals = {r.run.name: r.evaluation for r in done}
logs = [r.log for r in done if r.log is not None]
for r in done:
    print(f"{r.run.name}: {'' if r.log is None else f'{len(r.log)} steps, trained + '}evaluated in {r.seconds:.1f} s")
train_log = pd.concat(logs, ignore_index=True)
save_table(train_log, profile, "06_train_log")
print(f"evaluated the base model and trained + evaluated {len(runs) - 1} runs on {n_workers} worker(s); notebook at "
      f"{time.perf_counter() - t_start:.0f} s")

# %%
fig = F.render(profile, "06_training")

# %% [markdown]
# ## Code-switch ratio: λ chosen per target on val prompts, reported on test prompts
# The rule: the smallest λ > 0 whose val ratio is within one bootstrap SE of the lowest (one-SE rule:
# a plain argmin flips between near-tied λ with noise in the 5th digit). Each SASFT run is scored on
# its own target's prompts; base and SFT on all.

# %%
val = sasft.ratio_table(evals, prompts, cfg, "val")
test = sasft.ratio_table(evals, prompts, cfg, "test")
lam_scores = {t: sasft.lambda_scores(val[val.target == t], cfg.lambdas, {l: names.get((t, l)) for l in cfg.lambdas})
              for t in cfg.targets}
lam_main = {t: sasft.pick_lambda(val[val.target == t], cfg.lambdas, {l: names.get((t, l)) for l in cfg.lambdas})
            for t in cfg.targets}
lam_argmin = {t: float(sc["lambda"][sc.ratio.idxmin()]) for t, sc in lam_scores.items()}
cs_table = pd.concat([val, test], ignore_index=True)
save_table(cs_table, profile, "06_code_switch")
print(sasft.LAMBDA_RULE)
print("lambda chosen on val per target:", lam_main, "(plain argmin:", lam_argmin, ")")
pd.concat({t: sc.set_index("lambda") for t, sc in lam_scores.items()}).round(4)

# %% [markdown]
# ## Is the design big enough? Power to detect a 50% cut of the SFT ratio
# From this run's SFT flags on the test prompts (`codeswitch.cut_design`): the prompts a paired
# SFT − SASFT comparison needs to detect a cut of half the SFT ratio with 80% power (two-sided 0.05),
# at this design's samples per prompt, beside the prompts used, the variance inflated by the design
# effect of windows cut from one document (the mini design was sized on a pilot this way, docs/06_sasft.md).

# %%
test_rows = {t: sasft.target_rows(prompts, cfg, t, "test") for t in cfg.targets}
design = {t: cs.cut_design(evals["SFT"]["flags"][t][r], cfg.n_seeds, cut=0.5, groups=sasft.doc_groups(prompts, r))
          for t, r in test_rows.items()} if cfg.n_seeds >= 2 else {}
if not design:
    print(f"power check skipped: it needs >= 2 samples per prompt to separate prompt and sampling variance "
          f"(n_seeds={cfg.n_seeds}); raise n_seeds to get it")
pd.DataFrame({t: d.as_dict() for t, d in design.items()}).T.round(4)
test.pivot(index="model", columns="target", values="ratio").loc[list(evals)].round(3)

# %%
fig = F.render(profile, "06_code_switch_vs_lambda", {"lambdas": list(cfg.lambdas), "paper_model": cfg.paper_model})

# %% [markdown]
# ## Table 4 shape: ours (test prompts) beside the report's Qwen3 numbers
# Ours: base → SFT → SASFT at the λ chosen on val, with 95% intervals (two-stage bootstrap over
# prompts × seeds) and the paired difference SFT − SASFT on the same prompts and seeds. The
# report's numbers: Qwen3-1.7B/8B-Base, 210k SFT examples. Mini ja stands in for the paper's ko.

# %%
ours = {}
for t in cfg.targets:
    rows = sasft.target_rows(prompts, cfg, t, "test")
    best = names[(t, lam_main[t])]
    f = {k: evals[k]["flags"][t][rows] for k in ("base", "SFT", best)}
    g = sasft.doc_groups(prompts, rows)          # windows of one document are resampled together
    ours[t] = {"base": cs.bootstrap_ratio(f["base"], cfg.n_boot, cfg.seed, groups=g),
               "sft": cs.bootstrap_ratio(f["SFT"], cfg.n_boot, cfg.seed, groups=g),
               "sasft": cs.bootstrap_ratio(f[best], cfg.n_boot, cfg.seed, groups=g),
               "diff": cs.paired_bootstrap_diff(f["SFT"], f[best], cfg.n_boot, cfg.seed, groups=g)}
t4 = sasft.table4(ours, paper_model=cfg.paper_model, paper_target={"ja": "ko"} if prof.is_built else None)
t4.insert(1, "lambda", [lam_main[t] for t in ours])
save_table(t4, profile, "06_table4")
t4

# %% [markdown]
# ## What the regulariser costs: held-out perplexity per language and held-out response CE

# %%
ppl = pd.DataFrame({k: v["ppl"] for k, v in evals.items()}).T
ppl["response_ce"] = [v["response_ce"] for v in evals.values()]
ppl.index.name = "model"
save_table(ppl.reset_index(), profile, "06_perplexity")
fig = F.render(profile, "06_perplexity")
ppl.round(3)

# %% [markdown]
# ## Example responses (first test prompt per target, seed 0)

# %%
ex_rows = []
for t in cfg.targets:
    i = int(np.flatnonzero(sasft.target_rows(prompts, cfg, t, "test"))[0])
    for k in ("base", "SFT", names[(t, lam_main[t])]):
        ex_rows.append({"target": t, "model": k, "prompt": prompts.prompt[i], "response": evals[k]["responses"][i][0]})
examples = pd.DataFrame(ex_rows)
save_table(examples, profile, "06_examples")
examples

# %%
summary = {
    "backbone": prof.backbone, "sae_group": scope.group.repo_id, "layers": layers, "top_k": cfg.top_k,
    "response_lang": cfg.response_lang, "targets": list(cfg.targets), "lambdas": list(cfg.lambdas),
    "lambda_chosen_on_val": lam_main, "lambda_rule": sasft.LAMBDA_RULE, "lambda_argmin_on_val": lam_argmin,
    "lambda_val_scores": {t: sc.to_dict("records") for t, sc in lam_scores.items()},
    "power_50pct_cut": {t: d.as_dict() for t, d in design.items()}, "prompt_windows": cfg.prompt_windows,
    "n_eval_prompts": prompts.groupby(["lang", "part"]).size().unstack().to_dict("index"), "norm_ratio": norm_ratio, "steps": cfg.steps, "batch_size": cfg.batch_size, "lr": cfg.lr,
    "effective_batch": cfg.effective_batch, "scheduler": cfg.scheduler, "weight_decay": cfg.weight_decay,
    "max_length": cfg.max_length, "truncation": trunc._asdict(), "trainer": "trl.SFTTrainer + SASFT penalty (official per-layer formula, summed)",
    "runs": [r.name for r in runs if r.lam is not None], "launch": launch,
    "n_train": len(train_ex), "n_seeds": cfg.n_seeds, "max_new_tokens": cfg.max_new_tokens,
    "temperature": cfg.temperature, "sft_response_contamination": contam,
    "features": feats[["target", "layer", "feature", "nu"]].to_dict("records"),
    "test": {t: {k: v.as_dict() for k, v in r.items()} for t, r in ours.items()},
    "perplexity": ppl.to_dict("index"),
    "paper_table4": {f"{m}/{l}": v for (m, l), v in sasft.PAPER_TABLE4.items()},
    "seconds": round(time.perf_counter() - t_start, 1),
}
save_json(summary, profile, "06_summary", seed=seed)
print(json.dumps(summary["test"], indent=1))

# %% [markdown]
# ## What we found vs the report
# Generated from the summary this notebook just saved (`qscope_utils.findings`); verdict words are
# defined in `docs/CONVENTIONS.md`.

# %%
from IPython.display import Markdown

from qscope_utils.findings import for_notebook

Markdown(for_notebook("06", profile))
