"""Every figure of notebooks 00-07, drawn from the saved tables of ``results/<profile>/`` only.

One function per figure, ``fn(results_dir) -> matplotlib.figure.Figure``, registered in
:data:`FIGURES` under the PNG name the notebooks write. Each declares the tables it reads
(``fn.needs``); nothing here loads a model, a dataset or torch, so every figure of a profile is
redrawn in seconds::

    python -m qscope_utils.figures --profile mini        # or ./run_all.sh --figures --profile mini
    python -m qscope_utils.figures --dir some/results/mini --formats png svg

Notebooks call :func:`render` after saving their tables, so a notebook's figure and a
regenerated one are the same code. One style (:func:`apply_style`: seaborn theme, colour-blind
palette, a CJK-capable font from :mod:`qscope_utils.fonts`); the report's numbers are drawn as a
grey dashed reference line or a red "x" marker (:data:`PAPER_REFERENCE`, plus the sections'
torch-free constants ``redundancy.PAPER`` and ``safety.PAPER``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import redundancy as rd
from . import safety as sf
from .fonts import ensure_cjk_font

__all__ = ["PAPER_REFERENCE", "FIGURES", "MissingTable", "apply_style", "render", "regenerate", "main"]

# The report's numbers that no torch-free section module holds (kept equal to toxicity.PAPER_CLAIMS
# and sasft.PAPER_TABLE4 by tests/test_figures.py; those modules import torch).
PAPER_REFERENCE = {
    "fvu_audit": 0.20,                       # SPEC §2: third-party audit, Qwen3.5-2B-Base mid layer, k=100
    "toxicity_english_f1": 0.90,             # §5: English held-out F1 > 0.90
    "toxicity_ratio_at_10pct": 0.99,         # §5: 10% of discovery data keeps ~99% of macro F1
    "rho_R_Rhat": rd.PAPER["rho_R_Rhat"],
    "overlap_GSM8K_MATH": rd.PAPER["overlap_GSM8K_MATH"], "overlap_MATH_GSM8K": rd.PAPER["overlap_MATH_GSM8K"],
    "coverage_pct": sf.PAPER["coverage_pct"],
    "table4": {("Qwen3-1.7B-Base", "zh"): (0.81, 0.22), ("Qwen3-1.7B-Base", "ru"): (0.19, 0.03),
               ("Qwen3-1.7B-Base", "ko"): (0.36, 0.00), ("Qwen3-8B-Base", "zh"): (0.96, 0.66),
               ("Qwen3-8B-Base", "ru"): (0.16, 0.07), ("Qwen3-8B-Base", "ko"): (0.43, 0.07)},
}
REF = dict(color="0.35", ls="--", lw=1.2)          # the report's value as a line
REF_MARK = dict(marker="x", color="tab:red", s=50, zorder=4)   # ... or as a marker
FIGURES: dict[str, Callable] = {}
_styled = False


class MissingTable(FileNotFoundError):
    """A figure's input table is not in the results directory (its notebook has not saved it yet)."""


def figure(name: str, *needs: str):
    """Register ``fn`` under ``name`` with the result files it reads."""
    def deco(fn):
        fn.needs = needs
        FIGURES[name] = fn
        return fn
    return deco


# ----------------------------------------------------------------------------- style and io

def apply_style(fetch_font: bool = False) -> str | None:
    """The one theme: seaborn whitegrid, "colorblind" palette, DejaVu Sans + a CJK font (fallback
    per glyph), vector text as TrueType in PDF. Returns the CJK family or None."""
    global _styled
    import matplotlib
    import seaborn as sns

    cjk = ensure_cjk_font(fetch=fetch_font)
    families = ["DejaVu Sans"] + ([cjk] if cjk else [])      # a list: matplotlib falls back glyph by glyph
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind",
                  rc={"font.family": families, "font.sans-serif": families,
                      "figure.dpi": 100, "savefig.dpi": 120, "pdf.fonttype": 42, "svg.fonttype": "none",
                      "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
                      "legend.fontsize": 7, "figure.titlesize": 10})
    matplotlib.rcParams["axes.unicode_minus"] = False
    _styled = True
    return cjk


def _read(d: Path, name: str) -> pd.DataFrame:
    p = Path(d) / name
    if not p.exists():
        raise MissingTable(f"{p} is missing: run notebook {name[:2]} for this profile (it saves {name})")
    return pd.read_csv(p)


def _json(d: Path, name: str) -> dict:
    p = Path(d) / name
    if not p.exists():
        raise MissingTable(f"{p} is missing: run notebook {name[:2]} for this profile (it saves {name})")
    return json.loads(p.read_text())


def _summary(d: Path, nb: str, meta: dict | None) -> dict:
    """The figure's scalars (group, layer, feature ids, ...): ``meta`` when the notebook passes it
    (its summary JSON is written last), else the saved ``<nb>_summary.json`` (regeneration)."""
    return meta if meta is not None else _json(d, f"{nb}_summary.json")


def _subplots(nrows=1, ncols=1, **kw):
    import matplotlib.pyplot as plt

    if not _styled:
        apply_style()
    return plt.subplots(nrows, ncols, squeeze=False, **kw)


def _ci(ax, x, df, col="mean", lo="lo", hi="hi", **kw):
    return ax.errorbar(x, df[col], yerr=[df[col] - df[lo], df[hi] - df[col]], capsize=3, **kw)


