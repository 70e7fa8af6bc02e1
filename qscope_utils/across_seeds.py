"""Across-seed aggregation of the notebooks' summaries (``./run_all.sh --seeds N``).

Each build seed gives its own ``results/<profile>[-seedN]/NN_summary.json``. For every headline
number this module reports the mean and the range (min-max) over seeds, with each seed's value and
per-prompt interval beside it; for every selection a notebook makes (a layer, an alpha multiplier,
a lambda, a matched budget, an SAE variant) the modal pick and the fraction of seeds making it; and
for every claim of :mod:`qscope_utils.findings` how many seeds give each verdict (a claim counts as
reproduced on mini only when every seed reproduces it).

Feature ids are listed per seed but get no agreement fraction: each seed trains its own SAEs, so
feature 1990 of seed 0 and feature 1990 of seed 1 are unrelated latents.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .findings import FINDINGS, NOT_REPRODUCED, REPRODUCED, UNTESTABLE, chosen_k as _best_k
from .paths import seeded

__all__ = ["Headline", "Pick", "headlines", "picks", "load_seeds", "aggregate", "settle", "power_note", "render",
           "NOTEBOOKS", "POWER_OF_CLAIM", "render_section"]

NOTEBOOKS = ("01", "02", "03", "04", "05", "06", "07")
SECTION = {nn: sec for nn, (sec, _) in FINDINGS.items()}


@dataclass(frozen=True)
class Headline:
    """One headline number of one seed's summary."""

    quantity: str                 # what it is, e.g. "case 1 Han share, steered"
    value: float                  # the estimate
    lo: float | None = None       # the per-prompt (bootstrap) interval, when the summary has one
    hi: float | None = None
    diff: bool = False            # a difference or correlation: report how many seeds' intervals exclude 0
    fmt: str = "{:.3f}"           # how its numbers print


@dataclass(frozen=True)
class Pick:
    """One selection a notebook made for one seed."""

    what: str                     # e.g. "layer", "λ for zh"
    value: object                 # the pick (hashable)
    comparable: bool = True       # False for feature ids: each seed has its own SAE dictionary


def _ci(what: str, r: dict, v: str, lo: str = "lo", hi: str = "hi", **kw) -> Headline:
    return Headline(what, float(r[v]), float(r[lo]), float(r[hi]), **kw)


def _h01(d):
    return [Headline("mid-layer FVU", d["mid_layer_fvu"]), Headline("max FVU", d["max_fvu"]),
            Headline("dead fraction", d["mean_dead_fraction"]), Headline("Δ LM loss (nats/token)", d["mean_delta_loss"])]


def _h02(d):
    out = []
    for case, metric, name in (("case1", "has_script", "case 1 Han share"), ("case2", "p_classical", "case 2 P(classical)")):
        b, s = d[case][metric]["baseline"], d[case][metric]["best_steered"]
        out += [_ci(f"{name}, baseline", b, "mean"), _ci(f"{name}, steered", s, "mean"),
                _ci(f"{name}, steered − baseline", s, "diff", "diff_lo", "diff_hi", diff=True)]
    return out + [Headline("case 2 classifier held-out accuracy", d["case2"]["classifier_heldout"]["accuracy"])]


def _h03(d):
    sim = d["similarity_28_pairs"]
    return [_ci("ρ(R, R̂)", d["rho_R_Rhat"], "r", diff=True, fmt="{:.2f}"),
            Headline("overlap(gsm, math)", d["overlap_gsm_math"], fmt="{:.2f}"),
            Headline("overlap(math, gsm)", d["overlap_math_gsm"], fmt="{:.2f}")] + \
        [_ci(f"similarity {k.replace('_', ' ')}", sim[k], "r", diff=True, fmt="{:.2f}")
         for k in ("pearson_direct", "pearson_partial", "spearman_direct", "spearman_partial")]


def _h04(d):
    out = []
    for lang in d["or_rule_at_top1diff_layer"]:
        _, r = _best_k(d, lang)
        out.append(Headline(f"OR-rule F1 {lang} (chosen K)", r["f1"], *r["f1_ci95"], fmt="{:.2f}"))
    return out + [Headline(f"10% data keeps (K={r['K']})", r["ratio_to_full"], fmt="{:.2f}")
                  for r in d["data_efficiency_macro_f1"] if abs(r["fraction"] - 0.1) < 1e-9]


