# %% [markdown]
# # 02 · Steering case studies (report §3)
#
# Two cases from the report, reproduced with the shared steering convention (docs/CONVENTIONS.md §2:
# `h <- h + alpha * W_dec[:, i]` after decoder layer *n*, at every prompt position and decode step):
#
# 1. **Code-mixing.** English prompts whose continuations drift into Chinese. We find the
#    Chinese-language feature (ranking features by activation on the Han tokens of the bad responses,
#    and by contrast Chinese vs other languages), suppress it (negative alpha, and clamping it to 0),
#    and measure the code-switch ratio (share of continuations containing Han; share of Han
#    characters) and the cost (NLL of the continuation under the unsteered model).
# 2. **Classical style.** Modern-Chinese story openings; we activate the classical-Chinese feature
#    (contrast: classical `lzh` vs modern `zh` text) and score classicalness with a classifier trained
#    and validated here on held-out text, plus simple style statistics.
#
# The paper profile uses Qwen3-8B-Base + W64K with the report's feature ids 6159 and 36398; the
# report does not state the layer or alpha (parameters). The mini profile discovers its own ids.
# Every interval is a 95% bootstrap over prompts (all seeds of a prompt resampled together); changes
# are paired (same prompt, same seed, with and without steering).

# %% tags=["parameters"]
profile = "mini"        # mini | smoke | paper
layer = None            # None: middle layer of the group
zh_feature = None       # None: discover (paper: 6159)
lzh_feature = None      # None: discover (paper: 36398)
alpha_scale = None      # None: the features mean activation when it fires; 1.0: multipliers are raw alphas
# paper profile: the report does not name its text data (HF dataset ids; see docs/paper_sources.md)
classical_dataset = None   # classical Chinese (lzh) text; None: the SteerConfig default
classical_column = None
modern_dataset = None      # modern Chinese text
modern_column = None
english_dataset = None     # English prompt sources
norm_ratio = "profile"     # massive-norm exclusion in discovery (x median token norm); "profile": paper 10, mini/smoke off
rank_top = 50              # a given feature id counts as selective if it ranks within this many
config = None              # any other SteerConfig field, as YAML: -y 'config: {n_cs_prompts: 20, seeds: [0]}'
seed = 0

# %%
from qscope_utils.texts import require_languages
require_languages(profile, "02")  # a custom QSCOPE_CORPUS_DIR must hold what 02 reads (data/README.md)
from qscope_utils.plan import show_plan; show_plan("02", globals())  # downloads, peak GPU memory, GPU time (nothing runs)

import json
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import display

from qscope_utils import discovery as disc
from qscope_utils import figures as F
from qscope_utils import steer_eval as se
from qscope_utils.params import given, override_config
from qscope_utils.profiles import get_profile, massive_norm_ratio
from qscope_utils.report import save_fig, save_json, save_table
from qscope_utils.scope import open_scope

warnings.filterwarnings("ignore", message="Glyph")  # no CJK font: figures avoid Chinese text
pd.set_option("display.max_colwidth", 80)
torch.manual_seed(seed)
overrides = given(layer=layer, zh_feature=zh_feature, lzh_feature=lzh_feature, alpha_scale=alpha_scale,
                  classical_dataset=classical_dataset, classical_column=classical_column,
                  modern_dataset=modern_dataset, modern_column=modern_column, english_dataset=english_dataset)
cfg = override_config(se.SteerConfig.for_profile(profile, seed=seed, **overrides), config)
prof = get_profile(profile)
norm_ratio = massive_norm_ratio(prof, norm_ratio)
scope = open_scope(prof)
model, tok = scope.model, scope.tokenizer
L = cfg.layer if cfg.layer is not None else se.middle_layer(scope.n_layers)
sae = scope.saes[L]
kw = dict(max_length=cfg.max_length, batch_size=cfg.batch_size, progress=False, norm_ratio=norm_ratio)
data = se.load_case_texts(prof, cfg)
print(f"{scope.group.repo_id}, layer {L} of {scope.n_layers}; d_sae={sae.d_sae}, k={sae.k}; "
      f"massive-norm exclusion norm_ratio={norm_ratio}")
print({k: len(v) for k, v in data.items() if isinstance(v, list)}, {k: len(v) for k, v in data["other"].items()})

