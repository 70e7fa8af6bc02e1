""""What we found vs the report": a short markdown verdict per section, generated from its saved summary.

Each section notebook ends with ``Markdown(findings.for_notebook("NN", profile))``; the function reads
``results/<profile>/NN_summary.json`` and returns bullets of the form
*claim: report's number; ours (interval); verdict*. Verdict words (docs/CONVENTIONS.md):

* **reproduced**: same direction as the report, and the 95% interval excludes 0 (or the threshold);
* **not reproduced**: the interval excludes the report's claim, or the direction is reversed;
* **untestable at this scale**: the interval includes 0, or the mini setting cannot show the effect.

No number is typed in here except the report's own (docs/CONVENTIONS.md); ours all come from the dict.
"""
from __future__ import annotations

import json
from typing import Callable

from .paths import results_dir

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "UNTESTABLE", "verdict_of_difference", "interval",
           "FINDINGS", "render", "for_notebook"]

REPRODUCED, NOT_REPRODUCED, UNTESTABLE = "reproduced", "not reproduced", "untestable at this scale"


def interval(lo: float, hi: float, fmt: str = "{:.2f}") -> str:
    """``[lo, hi]`` plus whether it includes 0."""
    inc = " (includes 0)" if lo <= 0 <= hi else " (excludes 0)"
    return f"[{fmt.format(lo)}, {fmt.format(hi)}]{inc}"


def verdict_of_difference(lo: float, hi: float, want_sign: int) -> str:
    """Verdict for a difference whose report direction is ``want_sign`` (+1 or -1), from its interval."""
    if lo <= 0 <= hi:
        return UNTESTABLE
    return REPRODUCED if (lo > 0) == (want_sign > 0) else NOT_REPRODUCED


def _b(text: str, verdict: str) -> str:
    return f"- {text} **{verdict}**."


def f01(d: dict) -> list[str]:
    fvu = d["mid_layer_fvu"]
    v = REPRODUCED if fvu <= 0.25 else NOT_REPRODUCED  # the audit's ~0.20, with room for "about"
    return [_b(f"Reconstruction under the release convention (no `b_dec` subtraction): the report's audit has FVU ≈ 0.20 "
               f"at a middle layer; ours {fvu:.3f} at layer {d['mid_layer']} (k={d['k']}, worst layer "
               f"{d['max_fvu']:.3f}, {d['tokens_per_layer']} held-out tokens), dead latents "
               f"{100 * d['mean_dead_fraction']:.1f}%, Δ LM loss {d['mean_delta_loss']:.3f} nats/token:", v)]


def f02(d: dict) -> list[str]:
    out = []
    c1 = d["case1"]["has_script"]
    b, s = c1["baseline"], c1["best_steered"]
    v1 = verdict_of_difference(s["diff_lo"], s["diff_hi"], -1)
    removed = "removed" if s["mean"] <= 0.05 else "reduced, not removed"
    if v1 == REPRODUCED and s["mean"] > 0.05:
        v1 = "reproduced in direction"
    out.append(_b(f"Case 1, suppressing a Chinese feature (report: feature 6159, mixing removed): our feature "
                  f"{d['zh_feature']} at layer {d['layer']}, share of responses with Han script {b['mean']:.2f} → "
                  f"{s['mean']:.2f} at α={s['alpha']:.2f}, difference {s['diff']:+.3f} "
                  f"{interval(s['diff_lo'], s['diff_hi'], '{:+.3f}')}; mixing {removed}:", v1))
    c2 = d["case2"]["p_classical"]
    b, s = c2["baseline"], c2["best_steered"]
    v2 = verdict_of_difference(s["diff_lo"], s["diff_hi"], +1)
    out.append(_b(f"Case 2, activating a classical-Chinese feature (report: feature 36398, style turns classical): our "
                  f"feature {d['lzh_feature']}, P(classical) {b['mean']:.2f} → {s['mean']:.2f} at α={s['alpha']:.1f}, "
                  f"difference {s['diff']:+.3f} {interval(s['diff_lo'], s['diff_hi'], '{:+.3f}')}:", v2))
    return out


def _corr(r: dict, report: float, what: str) -> str:
    v = UNTESTABLE if r["lo"] <= 0 <= r["hi"] else (REPRODUCED if r["r"] > 0 else NOT_REPRODUCED)
    if v == REPRODUCED and r["hi"] < report:
        v = NOT_REPRODUCED + " (positive, but the interval excludes the report's value)"
    return _b(f"{what}: report {report:.2f}; ours {r['r']:.2f} {interval(r['lo'], r['hi'])}, n = {r['n']}:", v)


def f03(d: dict) -> list[str]:
    sim = d["similarity_28_pairs"]
    gm, mg = d["overlap_gsm_math"], d["overlap_math_gsm"]
    asym = REPRODUCED if gm > mg else NOT_REPRODUCED
    return [_corr(d["rho_R_Rhat"], 0.85, f"Spearman ρ(R, R̂) over benchmarks (layer {d['layer']}, "
                                         f"{d['n_checkpoints']} checkpoints)"),
            _b(f"Asymmetric overlap: report overlap(GSM8K, MATH) = 0.63 > overlap(MATH, GSM8K) = 0.10; ours "
               f"{gm:.2f} vs {mg:.2f} (a point estimate, no interval):", asym),
            _corr(sim["pearson_direct"], 0.684, "Pearson of overlap_min with score correlation, direct"),
            _corr(sim["pearson_partial"], 0.755, "Pearson of overlap_min with score correlation, partial")]


