"""Minimum detectable effect of each section's design, from a profile's committed pilot results.

For every claim the notebooks test, reads the pilot estimate and its 95% interval from
``results/<profile>/NN_summary.json``, turns the interval into a standard error
(``qscope_utils.stats.se_from_interval``), and writes ``results/<profile>/power.csv`` with:

* ``mde``: the smallest true effect the current design detects with 80% power at two-sided α = 0.05
  (normal approximation, ``qscope_utils.stats``);
* ``target_effect``: the effect to detect, from the report (docs/CONVENTIONS.md) where it gives a
  number, else the reading named in ``target_basis``;
* ``n_needed``: units (``unit``) the design needs to detect ``target_effect`` (MDE scales as 1/√n).

Two arms measured on the same prompts are treated as independent samples (the per-prompt pairing is
not in the saved summaries), which overstates the MDE a little: the numbers are conservative.

    .venv/bin/python scripts/power.py [--profile mini]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qscope_utils import stats as S  # noqa: E402
from qscope_utils.findings import chosen_k  # noqa: E402

COLUMNS = ["section", "notebook", "claim", "design", "unit", "n", "estimate", "se", "mde", "target_effect",
           "target_basis", "n_needed", "source"]
RELATIVE_CUT = 0.5   # "drops sharply" / a code-switch cut, read as a 50% relative reduction (the report's 1.7B SASFT cuts are 73-100%)


def results_root() -> Path:
    return Path(os.environ["QSCOPE_RESULTS"]) if os.environ.get("QSCOPE_RESULTS") else ROOT / "results"


def _row(section, nn, claim, design, unit, n, estimate, se, target, basis, source, mde=None, need=None) -> dict:
    """One row; ``mde`` defaults to z·se and ``need`` to the n that detects ``target`` (MDE ∝ 1/√n)."""
    mde = S.mde_from_se(se) if mde is None else mde
    if need is None and target and mde > 0:
        need = S.n_for_effect(n, mde, target)
    return {"section": section, "notebook": nn, "claim": claim, "design": design, "unit": unit, "n": n,
            "estimate": estimate, "se": se, "mde": mde, "target_effect": target, "target_basis": basis,
            "n_needed": need, "source": source}


def _se(r: dict, lo="lo", hi="hi") -> float:
    return S.se_from_interval(r[lo], r[hi])


def _two_arm_se(a: dict, b: dict, lo: str, hi: str) -> float:
    return math.hypot(_se(a, lo, hi), _se(b, lo, hi))


def p01(d: dict) -> list[dict]:
    return [{"section": "§2", "notebook": "01", "claim": "FVU ≈ 0.20 at a middle layer (a level, not a comparison)",
             "design": "FVU over held-out tokens", "unit": "tokens", "n": d["tokens_per_layer"],
             "estimate": d["mid_layer_fvu"], "se": None, "mde": None, "target_effect": None,
             "target_basis": "no effect is claimed: nothing to detect", "n_needed": None,
             "source": "01_summary.json mid_layer_fvu"}]


def p02(d: dict) -> list[dict]:
    out = []
    for case, metric, claim, basis, full in (
            ("case1", "has_script", "suppressing the Chinese feature removes the mixing",
             "mixing removed: steered share 0, so the effect is minus the baseline share", 0.0),
            ("case2", "p_classical", "activating the classical feature turns the style classical",
             "style turned classical: P(classical) 1, so the effect is 1 minus the baseline", 1.0)):
        b, s = d[case][metric]["baseline"], d[case][metric]["best_steered"]
        target = full - b["mean"]
        out.append(_row("§3", "02", claim, "paired difference over prompts (steered − baseline, per-prompt share)",
                        "prompts", d["n_prompts"][case], s["diff"], _se(s, "diff_lo", "diff_hi"), target, basis,
                        f"02_summary.json {case}.{metric}.best_steered"))
    return out


def p03(d: dict) -> list[dict]:
    r, sim = d["rho_R_Rhat"], d["similarity_28_pairs"]["pearson_direct"]
    return [_row("§4", "03", "Spearman ρ(R, R̂) ≈ 0.85 across benchmarks", "Spearman correlation vs 0 (Fisher z, x1.06)",
                 "benchmarks", r["n"], r["r"], None, 0.85, "report: ρ = 0.85", "03_summary.json rho_R_Rhat",
                 mde=S.mde_correlation(r["n"], spearman=True), need=S.n_correlation(0.85, spearman=True)),
            _row("§4", "03", "overlap_min vs score correlation, Pearson 68.4 (direct)",
                 "Pearson correlation vs 0 over benchmark pairs (pairs share benchmarks: fewer independent units)",
                 "benchmark pairs", sim["n"], sim["r"], None, 0.684, "report: Pearson 0.684",
                 "03_summary.json similarity_28_pairs.pearson_direct", mde=S.mde_correlation(sim["n"]),
                 need=S.n_correlation(0.684))]


def p04(d: dict) -> list[dict]:
    out = []
    for lang in d["or_rule_at_top1diff_layer"]:
        k, r = chosen_k(d, lang)          # notebook 04's one-SE pick (argmax for older summaries)
        n = d["split_sizes"][lang]["eval_toxic"] + d["split_sizes"][lang]["eval_clean"]
        se = S.se_from_interval(*r["f1_ci95"])
        out.append(_row("§5", "04", f"OR-rule held-out F1 > 0.90 ({lang}, {k})",
                        "F1 on held-out texts vs the 0.90 threshold (bootstrap SE)", "held-out texts", n, r["f1"], se,
                        0.90 - r["f1"], "the gap between our F1 and the report's 0.90",
                        f"04_summary.json or_rule_at_top1diff_layer.{lang}.{k}"))
    return out


def p05(d: dict) -> list[dict]:
    z2 = S.z_power() ** 2
    n_miss = d["n_missing"]
    # paired binary outcome per missing target where feature synthesis hits every target the other method
    # hits (discordance one way only): SD of the difference sqrt(δ(1−δ)), so δ = z·sqrt(δ(1−δ)/n) gives
    # δ = z² / (n + z²), and n = z² (1 − δ) / δ for a target δ
    mde = z2 / (n_miss + z2)
    target = 0.5
    got = d.get("missing_covered_at_matched_budget")
    if got:    # the paired counts over T_miss (fixed matched budget, pool-rare targets)
        est = (got["feature synthesis"] - got["natural sampling"]) / max(n_miss, 1)
        src, tset = "05_summary.json missing_covered_at_matched_budget", d.get("target_set", "?")
    else:      # older summaries: back out the T_miss difference from Cov(T)
        cov = d["coverage_at_matched_budget_pct"]
        est = (cov["feature synthesis"] - cov["natural sampling"]) / 100 * d["n_targets"] / max(n_miss, 1)
        src, tset = "05_summary.json coverage_at_matched_budget_pct", d.get("target_set", "relevant")
    out = [{"section": "§6", "notebook": "05", "claim": "feature synthesis covers clearly more targets than natural "
            "sampling at a matched budget", "design": f"paired coverage over the targets the seed set misses "
            f"(target set {tset}, matched budget {d['matched_budget']} fixed; McNemar, one-way discordance)",
            "unit": "missing targets", "n": n_miss, "estimate": est, "se": None, "mde": mde, "target_effect": target,
            "target_basis": "natural sampling covers half of the missing targets, feature synthesis all",
            "n_needed": math.ceil(z2 * (1 - target) / target), "source": src}]
    ds = d["downstream"]["sae"]
    f, r = ds["real + feature synthesis"], ds["real + random synthesis"]
    out.append(_row("§6", "05", "real + feature synthesis beats real + random synthesis in safety accuracy",
                    "two classifiers on the same held-out prompts, accuracy difference (treated as two samples)",
                    "held-out prompts", _eval_n(d), (f["accuracy"] - r["accuracy"]) / 100,
                    _two_arm_se(f, r, "acc_lo", "acc_hi") / 100, (77.75 - 72.00) / 100,
                    "report: 77.75 − 72.00 points", "05_summary.json downstream.sae"))
    return out


def _eval_n(d: dict) -> int:
    """Held-out prompts of the downstream evaluation (05_downstream.csv has no count: from the summary's
    eval size when present, else the accuracy grid: the smallest n making every accuracy a multiple of 1/n)."""
    if "n_eval" in d:
        return int(d["n_eval"])
    accs = [v["accuracy"] / 100 for v in d["downstream"]["sae"].values()]
    for n in range(1, 5001):
        if all(abs(a * n - round(a * n)) < 1e-6 for a in accs):
            return n
    raise ValueError("cannot infer the downstream evaluation size: add n_eval to 05_summary.json")


def p06(d: dict) -> list[dict]:
    """§7 rows. With ``power_50pct_cut`` in the summary (``codeswitch.cut_design`` on the SFT test flags:
    the paired SD under a cut, from per-prompt rates and sampling noise), its n needed and MDE; else the
    SE of the observed paired difference's interval."""
    out = []
    for lang, r in d["test"].items():
        df = r["diff"]
        design = (f"paired difference over prompts (SFT − SASFT, per-prompt ratio over {df['n_seeds']} samples"
                  + (f" of {d['max_new_tokens']} new tokens)" if d.get("max_new_tokens") else ")"))
        pw = d.get("power_50pct_cut", {}).get(lang)
        if pw:
            out.append(_row("§7", "06", f"SASFT cuts the {lang} code-switch ratio", design + "; SD under the cut "
                            "from the SFT per-prompt rates (codeswitch.cut_design)", "prompts", pw["n_used"],
                            df["value"], pw["sd_diff"] / math.sqrt(pw["n_used"]), pw["effect"],
                            f"a {pw['cut']:.0%} cut of our SFT ratio {pw['ratio']:.2f} (report, 1.7B: 73-100% cuts)",
                            f"06_summary.json power_50pct_cut.{lang}", mde=pw["mde"], need=pw["n_needed"]))
            continue
        target = RELATIVE_CUT * r["sft"]["value"]
        out.append(_row("§7", "06", f"SASFT cuts the {lang} code-switch ratio", design, "prompts", df["n_prompts"],
                        df["value"], _se(df), target,
                        f"a {RELATIVE_CUT:.0%} cut of our SFT ratio {r['sft']['value']:.2f} (report, 1.7B: 73-100% cuts)",
                        f"06_summary.json test.{lang}.diff"))
    return out