def _matrix(ax, mat: pd.DataFrame, cmap="viridis", fmt=".2f", cbar_label=None, **kw):
    import seaborn as sns

    sns.heatmap(mat, ax=ax, vmin=0, vmax=1, cmap=cmap, annot=True, fmt=fmt, annot_kws={"fontsize": 7},
                cbar_kws={"label": cbar_label, "shrink": 0.8} if cbar_label else {"shrink": 0.8}, square=True, **kw)


# ----------------------------------------------------------------------------- 00 mini build

@figure("00_pretraining", "00_train_log.csv", "00_perplexity.csv")
def fig_00_pretraining(d: Path, meta: dict | None = None):
    log, ppl = _read(d, "00_train_log.csv"), _read(d, "00_perplexity.csv")
    fig, ax = _subplots(1, 2, figsize=(11, 3.5))
    for mix, g in log.groupby("mixture"):
        ax[0, 0].plot(g.step, g.loss, label=mix)
    ax[0, 0].set(xlabel="step", ylabel="train loss (nats/token)", title="pretraining")
    ax[0, 0].legend()
    lang = ppl[ppl.level == "lang"].sort_values("bits_per_char")
    ax[0, 1].bar(lang.name, lang.bits_per_char, color="C0")
    ax[0, 1].set(ylabel="bits per char (held-out)", title="main checkpoint, per language")
    fig.tight_layout()
    return fig


@figure("00_sae_training", "00_sae_curves.csv")
def fig_00_sae_training(d: Path, meta: dict | None = None):
    c = _read(d, "00_sae_curves.csv")
    fig, ax = _subplots(1, 2, figsize=(11, 3.5))
    for layer, g in c.groupby("layer"):
        ax[0, 0].plot(g.tokens, g.fvu, label=f"layer {layer}")
        ax[0, 1].plot(g.tokens, g.dead_frac, label=f"layer {layer}")
    ax[0, 0].set(xlabel="training tokens", ylabel="batch FVU", yscale="log", title="SAE training")
    ax[0, 1].set(xlabel="training tokens", ylabel="dead fraction")
    ax[0, 0].legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 01 loading / reconstruction

@figure("01_reconstruction_by_layer", "01_reconstruction.csv", "01_summary.json")
def fig_01_reconstruction_by_layer(d: Path, meta: dict | None = None):
    df, s = _read(d, "01_reconstruction.csv"), _summary(d, "01", meta)
    fig, axes = _subplots(1, 4, figsize=(16, 3.4))
    a = axes[0]
    a[0].plot(df.layer, df.fvu, "o-", label="ours")
    a[0].axhline(PAPER_REFERENCE["fvu_audit"], **REF, label="audit: Qwen3.5-2B mid-layer, k=100")
    a[0].set(title="FVU (lower is better)", ylabel="FVU")
    a[0].legend()
    a[1].plot(df.layer, df.l0, "o-")
    a[1].axhline(s["k"], ls=":", c="0.5", label=f"k = {s['k']}")
    a[1].set(title="L0 (active latents per token)")
    a[1].legend()
    a[2].plot(df.layer, 100 * df.dead_fraction, "o-", label="dead")
    a[2].plot(df.layer, 100 * df.dense_fraction, "s-", label=">10% dense")
    a[2].set(title="latents (%)")
    a[2].legend()
    if "delta_loss" in df and df.delta_loss.notna().any():
        a[3].plot(df.layer, df.delta_loss, "o-")
    a[3].set(title="Δ LM loss when spliced (nats/token)")
    for ax in a:
        ax.set_xlabel("layer")
        ax.set_xticks(list(df.layer))
    fig.suptitle(f"{s['group']} on {s['n_texts']} held-out texts ({s['tokens_per_layer']} tokens/layer)")
    fig.tight_layout()
    return fig


@figure("01_decoder_norms_and_load", "01_reconstruction.csv")
def fig_01_decoder_norms_and_load(d: Path, meta: dict | None = None):
    """Decoder column-norm quantiles (5-25-50-75-95%, computed in recon.evaluate_group's single pass) and load time."""
    df = _read(d, "01_reconstruction.csv")
    if "dec_norm_q05" not in df.columns:
        raise MissingTable(f"{d / '01_reconstruction.csv'} has no decoder-norm quantiles: rerun notebook 01")
    fig, axes = _subplots(1, 2, figsize=(10, 3.2))
    stats = [{"label": str(r.layer), "whislo": r.dec_norm_q05, "q1": r.dec_norm_q25, "med": r.dec_norm_q50,
              "q3": r.dec_norm_q75, "whishi": r.dec_norm_q95} for r in df.itertuples()]
    axes[0, 0].bxp(stats, positions=list(df.layer), showfliers=False)
    axes[0, 0].set(title="‖W_dec[:, i]‖ per layer (5-25-50-75-95%)", ylabel="column norm")
    axes[0, 1].bar(df.layer, df.load_seconds, color="C0")
    axes[0, 1].set(title="load time per layer", ylabel="seconds")
    for ax in axes[0]:
        ax.set_xlabel("layer")
        ax.set_xticks(list(df.layer))
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 02 steering case studies

_DASH_HEAD = re.compile(r"^=== layer (\d+) feature (\d+)(?: \((.*)\))? ===$")
_DASH_CTX = re.compile(r"^\s*\d+\.\s+(-?[\d.]+) \[([^\]]+)\] (.*)$")