def chosen_k(d: dict, lang: str, key: str = "pick") -> tuple[str, dict]:
    """§5: the K notebook 04 chose for ``lang`` by its one-SE rule (``key="argmax"``: the plain argmax
    recorded beside it), as ``("K=2", row)``; summaries without ``k_selection`` (older): their argmax."""
    ks = d["or_rule_at_top1diff_layer"][lang]
    sel = d.get("k_selection", {}).get(lang)
    if sel is None:
        return max(ks.items(), key=lambda kv: kv[1]["f1"])
    return sel[key], ks[sel[key]]


def f04(d: dict) -> list[str]:
    out = []
    for lang in d["or_rule_at_top1diff_layer"]:
        k, r = chosen_k(d, lang)
        lo, hi = r["f1_ci95"]
        v = REPRODUCED if lo > 0.90 else (NOT_REPRODUCED if hi < 0.90 else UNTESTABLE)
        out.append(_b(f"OR-rule held-out F1 (report: > 0.90 in English): {lang} {r['f1']:.2f} [{lo:.2f}, {hi:.2f}] "
                      f"({k}, layer {r['layer']}; the interval {'excludes' if hi < 0.9 or lo > 0.9 else 'includes'} "
                      f"0.90):", v))
    eff = [r for r in d["data_efficiency_macro_f1"] if abs(r["fraction"] - 0.1) < 1e-9]
    if eff:
        ratios = [r["ratio_to_full"] for r in eff]
        v = REPRODUCED if min(ratios) >= 0.95 else NOT_REPRODUCED
        out.append(_b("Data efficiency (report: 10% of discovery data keeps ≈ 99% of macro F1; we call ≥ 95% at every "
                      "K a match): ours " + ", ".join(f"K={r['K']}: {100 * r['ratio_to_full']:.0f}%" for r in eff)
                      + " (means over resamples):", v))
    return out


def _f05_paired(d: dict) -> tuple[str, str]:
    """Text and verdict of "feature synthesis covers clearly more targets" from the paired counts over
    the targets the seed misses (exact McNemar vs each baseline): reproduced when it covers more than both
    with p < 0.05, not reproduced when a baseline covers more, otherwise untestable (within noise)."""
    pm, got = d["paired_missing_at_matched_budget"], d["missing_covered_at_matched_budget"]
    rev = any(r["b_only"] > r["a_only"] for r in pm.values())
    ok = all(r["a_only"] > r["b_only"] and r["mcnemar_p"] < 0.05 for r in pm.values())
    v = NOT_REPRODUCED if rev else (REPRODUCED if ok else UNTESTABLE)
    ps = "; ".join(f"{k}: {r['a_only']} vs {r['b_only']} discordant, McNemar p={r['mcnemar_p']:.3g}" for k, r in pm.items())
    return (f"Of the {d['n_missing']} targets the seed set misses (target set {d.get('target_set', '?')}, "
            f"{d['n_targets']} targets), covered at the matched budget B={d['matched_budget']}: "
            + ", ".join(f"{k} {n}" for k, n in got.items()) + f" ({ps}):", v)


def f05(d: dict) -> list[str]:
    cov = d["coverage_at_matched_budget_pct"]
    feat = cov.get("feature synthesis")
    others = {k: v for k, v in cov.items() if k != "feature synthesis"}
    v = REPRODUCED if feat is not None and all(feat > x for x in others.values()) else NOT_REPRODUCED
    head = (f"Target coverage at a matched budget (report: 99.74% for feature synthesis, clearly above random "
            f"synthesis and natural sampling): ours " + ", ".join(f"{k} {x:.1f}%" for k, x in cov.items())
            + f" ({d['n_targets']} targets, seed covers {d['seed_coverage_pct']:.1f}%)")
    if "paired_missing_at_matched_budget" in d:
        text, v = _f05_paired(d)
        out = [_b(f"{head}. {text}", v)]
    else:
        out = [_b(head + ":", v)]
    ds = d["downstream"]["sae"]
    f, r = ds.get("real + feature synthesis"), ds.get("real + random synthesis")
    if f and r:
        sep = f["acc_lo"] > r["acc_hi"] or r["acc_lo"] > f["acc_hi"]
        v2 = (REPRODUCED if f["accuracy"] > r["accuracy"] else NOT_REPRODUCED) if sep else UNTESTABLE
        out.append(_b(f"Downstream safety accuracy (report: real + feature synthesis 77.75 > real + random 72.00): ours "
                      f"{f['accuracy']:.1f} [{f['acc_lo']:.1f}, {f['acc_hi']:.1f}] vs {r['accuracy']:.1f} "
                      f"[{r['acc_lo']:.1f}, {r['acc_hi']:.1f}] (intervals {'separate' if sep else 'overlap'}):", v2))
    return out


