# %% [markdown]
# # 05 · Feature-driven safety data synthesis and its coverage (§6)
#
# 1. **Targets T**: SAE features at one layer ranked by how much more often they fire on unsafe than on
#    safe texts (relevance score, threshold `tau`); with `target_set="pool_rare"` (default) only those that
#    fire on at most `r_max = 1 - 0.5^(1/B)` of the natural pool, so natural sampling at the matched budget B
#    is expected to miss each target at least half the time (fixed before anything is synthesised). On the
#    built profiles the corpus's `offensive` vs `clean` labelled texts (es, it) play unsafe vs safe; on the
#    paper profile WildJailbreak train.
# 2. **Coverage** `c_f(D) = 1[some x in D fires f]`, where x fires f when its max activation exceeds the
#    `fire_quantile` (0.9) quantile of f's nonzero per-text maxima over the discovery texts, `Cov(D) = |T ∩ covered| / |T|`, and `T_miss`, the
#    targets a real seed set misses.
# 3. **Feature-driven synthesis** for each missing feature: a generator is prompted with the feature's
#    top-activating contexts and steered toward it (`h += alpha * W_dec[:, f]`); a candidate is kept only
#    if the plain model's SAE code of the candidate actually fires the feature (representation-level
#    verification).
# 4. **Baselines at the matched budget** B = `budget` added examples, fixed by design (= the seed set's size,
#    the report's 4k real + 4k synthesised; a method that makes fewer is scored on what it made): natural sampling from the unlabelled pool (held-out corpus texts)
#    and random safety-themed synthesis (same generator, random unsafe seed texts, no targeting).
# 5. **Downstream**: a logistic-regression safety classifier on SAE features or char n-grams, trained on
#    real / real + random synthesis / real + feature synthesis / more real data; accuracy on held-out
#    labelled texts, in the shape of the report's Table 3.

# %% tags=["parameters"]
profile = "mini"          # mini | smoke | paper
layer = None              # None: profile default (mini 3, smoke 1, paper 30)
tau = None                # relevance threshold (None: profile default)
budget = None             # matched budget B: added examples per method (None: profile default, the seed size)
target_set = None         # "pool_rare" (relevant and rare in the natural pool) | "relevant" (None: SafetyConfig default)
threads = 1               # torch CPU threads (1 is fastest for the tiny models on a shared machine)
generator = "local"       # local | chat (chat: OpenAI-compatible endpoint, never needed for mini)
endpoint_url = None       # e.g. "https://api.openai.com/v1" (key from $OPENAI_API_KEY)
endpoint_model = "gpt-4"
# paper profile data (WildJailbreak train/eval; the natural pool is not named by the report)
natural_dataset_id = None # None: SafetyConfig default (allenai/WildChat-1M)
natural_column = None     # None: SafetyConfig default ("conversation": list of {role, content} turns)
norm_ratio = "profile"    # massive-norm exclusion in firing statistics; "profile": paper 10, mini/smoke off
config = None             # any other SafetyConfig field, e.g. -y 'config: {n_seed_per_cell: 500, max_new_tokens: 64}'
seed = 0

# %%
from qscope_utils.texts import require_languages
require_languages(profile, "05")  # a custom QSCOPE_CORPUS_DIR must hold what 05 reads (data/README.md)
from qscope_utils.plan import show_plan; show_plan("05", globals())  # downloads, peak GPU memory, GPU time (nothing runs)

import json
from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from qscope_utils import safety as S
from qscope_utils import synthesis as Y
from qscope_utils import figures as F
from qscope_utils.params import given, override_config
from qscope_utils.profiles import get_profile, massive_norm_ratio
from qscope_utils.report import save_json, save_table
from qscope_utils.scope import open_scope

torch.manual_seed(seed)
torch.set_num_threads(threads)
cfg = S.SafetyConfig.for_profile(profile)
cfg = override_config(cfg, config)
cfg = replace(cfg, seed=seed, **given(layer=layer, tau=tau, budget=budget, natural_dataset_id=natural_dataset_id,
                                      natural_column=natural_column, endpoint_url=endpoint_url, target_set=target_set))
if cfg.budget_grid[-1] != cfg.budget:
    cfg = replace(cfg, budget_grid=tuple(b for b in cfg.budget_grid if b < cfg.budget) + (cfg.budget,))
