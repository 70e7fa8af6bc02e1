"""Across-seed aggregation (qscope_utils.across_seeds, scripts/summarize.py --seeds) on hand-made
per-seed summaries whose means, ranges, modal picks and verdict counts are known."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _corr(r, lo, hi, n=10):
    return {"r": r, "lo": lo, "hi": hi, "p": 0.5, "n": n}


def s03(layer: int, rho: tuple[float, float, float]) -> dict:
    sim = {k: _corr(0.1, -0.2, 0.4, 28) for k in ("pearson_direct", "pearson_partial", "spearman_direct",
                                                   "spearman_partial")}
    return {"layer": layer, "n_checkpoints": 9, "rho_R_Rhat": _corr(*rho), "overlap_gsm_math": 0.4,
            "overlap_math_gsm": 0.2, "similarity_28_pairs": sim}


def s06(lam: float, diff: tuple[float, float, float]) -> dict:
    v = lambda x, lo, hi: {"value": x, "lo": lo, "hi": hi, "n_prompts": 20, "n_seeds": 4}
    return {"test": {"zh": {"base": v(0.9, 0.8, 1.0), "sft": v(0.3, 0.2, 0.4), "sasft": v(0.3 - diff[0], 0.1, 0.3),
                            "diff": v(*diff)}},
            "lambda_chosen_on_val": {"zh": lam}, "n_seeds": 4,
            "features": [{"target": "zh", "layer": 2, "feature": 100 + int(10 * lam), "nu": 1.0}]}


SEEDS = {0: {"03": s03(2, (0.2, 0.1, 0.3)), "06": s06(10.0, (0.10, 0.05, 0.15))},
         1: {"03": s03(2, (0.5, -0.1, 0.9)), "06": s06(10.0, (0.05, -0.05, 0.15))},
         2: {"03": s03(3, (0.8, 0.6, 0.95)), "06": s06(1.0, (0.20, 0.10, 0.30))}}


def _write(root: Path, profile: str = "mini") -> None:
    for s, by_nn in SEEDS.items():
        d = root / (profile if s == 0 else f"{profile}-seed{s}")
        d.mkdir(parents=True)
        for nn, summ in by_nn.items():
            (d / f"{nn}_summary.json").write_text(json.dumps(summ))


def _row(rows, quantity):
    return next(r for r in rows if r["quantity"] == quantity)


def _pick(rows, what, nn):
    return next(r for r in rows if r["what"] == what and r["nn"] == nn)


def test_aggregate_known_answers(tmp_path):
    from qscope_utils.across_seeds import aggregate, load_seeds

    _write(tmp_path)
    per_seed = load_seeds(tmp_path, "mini", [0, 1, 2, 3])      # seed 3 was not run
    assert set(per_seed[0]) == {"03", "06"} and per_seed[3] == {}
    agg = aggregate(per_seed)
    assert agg["missing"][3] == ["01", "02", "03", "04", "05", "06", "07"] and agg["missing"][0] == ["01", "02", "04", "05", "07"]
    assert {c["across_seeds"] for c in agg["claims"]} == {"incomplete"}    # no claim is settled without seed 3
    agg = aggregate(load_seeds(tmp_path, "mini", [0, 1, 2]))

    rho = _row(agg["headlines"], "ρ(R, R̂)")
    assert rho["n_seeds"] == 3 and rho["mean"] == pytest.approx(0.5) and (rho["min"], rho["max"]) == (0.2, 0.8)
    assert rho["n_excluding_0"] == 2                             # seed 1's interval [-0.1, 0.9] includes 0
    assert [(x["seed"], x["lo"], x["hi"]) for x in rho["per_seed"]] == [(0, 0.1, 0.3), (1, -0.1, 0.9), (2, 0.6, 0.95)]
    d = _row(agg["headlines"], "zh paired Δ (SFT − SASFT)")
    assert d["mean"] == pytest.approx(0.35 / 3) and (d["min"], d["max"]) == (0.05, 0.20) and d["n_excluding_0"] == 2
    assert _row(agg["headlines"], "overlap(gsm, math)")["n_excluding_0"] is None   # no interval, not a difference

    layer = _pick(agg["picks"], "layer", "03")
    assert (layer["modal"], layer["fraction"], layer["n_seeds"]) == (2, pytest.approx(2 / 3), 3)
    lam = _pick(agg["picks"], "λ for zh", "06")
    assert (lam["modal"], lam["fraction"]) == (10.0, pytest.approx(2 / 3))
    feat = _pick(agg["picks"], "top feature zh", "06")
    assert feat["comparable"] is False and feat["fraction"] is None
    assert [x["value"] for x in feat["per_seed"]] == ["L2/200", "L2/200", "L2/110"]

    claims = {(c["nn"], c["claim"]): c for c in agg["claims"]}
    zh = claims[("06", "zh")]                                   # findings: paired reduction interval vs 0
    assert zh["verdicts"] == {"reproduced": 2, "untestable at this scale": 1} and zh["across_seeds"] == "mixed"
    asym = claims[("03", "Asymmetric overlap")]
    assert asym["verdicts"] == {"reproduced": 3} and asym["across_seeds"] == "reproduced"


def test_claims_of_one_kind_are_labelled_by_language():
    from qscope_utils.across_seeds import _verdicts

    ks = lambda f1, lo, hi: {"K=1": {"layer": 1, "features": [5], "f1": f1, "f1_ci95": [lo, hi]}}
    d = {"or_rule_at_top1diff_layer": {"es": ks(0.95, 0.92, 0.97), "it": ks(0.6, 0.5, 0.7)},
         "data_efficiency_macro_f1": []}
    assert _verdicts("04", d) == [("OR-rule held-out F1 (es)", "reproduced"), ("OR-rule held-out F1 (it)", "not reproduced")]


def test_a_claim_missing_in_one_seed_is_incomplete(tmp_path):
    from qscope_utils.across_seeds import aggregate

    from qscope_utils.across_seeds import render

    agg = aggregate({0: {"03": s03(2, (0.5, 0.2, 0.7))}, 1: {"03": {"layer": 2}}})
    c = next(c for c in agg["claims"] if c["claim"] == "Asymmetric overlap")
    assert c["verdicts"] == {"reproduced": 1} and c["across_seeds"] == "incomplete"
    assert agg["unreadable"] == {0: [], 1: ["03"]} and "seed 1: 03" in render(agg, "mini")


def test_summarize_seeds_writes_the_table(tmp_path):
    _write(tmp_path)
    env = {**os.environ, "QSCOPE_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "scripts/summarize.py", "--profile", "mini", "--seeds", "3"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    md = (tmp_path / "mini-seeds" / "SUMMARY.md").read_text()
    assert "| §4 | ρ(R, R̂) | 0.50 | 0.20 – 0.80 | s0: 0.20 [0.10, 0.30]; s1: 0.50 [-0.10, 0.90]; s2: 0.80 [0.60, 0.95] | 2/3 |" in md
    assert "| §4 | layer | 2 | 0.67 (2/3) | s0: 2; s1: 2; s2: 3 |" in md
    assert ("| §7 | zh | reproduced 2/3, untestable at this scale 1/3 | **untestable at this scale** | "
            "reproduced in 2/3, untestable at this scale in 1/3: the effect does not hold in every seed |") in md
    assert "### Seed 0 in detail" in md
    agg = json.loads((tmp_path / "mini-seeds" / "seeds.json").read_text())
    assert agg["seeds"] == [0, 1, 2]
    r = subprocess.run([sys.executable, "scripts/summarize.py", "--profile", "smoke", "--seeds", "2"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "--seeds 2" in r.stderr and not (tmp_path / "smoke-seeds").exists()


def test_settle_known_answers():
    from qscope_utils.across_seeds import settle

    assert settle(["reproduced", "reproduced in direction", "reproduced"], 3)[0] == "reproduced"
    assert settle(["reproduced", "not reproduced", "reproduced"], 3) == (
        "not reproduced", "reproduced in 2/3, not reproduced in 1/3")
    assert settle(["untestable at this scale"] * 3, 3)[0] == "untestable at this scale"
    assert settle(["reproduced", "untestable at this scale", "reproduced"], 3)[0] == "untestable at this scale"
    assert settle(["reproduced", "reproduced"], 3) == ("incomplete", "verdicts from 2 of 3 seeds")


def test_power_note_matches_the_sizing_row_and_says_whether_it_is_powered(tmp_path):
    from qscope_utils.across_seeds import aggregate, render, power_note

    power = [{"section": "§7", "notebook": "06", "claim": "SASFT cuts the zh code-switch ratio", "design": "paired",
              "unit": "prompts", "n": "20", "mde": "0.1876", "target_effect": "0.1187", "n_needed": "50",
              "target_basis": "a 50% cut"},
             {"section": "§7", "notebook": "06", "claim": "SASFT cuts the ru code-switch ratio", "design": "paired",
              "unit": "prompts", "n": "300", "mde": "0.02", "target_effect": "0.025", "n_needed": "192",
              "target_basis": "a 50% cut"}]
    assert power_note("06", "zh", power) == "design underpowered: MDE 0.188 vs claimed effect 0.119 (20 prompts; 50 needed)"
    assert power_note("06", "ru", power).startswith("design powered: MDE 0.02 vs claimed effect 0.025")
    assert power_note("06", "ko", power) == "" and power_note("03", "zh", power) == ""
    _write(tmp_path)
    from qscope_utils.across_seeds import load_seeds
    md = render(aggregate(load_seeds(tmp_path, "mini", [0, 1, 2])), "mini", power)
    assert "| §7 | zh |" in md and "design underpowered: MDE 0.188" in md and "### Power of the mini design" in md


def test_synthesis_headlines_carry_the_missing_target_counts_and_the_fixed_budget_pick():
    from qscope_utils import across_seeds as A

    d = {"layer": 3, "matched_budget": 40, "n_missing": 17,
         "coverage_at_matched_budget_pct": {"feature synthesis": 90.0, "natural sampling": 80.0},
         "missing_covered_at_matched_budget": {"feature synthesis": 12, "natural sampling": 5},
         "downstream": {"sae": {}}}
    h = {x.quantity: x.value for x in A.headlines("05", d)}
    assert h == {"coverage feature synthesis (%)": 90.0, "coverage natural sampling (%)": 80.0,
                 "targets the seed misses": 17, "missing targets covered, feature synthesis": 12,
                 "missing targets covered, natural sampling": 5}
    assert [(p.what, p.value) for p in A.picks("05", d)] == [("layer", 3), ("matched budget", 40)]


def test_07_headlines_and_picks_read_the_evaluation_regime():
    from qscope_utils.across_seeds import headlines, picks

    ci = lambda r, lo, hi, k="ratio": {k: r, "lo": lo, "hi": hi}   # noqa: E731
    arm = {"repeat_task": ci(0.15, 0.1, 0.2), "repeat_stress": ci(0.4, 0.35, 0.45),
           "acc_greedy": ci(0.02, 0.0, 0.05, "mean"), "ppl": ci(40.0, 33.0, 47.0, "ppl")}
    d = {"layer": 2, "feature": 1951, "alpha": 24.0, "sae_variant_chosen": "SAE arm (drop)", "arms": {"before RL": arm},
         "eval_regime": {"label": "greedy, 96 tokens, end-of-text after 96"}}
    h = {x.quantity: x for x in headlines("07", d)}
    assert (h["repeat ratio, evaluation regime, before RL"].value, h["repeat ratio, evaluation regime, before RL"].lo) \
        == (0.15, 0.1)
    assert h["stress repeat ratio, before RL"].value == 0.4 and h["held-out perplexity, before RL"].value == 40.0
    p = {x.what: x.value for x in picks("07", d)}
    assert p["evaluation regime"] == "greedy, 96 tokens, end-of-text after 96" and p["steering α"] == 24.0
    del d["eval_regime"]                                # an older summary: the other picks still come through
    assert {x.what: x.value for x in picks("07", d)}["evaluation regime"] is None


def test_picks_report_the_rule_and_the_argmax_beside_it():
    from qscope_utils.across_seeds import PICKS

    pick = lambda a: {"alpha": a}
    d02 = {"layer": 2, "zh_feature": 5, "lzh_feature": 9, "alpha_scale": {"zh": 2.0, "lzh": 4.0},
           "case1": {"has_script": {"best_steered": pick(-2.0), "argmax_steered": pick(-8.0)}},
           "case2": {"p_classical": {"best_steered": pick(16.0)}}}          # case 2 as in an older summary
    got = {p.what: p.value for p in PICKS["02"](d02)}
    assert got["case 1 α / scale"] == -1.0 and got["case 1 α / scale (argmax, not used)"] == -4.0
    assert got["case 2 α / scale"] == 4.0 and "case 2 α / scale (argmax, not used)" not in got
    row = lambda f1: {"layer": 1, "features": [7, 3], "f1": f1, "f1_ci95": [f1 - 0.05, f1 + 0.05]}
    d04 = {"or_rule_at_top1diff_layer": {"es": {"K=1": row(0.5), "K=2": row(0.66), "K=10": row(0.68)}},
           "k_selection": {"es": {"pick": "K=2", "argmax": "K=10"}},
           "layer_selection": {"es": {"top1diff": 1, "one_se": 0}}}
    got = {p.what: p.value for p in PICKS["04"](d04)}
    assert got["chosen K es"] == "K=2" and got["best K es (argmax, not used)"] == "K=10"
    assert got["top1-diff layer es"] == 1 and got["one-SE layer es (not used)"] == 0
    del d04["k_selection"]                                                   # older summaries: the argmax
    assert {p.what: p.value for p in PICKS["04"](d04)}["chosen K es"] == "K=10"


def test_docs_blocks_carry_their_sections_rows_only(tmp_path, monkeypatch):
    import importlib.util

    from qscope_utils.across_seeds import aggregate, load_seeds, render_section

    _write(tmp_path)
    agg = aggregate(load_seeds(tmp_path, "mini", [0, 1, 2]))
    power = [{"section": "§7", "notebook": "06", "claim": "SASFT cuts the zh code-switch ratio", "design": "paired",
              "unit": "prompts", "n": "160", "mde": "0.031", "target_effect": "0.09", "n_needed": "20",
              "target_basis": "a 50% cut"}]
    md = render_section(agg, "06", "mini", power)
    assert "| zh | reproduced 2/3, untestable at this scale 1/3 | **untestable at this scale** |" in md
    assert "| λ for zh | 10.0 | 0.67 |" in md and "| zh paired Δ (SFT − SASFT) | +0.12 | +0.05 – +0.20 |" in md
    assert "| §7 | SASFT cuts the zh code-switch ratio | paired | 160 prompts | 0.031 | 0.09 | 20 |" in md
    assert "ρ(R, R̂)" not in md and "ρ(R, R̂)" in render_section(agg, "03", "mini", power)

    spec = importlib.util.spec_from_file_location("summarize", ROOT / "scripts" / "summarize.py")
    summ = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summ)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "06_sasft.md").write_text("# 06\n\n<!-- seeds:begin -->\nold\n<!-- seeds:end -->\n\ntail\n")
    (docs / "03_benchmark_redundancy.md").write_text("# 03 without a block\n")
    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path))          # power.csv from the temporary results, none
    summ.write_docs(agg, "mini", docs)
    page = (docs / "06_sasft.md").read_text()
    assert "\nold\n" not in page and page.endswith("<!-- seeds:end -->\n\ntail\n") and "| λ for zh | 10.0 |" in page
    assert (docs / "03_benchmark_redundancy.md").read_text() == "# 03 without a block\n"