def _h05(d):
    out = [Headline(f"coverage {k} (%)", v, fmt="{:.1f}") for k, v in d["coverage_at_matched_budget_pct"].items()]
    if "missing_covered_at_matched_budget" in d:   # paired design over the targets the seed misses
        out += [Headline("targets the seed misses", d["n_missing"], fmt="{:.0f}")]
        out += [Headline(f"missing targets covered, {k}", v, fmt="{:.0f}")
                for k, v in d["missing_covered_at_matched_budget"].items()]
    return out + [_ci(f"downstream acc {k} (%)", r, "accuracy", "acc_lo", "acc_hi", fmt="{:.1f}")
                  for k, r in d["downstream"]["sae"].items()]


def _h06(d):
    out = []
    for lang, r in d["test"].items():
        out += [_ci(f"{lang} code-switch, SFT", r["sft"], "value", fmt="{:.2f}"),
                _ci(f"{lang} code-switch, SASFT", r["sasft"], "value", fmt="{:.2f}"),
                _ci(f"{lang} paired Δ (SFT − SASFT)", r["diff"], "value", diff=True, fmt="{:+.2f}")]
    return out


def _h07(d):
    out = []
    for arm, a in d["arms"].items():
        out.append(_ci(f"repeat ratio, evaluation regime, {arm}", a["repeat_task"], "ratio", fmt="{:.2f}"))
        out.append(_ci(f"stress repeat ratio, {arm}", a["repeat_stress"], "ratio", fmt="{:.2f}"))
        out.append(_ci(f"greedy accuracy, {arm}", a["acc_greedy"], "mean"))
        if isinstance(a.get("ppl"), dict):
            out.append(_ci(f"held-out perplexity, {arm}", a["ppl"], "ppl", fmt="{:.1f}"))
    return out


def _alpha_mult(d: dict, case: str, metric: str, feat: str, key: str = "best_steered") -> float:
    return round(d[case][metric][key]["alpha"] / d["alpha_scale"][feat], 2)


def _p02(d):
    out = [Pick("layer", d["layer"]), Pick("zh feature", d["zh_feature"], False),
           Pick("lzh feature", d["lzh_feature"], False)]
    for case, metric, feat in (("case1", "has_script", "zh"), ("case2", "p_classical", "lzh")):
        n = case[-1]
        out.append(Pick(f"case {n} α / scale", _alpha_mult(d, case, metric, feat)))
        if "argmax_steered" in d[case][metric]:   # summaries from before the one-SE rule lack it
            out.append(Pick(f"case {n} α / scale (argmax, not used)", _alpha_mult(d, case, metric, feat, "argmax_steered")))
    return out


def _p04(d):
    out = []
    for lang in d["or_rule_at_top1diff_layer"]:
        k, r = _best_k(d, lang)
        out += [Pick(f"top1-diff layer {lang}", r["layer"]), Pick(f"chosen K {lang}", k),
                Pick(f"top feature {lang}", r["features"][0], False)]
        if lang in d.get("k_selection", {}):
            out.append(Pick(f"best K {lang} (argmax, not used)", _best_k(d, lang, "argmax")[0]))
        if lang in d.get("layer_selection", {}):
            out.append(Pick(f"one-SE layer {lang} (not used)", d["layer_selection"][lang]["one_se"]))
    return out


def _p06(d):
    lam = d["lambda_chosen_on_val"]
    lam = lam if isinstance(lam, dict) else {"all targets": lam}
    first = {}
    for f in d.get("features", []):
        first.setdefault(f["target"], (f["layer"], f["feature"]))
    return [Pick(f"λ for {t}", v) for t, v in lam.items()] + \
        [Pick(f"top feature {t}", f"L{l}/{f}", False) for t, (l, f) in first.items()]


def _p07(d):
    return [Pick("layer", d["layer"]), Pick("feature", d["feature"], False), Pick("steering α", d["alpha"]),
            Pick("SAE variant", d.get("sae_variant_chosen")),
            Pick("evaluation regime", (d.get("eval_regime") or {}).get("label"))]


HEADLINES: dict[str, Callable[[dict], list[Headline]]] = {
    "01": _h01, "02": _h02, "03": _h03, "04": _h04, "05": _h05, "06": _h06, "07": _h07}