# %% [markdown]
# ## Case 1 · English prompts that drift into Chinese
# The prompts are English corpus text followed by a cue (none, a Chinese comma, a Chinese
# attribution line, a Chinese word): the cue makes a drift into Chinese likely, while the text
# before it stays English. We sample at temperature 1 and keep the baseline samples: their Han tokens
# are the "bad responses" used for discovery (the cue itself, part of the prompt, is not counted).

# %%
cs_prompts = se.english_prompts(data["english"], cfg.n_cs_prompts, seed=seed)
gen_kw = dict(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, batch_size=cfg.batch_size, progress=False)
base1 = se.run_conditions(model, tok, list(cs_prompts.prompt), cfg.seeds, [se.BASELINE], **gen_kw)
base1 = base1.join(se.script_metrics(base1.continuation, "Han"))
drift = base1.merge(cs_prompts, on="prompt_id").groupby("cue")[["has_script", "script_share"]].mean()
print("baseline code-switch by cue (share of continuations with Han, share of Han characters):")
display(drift.round(3))

# %% [markdown]
# ### Discovery: the Chinese feature
# (a) rank by mean activation on the Han tokens of the drifted continuations (the report's method);
# (b) contrast: mean activation on Chinese text (zh + lzh) minus on the other languages.
# The chosen feature is the most Chinese-specific (largest contrast) among the top-20 of (a).

# %%
bad = base1[base1.has_script > 0].merge(cs_prompts, on="prompt_id")
bad_texts = list(bad.prompt + bad.continuation)
resp_rank = (disc.rank_by_response(model, tok, sae, L, bad_texts, "Han", start_chars=list(bad.prompt.str.len()),
                                   top=None, **kw) if len(bad) else None)