prof = get_profile(profile)
norm_ratio = massive_norm_ratio(prof, norm_ratio)
scope = open_scope(prof)
sae = scope.saes[cfg.layer]
encode = S.max_act_encoder(scope.model, scope.tokenizer, sae, cfg.layer, cfg.batch_size, cfg.max_length,
                           norm_ratio=norm_ratio)
splits = S.make_splits(prof, cfg)
print(f"SAE {scope.group.repo_id} layer {cfg.layer} (d_sae={sae.d_sae}, k={sae.k}); massive-norm exclusion "
      f"norm_ratio={norm_ratio}; seed set drawn disjoint from discovery")
print(json.dumps(splits.info, indent=1))

# %% [markdown]
# ## Target features T and the seed set's coverage

# %%
M_pool = encode(splits.natural) if cfg.target_set == "pool_rare" else None   # pool firing rates (and natural draws)
T, M_disc, rel = S.discover_targets(encode, splits.discovery, cfg, pool_max_acts=M_pool)
eps_cov = rel["fire_threshold"]   # coverage firing: per-feature thresholds (fire_quantile of discovery), or eps
seed_texts = [x.text for x in splits.seed]
M_seed = encode(seed_texts)
cov_seed = S.coverage(M_seed, T.ids, eps_cov)
T_miss = S.missing_targets(M_seed, T.ids, eps_cov)
rare = f", natural-pool rate <= {cfg.pool_rate_max:.4f} over {len(splits.natural)} pool texts" if M_pool is not None else ""
rare += f"; coverage firing above the {cfg.fire_quantile} quantile of each feature's discovery maxima" if cfg.fire_quantile is not None else ""
print(f"|T| = {len(T)} (target set {cfg.target_set}: score={cfg.score}, tau={cfg.tau}, min unsafe rate={cfg.min_unsafe_rate}{rare}); "
      f"seed set of {len(seed_texts)} texts covers {100 * cov_seed:.1f}% -> |T_miss| = {len(T_miss)}")
tt = T.table()
tt["in_seed"] = S.feature_coverage(M_seed, T.ids, eps_cov)
save_table(tt, profile, "05_targets")
reason = S.empty_miss_reason(len(T), len(T_miss), len(seed_texts), cfg)
if reason:   # say so, record it, and stop: every comparison below would be empty
    save_json({"group": scope.group.repo_id, "layer": cfg.layer, "n_targets": len(T), "n_missing": 0,
               "seed_size": len(seed_texts), "status": "degenerate", "reason": reason, "norm_ratio": norm_ratio},
              profile, "05_summary", seed=seed)
    raise RuntimeError(reason)
tt.head(10)

# %%
rel_table = pd.DataFrame({k: np.asarray(rel[k]) for k in ("score", "rate_unsafe", "rate_safe", "rate_pool", "fire_threshold")
                          if k in rel and np.ndim(rel[k])})
rel_table.insert(0, "feature", np.arange(len(rel_table)))
save_table(rel_table[rel_table.rate_unsafe + rel_table.rate_safe > 0], profile, "05_relevance")
fig_meta = {"group": scope.group.repo_id, "layer": cfg.layer, "score": cfg.score, "tau": cfg.tau, "n_targets": len(T),
            "seed_coverage_pct": 100 * cov_seed, "n_missing": len(T_miss)}
fig = F.render(profile, "05_targets", fig_meta)   # drawn from the saved tables (qscope_utils.figures)

# %% [markdown]
# ## Synthesis: feature-driven (verified) vs random, and natural sampling
# Few-shot examples for feature *f* are windows around its top-activating tokens in unsafe discovery texts.
# Round *r* steers with `alpha = mult[r] x` the feature's median top activation (round 0: prompt only).

# %%
if generator == "chat":
    gen = Y.ChatEndpointGenerator(endpoint_url or cfg.endpoint_url, endpoint_model, max_tokens=cfg.max_new_tokens * 4)
else:
    gen = Y.LocalGenerator(scope.model, scope.tokenizer, sae, cfg.layer, max_new_tokens=cfg.max_new_tokens,
                           temperature=cfg.temperature, batch_size=cfg.batch_size)
unsafe_disc = [x.text for x in splits.discovery if x.label == S.UNSAFE]
M_unsafe = M_disc[[i for i, x in enumerate(splits.discovery) if x.label == S.UNSAFE]]
snips, desc, scale = S.feature_contexts(scope.model, scope.tokenizer, sae, cfg.layer, unsafe_disc, M_unsafe, T_miss,
                                        n=6, example_tokens=cfg.example_tokens, max_length=cfg.max_length)