def p07(d: dict) -> list[dict]:
    arms = d["arms"]
    v, s = arms["vanilla DAPO"], arms["DAPO + SAE rollouts"]
    natural = max(a["repeat_task"]["ratio"] for a in arms.values())
    n = v["repeat_stress"]["n_prompts"]
    reg = d.get("eval_regime")
    regime = f"in the pre-registered evaluation regime ({reg['label']})" if reg else "under ordinary sampling"
    claim = f"the repeat ratio drops sharply ({'evaluation regime' if reg else 'ordinary sampling'})"
    vt, st = v["repeat_task"], s["repeat_task"]
    design = (f"two arms on the same prompts, repeat-ratio difference {regime} ({vt['n_samples']} response(s) per "
              "prompt; treated as two samples)")
    if natural == 0:
        out = [{"section": "§8", "notebook": "07", "claim": claim, "design": design, "unit": "prompts",
                "n": vt["n_prompts"], "estimate": st["ratio"] - vt["ratio"], "se": None, "mde": None,
                "target_effect": None, "target_basis": f"untestable: the unsteered policy's repeat ratio {regime} is "
                f"{natural:.2f} in every arm, so there is no drop to detect at any n", "n_needed": None,
                "source": "07_summary.json arms.*.repeat_task"}]
    else:
        out = [_row("§8", "07", claim, design, "prompts", vt["n_prompts"], st["ratio"] - vt["ratio"],
                    _two_arm_se(vt, st, "lo", "hi"), -RELATIVE_CUT * vt["ratio"],
                    f"a {RELATIVE_CUT:.0%} cut of vanilla's ratio {vt['ratio']:.2f} {regime}",
                    "07_summary.json arms.*.repeat_task")]
    target = -RELATIVE_CUT * v["repeat_stress"]["ratio"]
    out.append(_row("§8", "07", "the repeat ratio drops sharply (repetition feature steered in at evaluation)",
                    "two arms on the same prompts, repeat-ratio difference (treated as two samples)", "prompts", n,
                    s["repeat_stress"]["ratio"] - v["repeat_stress"]["ratio"],
                    _two_arm_se(v["repeat_stress"], s["repeat_stress"], "lo", "hi"), target,
                    f"a {RELATIVE_CUT:.0%} cut of vanilla's stress ratio {v['repeat_stress']['ratio']:.2f}",
                    "07_summary.json arms.*.repeat_stress"))
    out.append(_row("§8", "07", "SAE-guided DAPO raises task accuracy (MGSM +5.56 points, 1.7B)",
                    "two arms on the same problems, greedy-accuracy difference (treated as two samples)",
                    "problems", v["acc_greedy"].get("n", n), s["acc_greedy"]["mean"] - v["acc_greedy"]["mean"],
                    _two_arm_se(v["acc_greedy"], s["acc_greedy"], "lo", "hi"), 0.0556, "report: +5.56 points (1.7B)",
                    "07_summary.json arms.*.acc_greedy"))
    return out


SECTIONS = {"01": p01, "02": p02, "03": p03, "04": p04, "05": p05, "06": p06, "07": p07}


def power_table(res: Path) -> list[dict]:
    """Rows of power.csv for the summaries present under ``res``."""
    rows = []
    for nn, fn in SECTIONS.items():
        p = res / f"{nn}_summary.json"
        if p.exists():
            rows += fn(json.loads(p.read_text()))
    return rows


def _fmt(v):
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else v)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="mini")
    args = ap.parse_args(argv)
    res = results_root() / args.profile
    rows = power_table(res)
    if not rows:
        print(f"[power] no summaries under {res}: run `./run_all.sh --profile {args.profile}` first", file=sys.stderr)
        sys.exit(1)
    with open(res / "power.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows({k: _fmt(r[k]) for k in COLUMNS} for r in rows)
    for r in rows:
        print(f"{r['section']} {r['claim']}: n={r['n']} {r['unit']}, MDE {_fmt(r['mde']) or '—'}, "
              f"target {_fmt(r['target_effect']) or '—'}, n needed {r['n_needed'] or '—'}")


if __name__ == "__main__":
    main()