other_texts = [t for ts in data["other"].values() for t in ts]
zh_pos = (data["zh"][: cfg.n_discovery_texts // 2] + data["lzh"][: cfg.n_discovery_texts // 2])
zh_contrast = disc.contrast_features(model, tok, sae, L, zh_pos, other_texts, top=None, **kw)
zh_pick = ({"feature": cfg.zh_feature, "method": "given (report id)"} if cfg.zh_feature is not None
           else disc.pick_feature(resp_rank, zh_contrast))
F_ZH = int(zh_pick["feature"])
print(f"{len(bad)} drifted continuations -> Chinese feature {F_ZH}: {zh_pick}")
if resp_rank is not None:
    display(resp_rank.head(8).round(4))
display(zh_contrast.head(8).round(4))
given_ranks = {}
if cfg.zh_feature is not None:   # the report's id: where does it rank here?
    given_ranks["zh"] = disc.given_feature_rank(F_ZH, {"response": resp_rank, "contrast zh vs other": zh_contrast},
                                                L, top=rank_top)
    print(f"given Chinese feature {F_ZH} at layer {L}: {given_ranks['zh']['tables']}")
    if given_ranks["zh"]["warning"]:
        warnings.warn(given_ranks["zh"]["warning"])

# %% [markdown]
# ### Discovery: the classical-Chinese feature (contrast classical `lzh` vs modern `zh`)
# The top features of this contrast are often general Chinese features that fire somewhat more on
# poems; we take the top one that fires at least `classical_min_ratio` times more on classical than
# on modern text and is not the Chinese feature of case 1 (a style feature, not a language feature).

# %%
lzh_contrast = disc.contrast_features(model, tok, sae, L, data["lzh"][: cfg.n_discovery_texts],
                                      data["zh"][: cfg.n_discovery_texts], top=None, **kw)
lzh_pick = ({"feature": cfg.lzh_feature, "method": "given (report id)"} if cfg.lzh_feature is not None
            else disc.pick_contrast(lzh_contrast, min_ratio=cfg.classical_min_ratio, exclude=[F_ZH]))
F_LZH = int(lzh_pick["feature"])
display(lzh_contrast.head(8).round(4))
print(f"classical-Chinese feature: {F_LZH}: {lzh_pick}")
if cfg.lzh_feature is not None:
    given_ranks["lzh"] = disc.given_feature_rank(F_LZH, {"contrast lzh vs zh": lzh_contrast}, L, top=rank_top,
                                                 min_ratio=cfg.classical_min_ratio)
    print(f"given classical feature {F_LZH} at layer {L}: {given_ranks['lzh']['tables']}")
    if given_ranks["lzh"]["warning"]:
        warnings.warn(given_ranks["lzh"]["warning"])

# %% [markdown]
# ### Dashboards: top-activating contexts and per-language profile of the candidates

# %%
cands = list(dict.fromkeys([F_ZH, F_LZH] + list(zh_contrast.feature.head(2)) + list(lzh_contrast.feature.head(2))))
labels = {F_ZH: "chosen: Chinese", F_LZH: "chosen: classical"}
by_lang = {**{l: ts[: cfg.n_dashboard_texts] for l, ts in data["other"].items()},
           "zh": data["zh"][: cfg.n_dashboard_texts], "lzh": data["lzh"][: cfg.n_dashboard_texts]}
dashboards = disc.feature_dashboards(model, tok, sae, L, [int(f) for f in cands], by_lang, n=8, labels=labels, **kw)
dash_txt = disc.format_dashboards(dashboards)
from qscope_utils.paths import results_dir
(results_dir(profile) / "02_dashboards.txt").write_text(dash_txt)
print(dash_txt)
fig_meta = {"sae_group": scope.group.repo_id, "layer": L, "zh_feature": F_ZH, "lzh_feature": F_LZH, "alpha_scale": {}}
fig = F.render(profile, "02_dashboards", fig_meta)   # from 02_dashboards.txt (qscope_utils.figures)
plt.show()

# %% [markdown]
# ### Suppression sweep
# alpha = -multiplier x scale, scale = the feature's mean activation when it fires on Chinese text
# (or 1 when `alpha_scale=1`: raw alphas). The second method clamps the feature's code to 0 wherever
# it fires. Cost: NLL (nats/token) of each continuation under the unsteered model.

# %%
zh_row = zh_contrast.set_index("feature").loc[F_ZH]
scale_zh = cfg.alpha_scale if cfg.alpha_scale is not None else se.alpha_scale_from_contrast({**zh_row, "feature": F_ZH})
conds1 = [se.additive(L, sae, F_ZH, -m * scale_zh, m) for m in cfg.suppress_multipliers if m > 0]
conds1.append(se.clamped(L, sae, [F_ZH], 0.0, name="clamp=0"))
run1 = se.run_conditions(model, tok, list(cs_prompts.prompt), cfg.seeds, conds1, **gen_kw)
run1 = run1.join(se.script_metrics(run1.continuation, "Han"))
case1 = pd.concat([base1, run1], ignore_index=True)
prompt_ids = [tok(p)["input_ids"] for p in cs_prompts.prompt]
case1["nll"] = se.continuation_nll(model, [prompt_ids[i] for i in case1.prompt_id], list(case1.ids), cfg.batch_size)
sum1 = se.summarise(case1, ["has_script", "script_share", "nll"], n_boot=cfg.n_boot, seed=seed)
save_table(sum1, profile, "02_case1_summary")
display(sum1.round(4))

# %%
fig_meta["alpha_scale"]["zh"] = scale_zh
fig = F.render(profile, "02_case1_sweep", fig_meta)
plt.show()

# %% [markdown]
# ## Case 2 · Modern-Chinese story openings, activating the classical-Chinese feature
# First the classicalness classifier: character 1-3-gram TF-IDF + logistic regression on windows of
# classical (`lzh`) vs modern (`zh`) training documents, validated on held-out documents' windows.
# Title, author and attribution lines are removed and only Han characters and Chinese punctuation
# are kept, so the classifier judges the Chinese text, not formatting.

# %%
clf = se.ClassicalnessClassifier(window=cfg.clf_window_chars, seed=seed).fit(data["lzh"], data["zh"])
clf_eval = clf.evaluate(data["lzh_heldout"], data["zh_heldout"])
print(f"classicalness classifier, trained on {clf.n_train}; held-out: {clf_eval}")

# %%
style_prompts = list(se.STORY_OPENINGS[: cfg.n_style_prompts])
lzh_row = lzh_contrast.set_index("feature").loc[F_LZH]
scale_lzh = (cfg.alpha_scale if cfg.alpha_scale is not None
             else se.alpha_scale_from_contrast({**lzh_row, "feature": F_LZH}))
conds2 = [se.BASELINE] + [se.additive(L, sae, F_LZH, m * scale_lzh, m) for m in cfg.activate_multipliers if m > 0]
case2 = se.run_conditions(model, tok, style_prompts, cfg.seeds, conds2, **gen_kw)
case2["p_classical"] = clf.predict_proba(list(case2.continuation))
case2 = case2.join(pd.DataFrame([se.style_stats(t) for t in case2.continuation]))
case2 = case2.join(se.script_metrics(case2.continuation, "Han")[["script_share"]])
sum2 = se.summarise(case2, ["p_classical", "function_share", "clause_len", "script_share"], n_boot=cfg.n_boot, seed=seed)
save_table(sum2, profile, "02_case2_summary")
display(sum2.round(4))

# %%
fig_meta["alpha_scale"]["lzh"] = scale_lzh
fig = F.render(profile, "02_case2_sweep", fig_meta)
plt.show()

# %% [markdown]
# ## Example generations
# Same prompt and seed, baseline vs steered: case 1 shows prompts whose baseline drifted into
# Chinese, under a mild and the strongest suppression and under clamping; case 2 the middle and the
# strongest activation.

# %%
def examples(df, prompts, conds, n, case, only=None):
    first_seed = df.seed.min()
    pick = df[(df.seed == first_seed) & df.condition.isin(conds)]
    wide = pick.pivot_table(index="prompt_id", columns="condition", values="continuation", aggfunc="first")[conds]
    if only is not None:
        wide = wide[wide.index.isin(only)]
    wide.insert(0, "prompt", [prompts[i] for i in wide.index])
    wide.insert(0, "case", case)
    return wide.head(n).reset_index()

add1 = [c.name for c in sorted(conds1[:-1], key=lambda c: c.multiplier)]
show1 = ["baseline"] + list(dict.fromkeys([add1[len(add1) // 2 - 1] if len(add1) > 1 else add1[0], add1[-1]])) + ["clamp=0"]
drifted = base1[(base1.seed == base1.seed.min()) & (base1.has_script > 0)].prompt_id
ex1 = examples(case1, list(cs_prompts.prompt), show1, 8, "1: suppress Chinese", only=set(drifted))
add2 = [c.name for c in conds2[1:]]
show2 = ["baseline"] + list(dict.fromkeys([add2[len(add2) // 2], add2[-1]]))
ex2 = examples(case2, style_prompts, show2, 8, "2: activate classical")
save_table(pd.concat([ex1, ex2], ignore_index=True), profile, "02_examples")
display(ex1)
display(ex2)

# %% [markdown]
# ## Summary and verdict (numbers from the tables above)

# %%
def base(summary, metric):
    r = summary[(summary.metric == metric) & (summary.condition == "baseline")].iloc[0]
    return {"mean": float(r["mean"]), "lo": float(r.lo), "hi": float(r.hi)}

# The operating point is picked by a rule fixed in advance (se.pick_alpha, one-SE rule): the weakest
# |alpha| whose change is within one SE of the largest change, case 1 only among alphas whose NLL
# cost is <= cfg.max_nll_cost. The argmax and the former rule's pick (mildest significant alpha) are
# recorded beside it; the argmax flips between near-tied alphas, the rule does not.
c1 = {m: {"baseline": base(sum1, m), **se.pick_alpha(sum1, m, "down", cost="nll", max_cost=cfg.max_nll_cost)}
      for m in ("has_script", "script_share")}
c1_clamp = sum1[sum1.condition == "clamp=0"].set_index("metric")[["mean", "diff", "diff_lo", "diff_hi", "significant"]]
nll_at = sum1[(sum1.metric == "nll") & (sum1.condition == c1["has_script"]["best_steered"]["condition"])].iloc[0]
c2 = {m: {"baseline": base(sum2, m), **se.pick_alpha(sum2, m, "up")} for m in ("p_classical", "function_share")}
record = {
    "backbone": prof.backbone, "sae_group": scope.group.repo_id, "layer": L,
    "zh_feature": F_ZH, "zh_feature_selection": zh_pick, "lzh_feature": F_LZH, "lzh_feature_selection": lzh_pick,
    "lzh_feature_contrast": lzh_contrast.head(5).to_dict("records"),
    "alpha_scale": {"zh": scale_zh, "lzh": scale_lzh}, "config": {k: v for k, v in cfg.__dict__.items()},
    "given_feature_ranks": given_ranks, "exclude_first": True, "norm_ratio": norm_ratio,
    "n_prompts": {"case1": len(cs_prompts), "case2": len(style_prompts)}, "seeds": list(cfg.seeds),
    "case1": {**c1, "clamp": c1_clamp.reset_index().to_dict("records"),
              "nll_cost_at_best": {"condition": nll_at.condition, "diff": float(nll_at["diff"]),
                                   "diff_lo": float(nll_at.diff_lo), "diff_hi": float(nll_at.diff_hi)},
              "drifted_baseline_continuations": int(len(bad))},
    "case2": {**c2, "classifier_heldout": clf_eval, "classifier_train_windows": clf.n_train},
    "paper": {"case1": "Qwen3: feature 6159 found by ranking on the bad response; suppressing it removes the mixing "
                       "(one qualitative example; model, layer, alpha not stated)",
              "case2": "feature 36398 (64K SAE) activated turns a modern-Chinese continuation classical (qualitative)"},
}
save_json(record, profile, "02_summary", seed=seed)

def verdict(name, d, want):
    b, s = d["baseline"], d["best_steered"]
    sig = s["significant"] and ((s["diff"] < 0) if want == "down" else (s["diff"] > 0))
    return (f"{name}: baseline {b['mean']:.3f} [{b['lo']:.3f}, {b['hi']:.3f}] -> {s['mean']:.3f} at {s['condition']} "
            f"(change {s['diff']:+.3f}, 95% CI [{s['diff_lo']:+.3f}, {s['diff_hi']:+.3f}]): "
            + ("the interval excludes zero." if sig else "NOT significant: the interval includes zero (or goes the wrong way).")
            + f" [argmax alpha: {d['argmax_steered']['condition']}]")

lines = [verdict("Case 1 share of continuations with Han", c1["has_script"], "down"),
         verdict("Case 1 share of Han characters", c1["script_share"], "down"),
         "Operating-point rule: " + c1["has_script"]["selection_rule"],
         f"Case 1 cost at that alpha: NLL change {nll_at['diff']:+.3f} nats/token [{nll_at.diff_lo:+.3f}, {nll_at.diff_hi:+.3f}]",
         f"Case 1 clamp=0: Han share change {c1_clamp.loc['has_script', 'diff']:+.3f} "
         f"[{c1_clamp.loc['has_script', 'diff_lo']:+.3f}, {c1_clamp.loc['has_script', 'diff_hi']:+.3f}]",
         verdict("Case 2 P(classical)", c2["p_classical"], "up"),
         verdict("Case 2 share of classical particles", c2["function_share"], "up"),
         f"Classifier held-out accuracy {clf_eval['accuracy']:.3f} (balanced {clf_eval['balanced_accuracy']:.3f}) "
         f"on {clf_eval['n_classical']} classical + {clf_eval['n_modern']} modern windows"]
print("\n".join(lines))

# %% [markdown]
# ## How to read these numbers
# * **Significance.** A change counts only when its 95% paired bootstrap interval excludes zero; the
#   verdict lines above say so explicitly, metric by metric.
# * **Which alpha.** The reported alpha is chosen by a rule fixed in advance, not by the largest
#   effect: the weakest |alpha| whose change is within one standard error of the largest change
#   (case 1: only alphas costing at most `max_nll_cost` nats/token of NLL; stronger alphas remove
#   more Chinese but break the text, watch the NLL panel). The argmax alpha is printed beside it;
#   it flips between near-tied alphas with tiny numeric differences, the rule does not.
# * **Case 1 cost.** NLL is measured under the unsteered model; at large |alpha| the continuations
#   become letter soup (see the example table), so "no Chinese" there is not a success. The useful
#   operating point is where Han drops and the NLL interval still (nearly) includes zero.
#   Clamping to 0 only removes the feature where it fires, a weaker intervention than a negative push.
# * **Case 2 measure.** On the built profiles the classical set is Tang/Song poems and the "modern"
#   set is the fortunes-zh prose (which itself quotes classical sayings) plus man pages, so the
#   classifier measures *poem-like classical style*; the particles 之乎者也矣焉哉 are rare in Tang poems,
#   so their share need not rise (and is reported even when it falls). Mean clause length growing
#   at large alpha signals lost punctuation, i.e. degradation, not style.
# * **Paper.** The report shows one qualitative example per case; it gives no rates, layer or alpha,
#   so there is no number to match, only the direction of the effect.

# %% [markdown]
# ## What we found vs the report
# Generated from the summary this notebook just saved (`qscope_utils.findings`); verdict words are
# defined in `docs/CONVENTIONS.md`.

# %%
from IPython.display import Markdown

from qscope_utils.findings import for_notebook

Markdown(for_notebook("02", profile))