def read_dashboards(path: Path) -> list[dict]:
    """Parse the text dashboards notebook 02 saves (``discovery.format_dashboards``) into
    [{layer, feature, label, by_lang: {lang: mean}, contexts: [(activation, lang, context)]}]."""
    out = []
    for line in Path(path).read_text().splitlines():
        if m := _DASH_HEAD.match(line):
            out.append({"layer": int(m[1]), "feature": int(m[2]), "label": m[3] or "", "by_lang": {}, "contexts": []})
        elif line.startswith("mean activation per token by language:") and out:
            for kv in line.split(":", 1)[1].split(","):
                if "=" in kv:
                    k, v = kv.strip().split("=")
                    out[-1]["by_lang"][k] = float(v)
        elif (m := _DASH_CTX.match(line)) and out:
            out[-1]["contexts"].append((float(m[1]), m[2], m[3]))
    return out


@figure("02_dashboards", "02_dashboards.txt", "02_summary.json")
def fig_02_dashboards(d: Path, meta: dict | None = None):
    p = Path(d) / "02_dashboards.txt"
    if not p.exists():
        raise MissingTable(f"{p} is missing: run notebook 02 for this profile")
    dash, s = read_dashboards(p), _summary(d, "02", meta)
    fig, axes = _subplots(max(len(dash), 1), 2, figsize=(13, 2.6 * max(len(dash), 1)),
                          gridspec_kw={"width_ratios": [1, 2]})
    for (a0, a1), f in zip(axes, dash):
        prof = pd.Series(f["by_lang"]).sort_values(ascending=False)
        a0.bar(prof.index, prof.values, color="C0")
        a0.set_title(f"L{f['layer']} f{f['feature']} {f['label']}: mean activation by language", fontsize=9)
        a0.tick_params(axis="x", labelrotation=60)
        ctx = f["contexts"][::-1]
        a1.barh(range(len(ctx)), [c[0] for c in ctx], color="C1")
        a1.set_yticks(range(len(ctx)), [f"[{c[1]}] …{c[2][-40:]}" for c in ctx], fontsize=7)
        a1.set(title="top-activating contexts ([[token]] = the active token)", xlabel="activation")
    fig.suptitle(f"{s['sae_group']} layer {s['layer']}: candidate features")
    fig.tight_layout()
    return fig


def _sweep(summary: pd.DataFrame, metrics: dict, title: str):
    """Metric vs alpha with bootstrap CIs; additive conditions as a line, others (clamping) as a band."""
    fig, axes = _subplots(1, len(metrics), figsize=(4.6 * len(metrics), 3.4))
    for ax, (m, label) in zip(axes[0], metrics.items()):
        s = summary[summary.metric == m]
        line = s[s.condition.str.startswith("add") | (s.condition == "baseline")].sort_values("alpha")
        _ci(ax, line.alpha, line, fmt="o-", label="additive steering")
        for i, (_, r) in enumerate(s[~s.index.isin(line.index)].iterrows()):
            ax.axhspan(r.lo, r.hi, color=f"C{3 + i}", alpha=0.15)
            ax.axhline(r["mean"], color=f"C{3 + i}", ls="-.", lw=1, label=r.condition)
        ax.set(xlabel="alpha", title=label)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


@figure("02_case1_sweep", "02_case1_summary.csv", "02_summary.json")
def fig_02_case1_sweep(d: Path, meta: dict | None = None):
    s = _summary(d, "02", meta)
    return _sweep(_read(d, "02_case1_summary.csv"),
                  {"has_script": "share of continuations with Han", "script_share": "share of Han characters",
                   "nll": "NLL under unsteered model (nats/token)"},
                  f"Case 1: suppressing feature {s['zh_feature']} (layer {s['layer']}, scale "
                  f"{s['alpha_scale']['zh']:.3g}); 95% bootstrap CI")


@figure("02_case2_sweep", "02_case2_summary.csv", "02_summary.json")
def fig_02_case2_sweep(d: Path, meta: dict | None = None):
    s = _summary(d, "02", meta)
    return _sweep(_read(d, "02_case2_summary.csv"),
                  {"p_classical": "P(classical) (classifier)", "function_share": "share of classical particles",
                   "clause_len": "mean clause length (Han chars)", "script_share": "share of Han characters"},
                  f"Case 2: activating feature {s['lzh_feature']} (layer {s['layer']}, scale "
                  f"{s['alpha_scale']['lzh']:.3g}); 95% bootstrap CI")


# ----------------------------------------------------------------------------- 03 benchmark redundancy

@figure("03_R_vs_Rhat", "03_redundancy.csv", "03_curves.csv", "03_summary.json")
def fig_03_r_vs_rhat(d: Path, meta: dict | None = None):
    t, cur, s = _read(d, "03_redundancy.csv"), _read(d, "03_curves.csv"), _summary(d, "03", meta)
    fig, axes = _subplots(1, 3, figsize=(17, 4.2), gridspec_kw={"width_ratios": [1.2, 1, 1]})
    rd.plot_r_vs_rhat(t, s["rho_R_Rhat"], axes[0, 0], paper_rho=PAPER_REFERENCE["rho_R_Rhat"])
    for ax, (kind, ylab) in zip(axes[0, 1:], [("tau", r"$\tau_n$ (Kendall, subset vs full ranking)"),
                                               ("coverage", r"$c_n = E|F(S)|/|F(D)|$")]):
        for name, g in cur[cur.kind == kind].groupby("benchmark", sort=False):
            ax.plot(g.n / g.n.max(), g.value, lw=1, label=name)
        ax.set(xlabel="n / N", ylabel=ylab)
    axes[0, 2].legend(fontsize=6, ncol=2)
    e = s.get("estimation", {})
    fig.suptitle(f"{s['group']}, layer {s['layer']}; {s['n_checkpoints']} checkpoints; "
                 f"{e.get('n_draws', '?')} permutations (seed {e.get('seed', '?')})")
    fig.tight_layout()
    return fig