def f06(d: dict) -> list[str]:
    out = ["- Code-switch ratio, SFT → SASFT. Report (210k SFT examples): Qwen3-1.7B-Base zh 0.81 → 0.22, ru 0.19 → "
           "0.03, ko 0.36 → 0.00; Qwen3-8B-Base zh 0.96 → 0.66, ru 0.16 → 0.07, ko 0.43 → 0.07. Ours "
           f"(λ={d.get('lambda_chosen_on_val')} chosen on validation, {d.get('n_seeds')} seeds):"]
    for lang, r in d["test"].items():
        df = r["diff"]
        v = verdict_of_difference(df["lo"], df["hi"], +1)
        out.append("  " + _b(f"{lang}: {r['sft']['value']:.2f} → {r['sasft']['value']:.2f}, paired reduction "
                             f"{df['value']:+.3f} {interval(df['lo'], df['hi'], '{:+.3f}')}:", v))
    return out


def f07(d: dict) -> list[str]:
    arms = d["arms"]
    natural = max(a["repeat_task"]["ratio"] for a in arms.values())
    reg = d.get("eval_regime")
    where = (f"in the evaluation regime chosen before training ({reg['label']}; "
             f"{d.get('regime_rule', {}).get('rule', '?')}, band {d.get('regime_rule', {}).get('band', '?')})"
             if reg else "under ordinary sampling")
    out = []
    if natural == 0:
        out.append(_b(f"Repeat ratio {where} (report: drops sharply after SAE-guided DAPO): our model never loops on "
                      "its own before or after RL (0.00 in every arm):", UNTESTABLE))
    else:
        s, v = arms.get("DAPO + SAE rollouts", {}).get("repeat_task"), arms.get("vanilla DAPO", {}).get("repeat_task")
        verdict = UNTESTABLE if not (s and v) else (REPRODUCED if s["hi"] < v["lo"] else
                                                    NOT_REPRODUCED if s["lo"] > v["hi"] else UNTESTABLE)
        out.append(_b(f"Repeat ratio {where} (report: drops sharply after SAE-guided DAPO): "
                      + "; ".join(f"{k} {a['repeat_task']['ratio']:.2f} [{a['repeat_task']['lo']:.2f}, "
                                  f"{a['repeat_task']['hi']:.2f}]" for k, a in arms.items())
                      + (" (SAE arm vs vanilla: intervals overlap)" if verdict == UNTESTABLE else "") + ":", verdict))
    stress = "; ".join(f"{k} {a['repeat_stress']['ratio']:.2f} [{a['repeat_stress']['lo']:.2f}, "
                       f"{a['repeat_stress']['hi']:.2f}]" for k, a in arms.items())
    out.append(f"- With the repetition feature (#{d['feature']}, layer {d['layer']}) steered in at evaluation, repeat "
               f"ratio: {stress}.")
    acc = "; ".join(f"{k} {100 * a['acc_greedy']['mean']:.1f} [{100 * a['acc_greedy']['lo']:.1f}, "
                    f"{100 * a['acc_greedy']['hi']:.1f}]" for k, a in arms.items())
    s, v = arms.get("DAPO + SAE rollouts"), arms.get("vanilla DAPO")
    if s and v:
        sep = s["acc_greedy"]["lo"] > v["acc_greedy"]["hi"] or v["acc_greedy"]["lo"] > s["acc_greedy"]["hi"]
        verdict = (REPRODUCED if s["acc_greedy"]["mean"] > v["acc_greedy"]["mean"] else NOT_REPRODUCED) if sep \
            else UNTESTABLE
        out.append(_b(f"Task accuracy, greedy, % (report: MGSM +5.56 / +2.28 / +5.84 points for 1.7B / 8B / 30B-A3B): "
                      f"ours {acc} (intervals {'separate' if sep else 'overlap'}):", verdict))
    return out


FINDINGS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "01": ("§2", f01), "02": ("§3", f02), "03": ("§4", f03), "04": ("§5", f04),
    "05": ("§6", f05), "06": ("§7", f06), "07": ("§8", f07),
}


def render(nn: str, summary: dict) -> str:
    """Markdown "what we found vs the report" for notebook ``nn`` from its summary dict."""
    sec, fn = FINDINGS[nn]
    head = f"### What we found vs the report ({sec}, {summary.get('_meta', {}).get('profile', '?')} profile)\n\n"
    try:
        lines = fn(summary)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        lines = [f"- The summary lacks {e!s}: no verdict could be generated."]
    return head + "\n".join(lines) + "\n"


def for_notebook(nn: str, profile: str) -> str:
    """:func:`render` for ``results/<profile>/NN_summary.json`` (what the notebook just saved)."""
    p = results_dir(profile, create=False) / f"{nn}_summary.json"
    if not p.exists():
        return f"### What we found vs the report\n\n- No summary at `results/{profile}/{p.name}`: run the notebook.\n"
    return render(nn, json.loads(p.read_text()))