alphas = {f: [m * scale[f] for m in cfg.alpha_multipliers] for f in map(int, T_miss)}
feat = Y.feature_synthesis(gen, encode, T_miss, snips, cfg.budget, cfg.per_feature, cfg.n_candidates, alphas,
                           cfg.n_rounds, desc, eps_cov, cfg.max_copy, cfg.n_examples, seed=seed)
seed_unsafe = [x.text for x in splits.seed if x.label == S.UNSAFE]
seed_unsafe_cut = [Y.cut_tokens(scope.tokenizer, t, cfg.example_tokens) for t in seed_unsafe]
rand = Y.random_synthesis(gen, encode, seed_unsafe_cut, cfg.budget, cfg.n_candidates, cfg.n_examples, cfg.max_copy,
                          seed=seed)
nat_idx = Y.natural_sample_index(len(splits.natural), cfg.budget, seed=seed)
nat_texts = [splits.natural[i] for i in nat_idx]
M_nat = M_pool[nat_idx] if M_pool is not None else encode(nat_texts)
log = pd.DataFrame(feat.log)
save_table(log, profile, "05_synthesis_log")
n_fired = int(log.fired.sum()) if len(log) else 0
print(f"feature synthesis: {feat.n_generated} generated, {n_fired} fired their target, {len(feat.texts)} kept "
      f"for {len(set(feat.targets))}/{len(T_miss)} missing features; random synthesis: {len(rand.texts)} kept of "
      f"{rand.n_generated}; natural: {len(nat_texts)} sampled")
if len(log):
    by_alpha = log.groupby("round")[["generated", "degenerate", "copy", "fired"]].sum()
    by_alpha.insert(0, "alpha multiplier", [cfg.alpha_multipliers[r % len(cfg.alpha_multipliers)] for r in by_alpha.index])
    by_alpha["fire rate %"] = (100 * by_alpha.fired / by_alpha.generated).round(1)
    print(by_alpha)
for f, t in list(zip(feat.targets, feat.texts))[:5]:
    print(f"[feature {f}] {t[:150]!r}")

# %% [markdown]
# ## Coverage of T vs budget
# Cov(seed ∪ first *b* added examples). Feature-synthesis examples are ordered round-robin over the missing
# features (first one per feature, then the second ...). A method that produced fewer than *b* examples
# is scored at *b* on all it produced. The matched budget is B = `budget`, fixed before the run.

# %%
B = cfg.budget
grid = sorted(set(cfg.budget_grid) | {B})   # the matched budget B is always a point
added = {"feature synthesis": feat.max_acts, "random synthesis": rand.max_acts, "natural sampling": M_nat}
curves = {k: S.coverage_curve(M_seed, m, T.ids, grid, eps_cov, hold=True) for k, m in added.items()}
miss_curves = {k: S.coverage_curve(None, m, T_miss, grid, eps_cov, hold=True) for k, m in added.items()}
miss_hit = {k: S.feature_coverage(m[:B], T_miss, eps_cov) for k, m in added.items()}   # per missing target at B
paired = {f"feature vs {k.split()[0]}": S.paired_coverage(miss_hit["feature synthesis"], miss_hit[k])
          for k in ("natural sampling", "random synthesis")}
print("missing targets covered at B, paired (a = feature synthesis):", json.dumps(paired))
cov_df = pd.DataFrame({"budget": grid, **{f"Cov(T) {k}": 100 * v for k, v in curves.items()},
                       **{f"Cov(T_miss) {k}": 100 * v for k, v in miss_curves.items()}})
save_table(cov_df, profile, "05_coverage_vs_budget")

fig = F.render(profile, "05_coverage_vs_budget", fig_meta)
cov_df.round(2)

# %% [markdown]
# ## Downstream: safety classifier at matched budget (Table 3 shape)
# Each synthetic arm adds `B_down = min(B, kept by each synthesis)` examples, so the classifiers train on equal counts.
# Synthetic examples get the label of their seed side: all targets are unsafe-side features and random
# synthesis is prompted with unsafe seed texts, so every synthetic example is labelled **unsafe**.
# Metrics on a held-out set balanced per language x label: accuracy (95% bootstrap CI), `unsafe_missed`
# (share of unsafe texts passed as safe: an ASR analogue) and `safe_flagged` (share of safe texts flagged:
# an over-refusal analogue). The paper's numbers are LoRA-SFT safety accuracies of Qwen3-8B: same table
# shape, different task and scale.