def curve_table(taus: dict, covs: dict) -> pd.DataFrame:
    """Long table (benchmark, kind, n, value) of the tau_n and c_n curves (redundancy.TauCurve/CoverageCurve)."""
    rows = [pd.DataFrame({"benchmark": b, "kind": "tau", "n": t.ns, "value": t.tau_n}) for b, t in taus.items()]
    rows += [pd.DataFrame({"benchmark": b, "kind": "coverage", "n": c.ns, "value": c.c_n}) for b, c in covs.items()]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["benchmark", "kind", "n", "value"])


@figure("03_overlap_heatmap", "03_overlap.csv")
def fig_03_overlap_heatmap(d: Path, meta: dict | None = None):
    ov = _read(d, "03_overlap.csv").set_index("benchmark")
    fig, ax = _subplots(figsize=(7.5, 6.5))
    _matrix(ax[0, 0], ov, cbar_label="overlap")
    ax[0, 0].set(xlabel="col", ylabel="row",
                 title=f"overlap(row, col) = |F(row)∩F(col)| / |F(row)|\nreport: overlap(GSM8K, MATH) = "
                       f"{PAPER_REFERENCE['overlap_GSM8K_MATH']:.2f}, overlap(MATH, GSM8K) = "
                       f"{PAPER_REFERENCE['overlap_MATH_GSM8K']:.2f}")
    fig.tight_layout()
    return fig


@figure("03_similarity", "03_pairs.csv", "03_summary.json")
def fig_03_similarity(d: Path, meta: dict | None = None):
    pairs, s = _read(d, "03_pairs.csv"), _summary(d, "03", meta)
    fig, axes = _subplots(1, 2, figsize=(12, 4.6))
    rd.plot_similarity(pairs, s["similarity_28_pairs"], axes[0])
    fig.suptitle(f"{len(pairs)} pairs, control = {s['config']['control']}, {s['n_checkpoints']} checkpoints")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 04 toxicity

@figure("04_f1_by_layer", "04_f1_by_layer.csv", "04_layer_agreement.csv")
def fig_04_f1_by_layer(d: Path, meta: dict | None = None):
    grid, agree = _read(d, "04_f1_by_layer.csv"), _read(d, "04_layer_agreement.csv")
    langs = list(dict.fromkeys(grid.lang))
    fig, axes = _subplots(1, len(langs), figsize=(4.2 * len(langs), 3.4), sharey=True)
    for ax, lang in zip(axes[0], langs):
        g = grid[grid.lang == lang]
        for k, gk in g.groupby("K"):
            ax.plot(gk.layer, gk.f1, "o-", label=f"K={k}")
        ax.axvline(int(agree[agree.lang == lang].layer_top1diff.iloc[0]), c="0.5", ls=":", lw=1,
                   label="top1-diff layer")
        ax.axhline(PAPER_REFERENCE["toxicity_english_f1"], **REF, label="paper: English F1 > 0.90")
        ax.axhline(2 / 3, c="k", ls=":", lw=1, label="predict-all-toxic F1 = 0.67")
        ax.set(title=f"{lang}: OR-rule held-out F1", xlabel="layer", ylim=(0, 1.02))
        ax.set_xticks(sorted(g.layer.unique()))
    axes[0, 0].set_ylabel("F1 (toxic class)")
    axes[0, -1].legend()
    fig.tight_layout()
    return fig


@figure("04_layer_selection", "04_f1_by_layer.csv", "04_multi_layer.csv")
def fig_04_layer_selection(d: Path, meta: dict | None = None):
    grid, multi = _read(d, "04_f1_by_layer.csv"), _read(d, "04_multi_layer.csv")
    fig, axes = _subplots(1, 2, figsize=(10, 3.3))
    for lang in dict.fromkeys(grid.lang):
        g = grid[(grid.lang == lang) & (grid.K == grid.K.min())].sort_values("layer")
        axes[0, 0].plot(g.layer, g.d_l, "o-", label=lang)
        m = multi[multi.lang == lang]
        axes[0, 1].plot(m.m, m.f1, "o-", label=lang)
    axes[0, 0].set(title="top1-diff d(l) = max_f Δ_f (discovery)", xlabel="layer", ylabel="d(l)")
    axes[0, 0].set_xticks(sorted(grid.layer.unique()))
    axes[0, 0].legend()
    axes[0, 1].set(title="multi-layer OR: best feature of top-m layers", xlabel="m", ylabel="held-out F1")
    fig.tight_layout()
    return fig


@figure("04_transfer_heatmap", "04_transfer.csv")
def fig_04_transfer_heatmap(d: Path, meta: dict | None = None):
    tr = _read(d, "04_transfer.csv")
    langs, ks = list(dict.fromkeys(tr.source)), sorted(tr.K.unique())
    fig, axes = _subplots(1, len(ks), figsize=(3.4 * len(ks) + 1, 3.2))
    for i, (ax, k) in enumerate(zip(axes[0], ks)):
        mat = tr[tr.K == k].pivot(index="source", columns="target", values="f1").loc[langs, langs]
        _matrix(ax, mat, cbar=i == len(ks) - 1, cbar_label="held-out F1" if i == len(ks) - 1 else None)
        ax.set(title=f"K={k}", xlabel="target", ylabel="source" if i == 0 else "")
    fig.suptitle("transfer: features discovered on source, OR rule on target")
    fig.tight_layout()
    return fig