PICKS: dict[str, Callable[[dict], list[Pick]]] = {
    "01": lambda d: [], "02": _p02, "03": lambda d: [Pick("layer", d["layer"])], "04": _p04,
    "05": lambda d: [Pick("layer", d["layer"]), Pick("matched budget", d["matched_budget"])], "06": _p06, "07": _p07}

_MISSING = (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError)


def headlines(nn: str, d: dict) -> list[Headline]:
    """Headline numbers of notebook ``nn``'s summary (empty when the summary lacks them)."""
    try:
        return HEADLINES[nn](d)
    except _MISSING:
        return []


def picks(nn: str, d: dict) -> list[Pick]:
    """Selections notebook ``nn`` made (empty when the summary lacks them)."""
    try:
        return PICKS[nn](d)
    except _MISSING:
        return []


def load_seeds(results_root: str | Path, profile: str, seeds: list[int]) -> dict[int, dict[str, dict]]:
    """{seed: {nn: summary}} read from ``<results_root>/<profile>[-seedN]/NN_summary.json`` (absent ones left out)."""
    out = {}
    for s in seeds:
        d = Path(results_root) / seeded(profile, s)
        out[s] = {nn: json.loads(p.read_text()) for nn in NOTEBOOKS if (p := d / f"{nn}_summary.json").exists()}
    return out


def _verdicts(nn: str, d: dict) -> list[tuple[str, str]]:
    """(claim label, verdict) for each bullet of :mod:`findings` that carries a verdict. The label is the
    bullet's opening words; bullets sharing them (one per language) add the word after ``"): "`` (``es``)."""
    try:
        bullets = FINDINGS[nn][1](d)
    except _MISSING:
        return []
    found = []
    for b in bullets:
        m = re.search(r"\*\*(.+?)\*\*\.\s*$", b)
        if m:
            text = b.strip().lstrip("- ").strip()
            tail = re.search(r"\): (\S+)", text)
            found.append((re.split(r" \(|:", text)[0], tail.group(1) if tail else None, m.group(1)))
    counts = Counter(base for base, _, _ in found)
    out, seen = [], Counter()
    for base, tail, verdict in found:
        seen[base] += 1
        label = base if counts[base] == 1 else f"{base} ({tail})" if tail else f"{base} #{seen[base]}"
        out.append((label, verdict))
    return out


def _kind(verdict: str) -> str:
    """The three verdict words of :mod:`findings` (``"reproduced in direction"`` counts as reproduced)."""
    for k in (NOT_REPRODUCED, UNTESTABLE, REPRODUCED):
        if verdict.startswith(k):
            return k
    return verdict


def settle(verdicts: list[str], n_seeds: int) -> tuple[str, str]:
    """One verdict across seeds, and why, from each seed's verdict (docs/CONVENTIONS.md):

    * **reproduced** only when every seed reproduces the claim;
    * **not reproduced** when any seed finds the opposite or excludes the report's number;
    * **untestable at this scale** otherwise (some seeds' intervals include 0: the design cannot tell);
    * **incomplete** when a seed has no verdict for it (not run, or an older summary).
    """
    if len(verdicts) < n_seeds:
        return "incomplete", f"verdicts from {len(verdicts)} of {n_seeds} seeds"
    kinds = Counter(_kind(v) for v in verdicts)
    n = len(verdicts)
    counts = ", ".join(f"{k} in {m}/{n}" for k, m in kinds.most_common())
    if kinds[REPRODUCED] == n:
        return REPRODUCED, f"every seed reproduces it ({n}/{n})"
    if kinds[NOT_REPRODUCED]:
        return NOT_REPRODUCED, counts
    if kinds[UNTESTABLE] == n:
        return UNTESTABLE, f"no seed can tell ({n}/{n} intervals include 0 or the setting cannot show it)"
    return UNTESTABLE, f"{counts}: the effect does not hold in every seed"