# %%
B_down = min(B, len(feat.texts), len(rand.texts))
arms = S.downstream_arms(splits, feat.texts, rand.texts, B_down, seed=seed)
cache = S.row_cache([x.text for x in splits.discovery], M_disc)
S.row_cache(seed_texts, M_seed, cache); S.row_cache(feat.texts, feat.max_acts, cache); S.row_cache(rand.texts, rand.max_acts, cache)
table = S.downstream_table(arms, splits.eval, cfg.clf_features, encode=encode, seed=seed, n_boot=cfg.n_boot, cache=cache)
save_table(table, profile, "05_downstream")
show = table[["features", "training set", "n_train", "n_train_unsafe", "accuracy", "acc_lo", "acc_hi",
              "unsafe_missed", "safe_flagged", "paper row", "paper accuracy"]].round(2)
show

# %%
fig = F.render(profile, "05_downstream")

# %%
def _row(kind, name):
    r = table[(table.features == kind) & (table["training set"] == name)]
    return None if r.empty else {k: float(r.iloc[0][k]) for k in ("accuracy", "acc_lo", "acc_hi", "unsafe_missed", "safe_flagged")}

at_B = {k: float(v[grid.index(B)]) for k, v in curves.items()}
summary = {
    "group": scope.group.repo_id, "layer": cfg.layer, "score": cfg.score, "tau": cfg.tau, "n_targets": len(T),
    "seed_size": len(seed_texts), "seed_coverage_pct": 100 * cov_seed, "n_missing": int(len(T_miss)),
    "target_set": cfg.target_set, "fire_quantile": cfg.fire_quantile, "pool_rate_max": cfg.pool_rate_max if M_pool is not None else None,
    "n_pool": len(splits.natural), "n_eval": len(splits.eval),
    "matched_budget": B, "matched_budget_rule": "fixed: the config budget (added examples per method)",
    "added_at_matched_budget": {k: int(min(B, m.shape[0])) for k, m in added.items()}, "downstream_added": B_down,
    "coverage_at_matched_budget_pct": {k: 100 * v for k, v in at_B.items()},
    "missing_covered_at_matched_budget": {k: int(v.sum()) for k, v in miss_hit.items()},
    "paired_missing_at_matched_budget": paired,
    "encoded_texts": {"discovery": len(splits.discovery), "seed": len(seed_texts),
                      "natural pool": len(splits.natural) if M_pool is not None else len(nat_texts)},
    "feature_synthesis": {"generated": feat.n_generated, "fired": n_fired, "kept": len(feat.texts),
                          "features_filled": len(set(feat.targets)), "verification_pass_rate_pct":
                          100 * n_fired / max(feat.n_generated, 1)},
    "random_synthesis": {"generated": rand.n_generated, "kept": len(rand.texts)},
    "downstream": {k: {n: _row(k, n) for n in arms} for k in cfg.clf_features},
    "generator": gen.name, "config": {k: v for k, v in vars(cfg).items()}, "status": "ok",
    "exclude_first": True, "norm_ratio": norm_ratio, "seed_disjoint_from_discovery": True,
    "paper": S.PAPER,
}
save_json(summary, profile, "05_summary", seed=seed)
print(f"coverage at matched budget B={B}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in at_B.items())
      + f"; missing targets covered (of {len(T_miss)}): " + ", ".join(f"{k} {int(v.sum())}" for k, v in miss_hit.items())
      + f"  | paper: feature synthesis {S.PAPER['coverage_pct']}%")
for kind in cfg.clf_features:
    print(f"[{kind}] " + "; ".join(f"{n}: {table[(table.features == kind) & (table['training set'] == n)].accuracy.iloc[0]:.1f}"
                                   for n in arms) + "  | paper: 4k+4k feature 77.75, 4k+4k random 72.00, 120k real 78.75, 8k real 71.75")

# %% [markdown]
# ## What we found vs the report
# Generated from the summary this notebook just saved (`qscope_utils.findings`); verdict words are
# defined in `docs/CONVENTIONS.md`.

# %%
from IPython.display import Markdown

from qscope_utils.findings import for_notebook

Markdown(for_notebook("05", profile))