@figure("04_jaccard_by_layer", "04_jaccard.csv")
def fig_04_jaccard_by_layer(d: Path, meta: dict | None = None):
    jac = _read(d, "04_jaccard.csv")
    langs, lay = list(dict.fromkeys(jac.lang_a)), sorted(jac.layer.unique())
    fig, axes = _subplots(1, len(lay), figsize=(2.8 * len(lay) + 1, 3.0))
    for i, (ax, l) in enumerate(zip(axes[0], lay)):
        mat = jac[jac.layer == l].pivot(index="lang_a", columns="lang_b", values="jaccard").loc[langs, langs]
        _matrix(ax, mat, cmap="magma", cbar=i == len(lay) - 1, cbar_label="Jaccard of top features" if i == len(lay) - 1 else None)
        ax.set(title=f"layer {l}", xlabel="", ylabel="")
    fig.suptitle("cross-lingual overlap of the top toxicity features")
    fig.tight_layout()
    return fig


@figure("04_data_efficiency", "04_data_efficiency_curve.csv")
def fig_04_data_efficiency(d: Path, meta: dict | None = None):
    c = _read(d, "04_data_efficiency_curve.csv")
    fig, ax = _subplots(figsize=(5.8, 3.6))
    a = ax[0, 0]
    ratio = PAPER_REFERENCE["toxicity_ratio_at_10pct"]
    for i, (k, g) in enumerate(c.groupby("K")):
        a.errorbar(100 * g.fraction, g["mean"], yerr=[g["mean"] - g["min"], g["max"] - g["mean"]], fmt="o-",
                   capsize=3, color=f"C{i}", label=f"K={k}")
        full = g[g.fraction == 1.0]["mean"]
        if len(full):
            a.scatter([10], [ratio * float(full.iloc[0])], **{**REF_MARK, "color": f"C{i}"},
                      label="paper: 10% keeps 99% of full F1" if i == 0 else None)
    a.set_xscale("log")
    a.set_xticks([10, 25, 50, 100], ["10", "25", "50", "100"])
    a.set(xlabel="% of discovery split used", ylabel="macro F1 over languages",
          title="data efficiency (bars: min-max over subsets)")
    a.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 05 safety synthesis

@figure("05_targets", "05_targets.csv", "05_relevance.csv", "05_summary.json")
def fig_05_targets(d: Path, meta: dict | None = None):
    tt, rel, s = _read(d, "05_targets.csv"), _read(d, "05_relevance.csv"), _summary(d, "05", meta)
    fig, ax = _subplots(1, 2, figsize=(10, 3.4))
    fired = rel[rel.rate_unsafe + rel.rate_safe > 0]
    ax[0, 0].hist(fired.score, bins=60, color="0.6")
    ax[0, 0].axvline(s["tau"], c="C3", ls="--", label=f"tau = {s['tau']}")
    ax[0, 0].set(yscale="log", xlabel=f"relevance ({s['score']})", ylabel="features")
    ax[0, 0].legend()
    seen = tt.in_seed.astype(str).str.lower() == "true"
    ax[0, 1].scatter(tt.rate_safe[seen], tt.rate_unsafe[seen], s=12, c="C0", label="covered by seed")
    ax[0, 1].scatter(tt.rate_safe[~seen], tt.rate_unsafe[~seen], s=12, c="C3", label=f"missing ({int((~seen).sum())})")
    ax[0, 1].plot([0, 1], [0, 1], c="0.6", lw=0.8)
    ax[0, 1].set(xlabel="P(fire | safe)", ylabel="P(fire | unsafe)", title="target features T",
                 xlim=(0, max(0.05, tt.rate_safe.max() * 1.1) if len(tt) else 1),
                 ylim=(0, max(0.05, tt.rate_unsafe.max() * 1.1) if len(tt) else 1))
    ax[0, 1].legend()
    fig.tight_layout()
    return fig


@figure("05_coverage_vs_budget", "05_coverage_vs_budget.csv", "05_summary.json")
def fig_05_coverage_vs_budget(d: Path, meta: dict | None = None):
    cov, s = _read(d, "05_coverage_vs_budget.csv"), _summary(d, "05", meta)
    fig, ax = _subplots(1, 2, figsize=(11, 3.8))
    for m, k in zip(["o-", "s-", "^-"], ("feature synthesis", "random synthesis", "natural sampling")):
        ax[0, 0].plot(cov.budget, cov[f"Cov(T) {k}"], m, label=k)
        ax[0, 1].plot(cov.budget, cov[f"Cov(T_miss) {k}"], m, label=k)
    ax[0, 0].axhline(PAPER_REFERENCE["coverage_pct"], **REF,
                     label=f"paper: {PAPER_REFERENCE['coverage_pct']}% (feature synthesis)")
    ax[0, 0].set_ylabel("Cov(seed ∪ added) of T (%)")
    ax[0, 1].set_ylabel("share of T_miss covered by added (%)")
    for a in ax[0]:
        a.set(xlabel="budget (added examples)", ylim=(-2, 102))
        a.legend()
    fig.suptitle(f"{s['group']} layer {s['layer']}: |T| = {s['n_targets']}, seed covers "
                 f"{s['seed_coverage_pct']:.1f}%, |T_miss| = {s['n_missing']}")
    fig.tight_layout()
    return fig