# power.csv rows (scripts/power.py) that size each findings claim: {notebook: [(claim-label regex, power-claim regex)]}
POWER_OF_CLAIM: dict[str, list[tuple[str, str]]] = {
    "02": [(r"^Case 1", r"Chinese feature"), (r"^Case 2", r"classical feature")],
    "03": [(r"^Spearman", r"Spearman"), (r"direct$", r"overlap_min")],
    "04": [(r"\(es\)", r"\(es"), (r"\(it\)", r"\(it")],
    "05": [(r"^Target coverage", r"covers"), (r"^Downstream", r"accuracy")],
    "06": [(r"^zh$", r"\bzh\b"), (r"^ru$", r"\bru\b"), (r"^ja$", r"\bja\b")],
    "07": [(r"^Repeat ratio", r"evaluation regime|ordinary sampling"), (r"accuracy", r"accuracy")],
}


def power_note(nn: str, claim: str, power: list[dict] | None) -> str:
    """"MDE x vs claimed effect y (n used; n needed)" of the power row sizing this claim, or ""."""
    for claim_re, power_re in POWER_OF_CLAIM.get(nn, []):
        if not re.search(claim_re, claim):
            continue
        for r in power or []:
            if str(r.get("notebook")).zfill(2) == nn and re.search(power_re, str(r.get("claim", ""))):
                return _power_text(r)
    return ""