@figure("05_downstream", "05_downstream.csv")
def fig_05_downstream(d: Path, meta: dict | None = None):
    t = _read(d, "05_downstream.csv")
    kinds = list(dict.fromkeys(t.features))
    fig, axes = _subplots(1, len(kinds), figsize=(5.5 * len(kinds), 3.6))
    for ax, kind in zip(axes[0], kinds):
        r = t[t.features == kind]
        y = np.arange(len(r))
        ax.errorbar(r.accuracy, y, xerr=[r.accuracy - r.acc_lo, r.acc_hi - r.accuracy], fmt="o", capsize=3, label="ours")
        ax.scatter(r["paper accuracy"], y, **REF_MARK, label="paper (Table 3, LoRA SFT)")
        ax.set_yticks(y, [f"{n}\n(n={k})" for n, k in zip(r["training set"], r.n_train)], fontsize=7)
        ax.set(xlabel="accuracy (%)", title=f"classifier on {kind} features")
        ax.legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 06 SASFT

def _lambda_names(lambdas, target: str | None = None) -> dict:
    """lambda -> run name as notebook 06 saves it: ``SFT`` (lambda 0, the shared control) and
    ``SASFT[<target>] λ=<lambda>`` (one run per target language); without a target, ``SASFT λ=<lambda>``."""
    tag = f"[{target}]" if target else ""
    return {float(l): ("SFT" if float(l) == 0 else f"SASFT{tag} λ={float(l):g}") for l in lambdas}


@figure("06_language_features", "06_features.csv")
def fig_06_language_features(d: Path, meta: dict | None = None):
    feats = _read(d, "06_features.csv")
    pre = not any(c.startswith("mean_") and c != "mean_target" for c in feats)
    prefix = "alpha_" if pre else "mean_"
    langs = [c[len(prefix):] for c in feats if c.startswith(prefix) and c != "mean_target"]
    layers = sorted(feats.layer.unique())
    fig, axes = _subplots(1, len(layers), figsize=(5.5 * len(layers), 3.2))
    import seaborn as sns

    for ax, l in zip(axes[0], layers):
        sub = feats[feats.layer == l]
        mat = pd.DataFrame(sub[[prefix + g for g in langs]].values, columns=langs,
                           index=[f"{t}:{f}" for t, f in zip(sub.target, sub.feature)])
        sns.heatmap(mat, ax=ax, cmap="viridis", cbar_kws={"shrink": 0.8, "label": "mean pre-activation" if pre
                                                           else "mean activation"})
        ax.set(title=f"layer {l}: selected features by language", xlabel="language", ylabel="target:feature")
    fig.tight_layout()
    return fig


@figure("06_training", "06_train_log.csv")
def fig_06_training(d: Path, meta: dict | None = None):
    log = _read(d, "06_train_log.csv")
    if "run" not in log:                      # tables of the single-run-per-lambda layout
        log = log.assign(run=log.lam.map(_lambda_names(log.lam.unique())))
    fig, axes = _subplots(1, 2, figsize=(11, 3.2))
    for run, g in log.groupby("run", sort=False):
        sm = g[["ce", "penalty"]].rolling(10, min_periods=1).mean()
        axes[0, 0].plot(g.step, sm.ce, label=run)
        axes[0, 1].plot(g.step, sm.penalty, label=run)
    axes[0, 0].set(title="response CE (rolling mean of 10)", ylabel="nats/token")
    axes[0, 1].set(title="SASFT penalty (measured in every run)", ylabel="penalty")
    for ax in axes[0]:
        ax.set_xlabel("step")
    axes[0, 1].legend()
    fig.tight_layout()
    return fig


@figure("06_code_switch_vs_lambda", "06_code_switch.csv", "06_summary.json")
def fig_06_code_switch_vs_lambda(d: Path, meta: dict | None = None):
    cs, s = _read(d, "06_code_switch.csv"), _summary(d, "06", meta)
    test = cs[cs.part == "test"]
    lambdas = [float(l) for l in s["lambdas"]]
    per_target = test.model.str.startswith("SASFT[").any()     # one SASFT run per target language
    targets = list(dict.fromkeys(test.target))
    paper_model = s.get("paper_model", "Qwen3-1.7B-Base")     # the report's row drawn as markers
    fig, axes = _subplots(1, len(targets), figsize=(4.2 * len(targets), 3.2), sharey=True)
    x = np.arange(len(lambdas))
    for ax, t in zip(axes[0], targets):
        names = _lambda_names(lambdas, t if per_target else None)
        sub = test[(test.target == t) & (test.model != "base")].set_index("model").loc[[names[l] for l in lambdas]]
        ax.errorbar(x, sub.ratio, yerr=[sub.ratio - sub.lo, sub.hi - sub.ratio], fmt="o-", capsize=3, label="ours")
        b = test[(test.target == t) & (test.model == "base")]
        if len(b):
            ax.axhline(b.ratio.iloc[0], ls=":", c="0.5", lw=1, label=f"base {b.ratio.iloc[0]:.2f}")
        pt = {"ja": "ko"}.get(t, t)
        if (paper_model, pt) in PAPER_REFERENCE["table4"]:
            sft, sas = PAPER_REFERENCE["table4"][(paper_model, pt)]
            ax.scatter([0, len(lambdas) - 1], [sft, sas], **REF_MARK, label=f"paper {paper_model} {pt}: SFT, SASFT")
        ax.set_xticks(x, [f"{l:g}" for l in lambdas])
        ax.set(xlabel="λ (0 = plain SFT)", title=f"code-switch into {t} (test prompts)")
        ax.legend()
    axes[0, 0].set_ylabel("ratio (95% bootstrap CI)")
    fig.tight_layout()
    return fig


@figure("06_perplexity", "06_perplexity.csv")
def fig_06_perplexity(d: Path, meta: dict | None = None):
    ppl = _read(d, "06_perplexity.csv").set_index("model").drop(columns="response_ce")
    rel = ppl.div(ppl.loc["SFT"], axis=1)
    fig, ax = _subplots(figsize=(7, 3.2))
    for name in [m for m in rel.index if m.startswith("SASFT")]:
        ax[0, 0].plot(rel.columns, rel.loc[name], "o-", label=name)
    ax[0, 0].axhline(1, c="0.5", lw=1, ls=":")
    ax[0, 0].set(ylabel="perplexity / plain SFT", xlabel="language",
                 title="held-out perplexity per language, relative to plain SFT")
    ax[0, 0].legend()
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- 07 SAE-guided DAPO

@figure("07_repetition_features", "07_repetition_features.csv", "07_feature_screen.csv", "07_summary.json")
def fig_07_repetition_features(d: Path, meta: dict | None = None):
    pooled, screen, s = (_read(d, "07_repetition_features.csv"), _read(d, "07_feature_screen.csv"),
                         _summary(d, "07", meta))
    top = pooled.head(15)                                     # saved in rank order
    sel = (s["layer"], s["feature"])
    fig, axes = _subplots(1, 2, figsize=(13, 3.6))
    a0, a1 = axes[0]
    a0.bar(range(len(top)), top.mean_increase, yerr=1.96 * top.se, capsize=2,
           color=["C3" if (L, f) == sel else "C0" for L, f in zip(top.layer, top.feature)])
    a0.set_xticks(range(len(top)), [f"L{L}/{f}" for L, f in zip(top.layer, top.feature)], rotation=60, fontsize=7)
    a0.set(title=f"top features by mean increase (last − first), layers {s['candidate_layers']}; red: selected",
           ylabel="mean code increase")
    fs = screen[screen.kind == "feature"]
    cands = fs.drop_duplicates("rank").sort_values("rank")
    mults = sorted(fs.mult.unique())
    x, w = np.arange(len(cands)), 0.8 / max(len(mults), 1)
    for j, m in enumerate(mults):
        dm = fs[fs.mult == m].set_index("rank").reindex(cands["rank"])
        off = x + (j - (len(mults) - 1) / 2) * w
        a1.bar(off, dm.ratio, w, label=f"feature, mult {m:g}")
        a1.scatter(off, dm.control, marker="_", s=120, c="k", label="random dir., same norm" if j == 0 else None, zorder=3)
    a1.axhline(s["selection"]["baseline"], ls=":", c="k", lw=1, label="unsteered")
    a1.set_xticks(x, [f"#{r} L{L}/{f}" for r, L, f in zip(cands["rank"], cands.layer, cands.feature)], rotation=60, fontsize=7)
    a1.set(title="steering screen (train prompts)", ylabel="repeat ratio")
    a1.legend()
    fig.tight_layout()
    return fig


@figure("07_steering_sweep", "07_steering_sweep.csv", "07_summary.json")
def fig_07_steering_sweep(d: Path, meta: dict | None = None):
    sw, s = _read(d, "07_steering_sweep.csv"), _summary(d, "07", meta)
    sets = list(dict.fromkeys(sw.prompts))
    fig, axes = _subplots(1, len(sets), figsize=(6 * len(sets), 3.4), sharey=True)
    for ax, pset in zip(axes[0], sets):
        dfp = sw[sw.prompts == pset]
        for (dname, df), c in zip(dfp.groupby("direction", sort=False), ("C3", "C7")):
            ax.errorbar(df.alpha, df.ratio, yerr=[df.ratio - df.lo, df.hi - df.ratio], fmt="o-", c=c, capsize=3,
                        label=dname)
        ax.axvline(s["alpha"], ls=":", c="k", lw=1, label=f"alpha used in DAPO ({s['alpha']:g})")
        ax.set(xlabel="alpha (h += alpha W_dec[:, f])",
               title=f"{pset}: {dfp.n_prompts.iloc[0]} prompts x {dfp.n_samples.iloc[0]}")
        ax.legend()
    axes[0, 0].set_ylabel("repeat ratio (95% CI)")
    fig.suptitle(f"steering layer {s['layer']}, feature {s['feature']}" +
                 (" (selected by the screen)" if s.get("screen_causal") else ": NOT above the random control"))
    fig.tight_layout()
    return fig


@figure("07_training_curves", "07_training_curves.csv", "07_summary.json")
def fig_07_training_curves(d: Path, meta: dict | None = None):
    cur, s = _read(d, "07_training_curves.csv"), _summary(d, "07", meta)
    fig, axes = _subplots(1, 4, figsize=(16, 3.2))
    a = axes[0]
    smooth = lambda v: v.rolling(5, min_periods=1).mean()  # noqa: E731
    for i, (arm, df) in enumerate(cur.groupby("arm", sort=False)):
        for ax, col in zip(a, ("reward", "repeat_ratio", "length", "loss")):
            ax.plot(df.step, smooth(df[col]), c=f"C{i}", label=f"{arm} (normal rollouts)")
        if "steered_repeat_ratio" in df and df.steered_repeat_ratio.notna().any():
            a[1].plot(df.step, smooth(df.steered_repeat_ratio), "--", c=f"C{i}", label=f"{arm} (steered rollout)")
            a[0].plot(df.step, smooth(df.steered_reward), "--", c=f"C{i}", label=f"{arm} (steered rollout)")
    for ax, t in zip(a, ("reward (acc + overlong)", "repeat ratio of rollouts", "response length (tokens)", "DAPO loss")):
        ax.set(title=t, xlabel="step")
    a[0].legend(fontsize=6)
    a[1].legend(fontsize=6)
    g = s.get("dapo", {})
    fig.suptitle(f"training curves (rolling mean of 5 steps), G={g.get('G', '?')}, {g.get('n_prompts', '?')} prompts/step")
    fig.tight_layout()
    return fig