def _float(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _power_text(r: dict) -> str:
    mde, target, need, n = _float(r.get("mde")), _float(r.get("target_effect")), _float(r.get("n_needed")), r.get("n")
    if mde is None or target is None:
        return f"design: {r.get('target_basis') or 'no effect size to detect'}"
    ok = "powered" if mde <= abs(target) else "underpowered"
    need_s = f"; {int(need)} needed" if need is not None else ""
    return f"design {ok}: MDE {mde:.3g} vs claimed effect {abs(target):.3g} ({n} {r.get('unit', 'units')}{need_s})"


def _hashable(v):
    return round(v, 6) if isinstance(v, float) else (json.dumps(v) if isinstance(v, (list, dict)) else v)


def aggregate(per_seed: dict[int, dict[str, dict]]) -> dict:
    """Across-seed aggregate of ``{seed: {nn: summary}}``::

        {"seeds": [...], "missing": {seed: [notebooks without a summary]},
         "unreadable": {seed: [notebooks whose summary lacks the headline fields]},
         "headlines": [{"nn", "section", "quantity", "n_seeds", "mean", "min", "max", "diff",
                        "n_excluding_0", "fmt", "per_seed": [{"seed", "value", "lo", "hi"}]}],
         "picks": [{"nn", "section", "what", "comparable", "modal", "fraction", "n_seeds",
                    "per_seed": [{"seed", "value"}]}],
         "claims": [{"nn", "section", "claim", "n_seeds", "verdicts": {verdict: count},
                     "across_seeds": the verdict when every seed gives it, "mixed" when seeds
                     disagree, "incomplete" when a seed lacks the claim}]}

    A quantity is aggregated over the seeds whose summary has it; ``fraction`` is the share of those
    seeds making the modal pick (None for non-comparable picks such as feature ids).
    """
    seeds = sorted(per_seed)
    rows: dict[tuple[str, str], dict] = {}
    sel: dict[tuple[str, str], dict] = {}
    claims: dict[tuple[str, str], dict] = {}
    for s in seeds:
        for nn in NOTEBOOKS:
            d = per_seed[s].get(nn)
            if d is None:
                continue
            for h in headlines(nn, d):
                r = rows.setdefault((nn, h.quantity), {"nn": nn, "section": SECTION[nn], "quantity": h.quantity,
                                                       "diff": h.diff, "fmt": h.fmt, "per_seed": []})
                r["per_seed"].append({"seed": s, "value": h.value, "lo": h.lo, "hi": h.hi})
            for p in picks(nn, d):
                r = sel.setdefault((nn, p.what), {"nn": nn, "section": SECTION[nn], "what": p.what,
                                                  "comparable": p.comparable, "per_seed": []})
                r["per_seed"].append({"seed": s, "value": p.value})
            for label, verdict in _verdicts(nn, d):
                c = claims.setdefault((nn, label), {"nn": nn, "section": SECTION[nn], "claim": label, "per_seed": []})
                c["per_seed"].append({"seed": s, "verdict": verdict})
    for r in rows.values():
        vals = [x["value"] for x in r["per_seed"] if x["value"] is not None and not math.isnan(x["value"])]
        r.update(n_seeds=len(vals), mean=sum(vals) / len(vals) if vals else float("nan"),
                 min=min(vals, default=float("nan")), max=max(vals, default=float("nan")))
        with_ci = [x for x in r["per_seed"] if x["lo"] is not None and x["hi"] is not None]
        r["n_excluding_0"] = sum(not (x["lo"] <= 0 <= x["hi"]) for x in with_ci) if r["diff"] and with_ci else None
    for r in sel.values():
        n = len(r["per_seed"])
        if r["comparable"]:
            modal, count = Counter(_hashable(x["value"]) for x in r["per_seed"]).most_common(1)[0]
            r.update(modal=modal, fraction=count / n, n_seeds=n)
        else:
            r.update(modal=None, fraction=None, n_seeds=n)
    for c in claims.values():
        counts = Counter(x["verdict"] for x in c["per_seed"])
        whole = len(c["per_seed"]) == len(seeds)
        final, why = settle([x["verdict"] for x in c["per_seed"]], len(seeds))
        c.update(n_seeds=len(c["per_seed"]), verdicts=dict(counts),
                 across_seeds=("mixed" if len(counts) > 1 else next(iter(counts))) if whole else "incomplete",
                 final=final, why=why)
    missing = {s: [nn for nn in NOTEBOOKS if nn not in per_seed[s]] for s in seeds}
    unreadable = {s: [nn for nn, d in per_seed[s].items() if not headlines(nn, d)] for s in seeds}
    return {"seeds": seeds, "missing": missing, "unreadable": unreadable, "headlines": list(rows.values()), "picks": list(sel.values()),
            "claims": list(claims.values())}


def _num(fmt: str, v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def _per_seed(r: dict) -> str:
    f = r["fmt"]
    parts = []
    for x in r["per_seed"]:
        ci = f" [{_num(f, x['lo'])}, {_num(f, x['hi'])}]" if x["lo"] is not None else ""
        parts.append(f"s{x['seed']}: {_num(f, x['value'])}{ci}")
    return "; ".join(parts)


def _row(cells: list[str]) -> str:
    return f"| {' | '.join(cells)} |"


def _headline_cells(r: dict) -> list[str]:
    """quantity, mean, range, per-seed values, seeds excluding 0 of one :func:`aggregate` headline row."""
    f = r["fmt"]
    ex = f"{r['n_excluding_0']}/{len(r['per_seed'])}" if r["n_excluding_0"] is not None else ""
    return [r["quantity"], _num(f, r["mean"]), f"{_num(f, r['min'])} – {_num(f, r['max'])}", _per_seed(r), ex]


def _pick_cells(r: dict, frac: str) -> list[str]:
    """pick, modal pick, ``frac`` (the agreement, as the caller words it), per-seed picks of one pick row."""
    per = "; ".join(f"s{x['seed']}: {x['value']}" for x in r["per_seed"])
    return [r["what"], str(r["modal"]) if r["comparable"] else "—", frac, per]


def _missing_note(agg: dict) -> list[str]:
    out = []
    for key, what in (("missing", "Not run yet"), ("unreadable", "Summary without the headline fields (an older schema?)")):
        items = [f"seed {s}: {', '.join(nn)}" for s, nn in agg.get(key, {}).items() if nn]
        if items:
            out += [f"{what}, left out of the means: {'; '.join(items)}.", ""]
    return out


def render(agg: dict, profile: str, power: list[dict] | None = None) -> str:
    """Markdown: claims (verdict across seeds and why), headline numbers (mean, range, per-seed value and
    interval), selections, and, given ``power`` (rows of scripts/power.py's power.csv), each design's MDE."""
    n = len(agg["seeds"])
    seeds = ", ".join(str(s) for s in agg["seeds"])
    lines = [f"## Results ({profile} profile) across {n} build seeds ({seeds})", "",
             *_claims_table(agg, power), "", f"### Headline numbers across the {n} seeds", "",
             f"Generated by `scripts/summarize.py --seeds {n}` from `results/{profile}[-seedN]/NN_summary.json`. "
             "Mean and range (min-max) are over build seeds; beside them each seed's value with its 95% per-prompt "
             "bootstrap interval, which covers prompt sampling only. For differences and correlations, the last "
             "column counts the seeds whose interval excludes 0.", "",
             *_missing_note(agg),
             "| section | quantity | mean over seeds | range | per seed: value [interval] | seeds excluding 0 |",
             "|---|---|---|---|---|---|"]
    lines += [_row([r["section"], *_headline_cells(r)]) for r in agg["headlines"]]
    lines += ["", "### Selections: how often the seeds make the same pick", "",
              "| section | pick | modal pick | fraction of seeds | per seed |", "|---|---|---|---|---|"]
    for r in agg["picks"]:
        frac = f"{r['fraction']:.2f} ({round(r['fraction'] * r['n_seeds'])}/{r['n_seeds']})" if r["comparable"] \
            else "n/a (feature ids differ by construction: one SAE per seed)"
        lines.append(_row([r["section"], *_pick_cells(r, frac)]))
    lines += _power_table(power)
    return "\n".join(lines) + "\n"


def _claims_table(agg: dict, power: list[dict] | None) -> list[str]:
    lines = ["### The report's claims: verdict across seeds (`qscope_utils.findings`)", "",
             "A claim counts as reproduced on this profile only when every seed reproduces it; it is not "
             "reproduced when any seed contradicts it, and untestable at this scale when some seeds' intervals "
             "include 0. *Why* gives the seeds' verdicts and, where `power.csv` sizes the claim, whether the "
             "design could detect the report-sized effect (minimum detectable effect at 80% power).", "",
             "| section | claim | verdicts over seeds | verdict | why |", "|---|---|---|---|---|"]
    for c in agg["claims"]:
        v = ", ".join(f"{k} {m}/{c['n_seeds']}" for k, m in c["verdicts"].items())
        why = "; ".join(x for x in (c.get("why", ""), power_note(c["nn"], c["claim"], power)) if x)
        lines.append(f"| {c['section']} | {c['claim']} | {v} | **{c.get('final', c['across_seeds'])}** | {why} |")
    return lines


def _power_table(power: list[dict] | None) -> list[str]:
    if not power:
        return []
    lines = ["", "### Power of the mini design (`scripts/power.py`, seed 0's results as the pilot)", "",
             "| section | claim | design | n | MDE (80% power) | claimed effect | n needed |", "|---|---|---|---|---|---|---|"]
    for r in power:
        mde, t, need = _float(r.get("mde")), _float(r.get("target_effect")), _float(r.get("n_needed"))
        lines.append(f"| {r['section']} | {r['claim']} | {r['design']} | {r['n']} {r.get('unit', '')} | "
                     f"{_num('{:.3g}', mde)} | {_num('{:.3g}', t) if t is not None else r.get('target_basis', '')} | "
                     f"{int(need) if need is not None else '—'} |")
    return lines


def render_section(agg: dict, nn: str, profile: str, power: list[dict] | None = None) -> str:
    """Markdown for one notebook's docs page: its claims (verdict across seeds and why), headline numbers,
    picks and power rows, filtered from :func:`aggregate`'s result (the same rows as :func:`render`)."""
    n = len(agg["seeds"])
    sub = {"seeds": agg["seeds"], "claims": [c for c in agg["claims"] if c["nn"] == nn]}
    lines = [f"Generated by `scripts/summarize.py --seeds {n} --docs` from `results/{profile}[-seedN]/{nn}_summary.json` "
             f"(build seeds {', '.join(map(str, agg['seeds']))}); per-seed intervals are 95% bootstrap over prompts.", ""]
    lines += _claims_table(sub, power)[2:] if sub["claims"] else []
    rows = [r for r in agg["headlines"] if r["nn"] == nn]
    if rows:
        lines += ["", "| quantity | mean over seeds | range | per seed: value [interval] | seeds excluding 0 |",
                  "|---|---|---|---|---|"]
        lines += [_row(_headline_cells(r)) for r in rows]
    sel = [r for r in agg["picks"] if r["nn"] == nn]
    if sel:
        lines += ["", "| pick | modal | fraction of seeds | per seed |", "|---|---|---|---|"]
        lines += [_row(_pick_cells(r, f"{r['fraction']:.2f}" if r["comparable"] else "n/a (one SAE per seed)"))
                  for r in sel]
    mine = [r for r in (power or []) if str(r.get("notebook")).zfill(2) == nn]
    if mine:
        lines += ["", "Minimum detectable effect of this mini design (80% power, two-sided 5%; `scripts/power.py` "
                      "on seed 0's results):", ""] + _power_table(mine)[4:]
    return "\n".join(lines) + "\n"