@figure("07_comparison", "07_comparison.csv", "07_summary.json")
def fig_07_comparison(d: Path, meta: dict | None = None):
    comp, s = _read(d, "07_comparison.csv"), _summary(d, "07", meta)
    titles = {"repeat_task": f"repeat ratio, arithmetic ({(s.get('eval_regime') or {}).get('label', 'sampled')})",
              "repeat_text": "repeat ratio, text prefixes (sampled)",
              "repeat_text_greedy": "repeat ratio, text prefixes (greedy)",
              "repeat_stress": f"repeat ratio under steering (alpha={s['alpha']:g}, f={s['feature']})",
              "acc_greedy": "accuracy, arithmetic (greedy)", "ppl": "held-out perplexity"}
    fig, axes = _subplots(2, 3, figsize=(14, 6.4))
    x = np.arange(len(comp))
    for ax, (col, t) in zip(axes.ravel(), titles.items()):
        ax.bar(x, comp[col], yerr=[comp[col] - comp[f"{col}_lo"], comp[f"{col}_hi"] - comp[col]], capsize=4,
               color=(["C7", "C0", "C3"] + [f"C{i}" for i in range(4, 10)])[: len(comp)])
        ax.set_xticks(x, [a.replace(" (", "\n(") for a in comp.arm], rotation=10, fontsize=7)
        ax.set_title(t, fontsize=9)
        if col == "ppl":
            ax.set_yscale("log")
    g = s.get("dapo", {})
    fig.suptitle(f"{' vs '.join(comp.arm)}; {g.get('n_steps', '?')} DAPO steps per arm; "
                 f"95% bootstrap CIs over prompts")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- rendering

def _resolve(profile_or_dir) -> Path:
    p = Path(profile_or_dir)
    if p.is_dir() and (p.is_absolute() or "/" in str(profile_or_dir) or str(profile_or_dir).startswith(".")):
        return p
    from .paths import results_dir

    return results_dir(str(profile_or_dir), create=False)


def _save(fig, d: Path, name: str, formats) -> list[Path]:
    out = []
    for ext in formats:
        p = d / f"{name}.{ext}"
        tmp = p.with_name(f".{p.stem}.tmp.{ext}")
        fig.savefig(tmp, bbox_inches="tight", **({"dpi": 120} if ext == "png" else {}))
        tmp.replace(p)
        out.append(p)
    return out


def render(profile_or_dir, name: str, meta: dict | None = None, formats=("png", "pdf")):
    """Draw figure ``name`` from its tables and write it next to them (PNG and vector); return the Figure.

    The call notebooks make after saving their tables; ``meta`` holds the scalars the figure would
    otherwise read from the notebook's summary JSON (same keys), which notebooks write last."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    d = _resolve(profile_or_dir)
    fig = FIGURES[name](d, meta)
    _save(fig, d, name, formats)
    return fig


def regenerate(profile_or_dir, formats=("png", "pdf"), names=None, verbose: bool = True) -> dict:
    """Redraw every registered figure whose tables exist in the results directory.

    Returns {"written": [paths], "skipped": {name: reason}}; a figure whose inputs are missing is
    skipped (its old PNG, if any, is left alone), never drawn half-empty."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    d = _resolve(profile_or_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"no results directory {d}: run the notebooks first (./run_all.sh --profile ...)")
    apply_style()
    written, skipped = [], {}
    for name in names or FIGURES:
        missing = [n for n in FIGURES[name].needs if not (d / n).exists()]
        if missing:
            skipped[name] = f"missing {', '.join(missing)} (rerun notebook {name[:2]})"
            continue
        t = time.perf_counter()
        try:
            fig = FIGURES[name](d)
        except MissingTable as e:          # a table from an older run lacks a column this figure reads
            skipped[name] = str(e)
            continue
        written += _save(fig, d, name, formats)
        plt.close(fig)
        if verbose:
            print(f"  {name:28s} {time.perf_counter() - t:5.2f} s", flush=True)
    if verbose:
        for n, why in skipped.items():
            print(f"  {n:28s} skipped: {why}", flush=True)
    return {"written": written, "skipped": skipped}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m qscope_utils.figures",
                                 description="Regenerate every figure of a profile from its saved tables (no models).")
    ap.add_argument("--profile", default="mini", help="results/<profile>/ (default mini; QSCOPE_RESULTS moves the root)")
    ap.add_argument("--dir", help="a results directory (overrides --profile)")
    ap.add_argument("--formats", nargs="+", default=["png", "pdf"], help="png pdf svg ... (default: png pdf)")
    ap.add_argument("--only", nargs="+", help="figure names (default: all registered)")
    ap.add_argument("--fetch-font", action="store_true", help=f"download the CJK font package first")
    ap.add_argument("--list", action="store_true", help="list the registered figures and their tables")
    a = ap.parse_args(argv)
    if a.list:
        for n, fn in FIGURES.items():
            print(f"{n:28s} <- {', '.join(fn.needs)}")
        return 0
    if a.fetch_font:
        print("CJK font:", apply_style(fetch_font=True))
    t = time.perf_counter()
    d = Path(a.dir) if a.dir else _resolve(a.profile)
    r = regenerate(d, formats=tuple(a.formats), names=a.only)
    n = len(a.only or FIGURES) - len(r["skipped"])
    print(f"{len(r['written'])} files for {n} figures written to {d} "
          f"in {time.perf_counter() - t:.1f} s; {len(r['skipped'])} skipped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
