"""scripts/power.py on a hand-made pilot summary: MDE, target effect and n needed are known."""
from __future__ import annotations

import csv
import math
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_power_table_known_answers(tmp_path):
    v = lambda x, lo, hi: {"value": x, "lo": lo, "hi": hi, "n_prompts": 20, "n_seeds": 4}
    summ = {"test": {"zh": {"sft": v(0.3, 0.2, 0.4), "sasft": v(0.2, 0.1, 0.3), "diff": v(0.1, 0.05, 0.15)}}}
    (tmp_path / "mini").mkdir()
    (tmp_path / "mini" / "06_summary.json").write_text(json.dumps(summ))
    env = {**os.environ, "QSCOPE_RESULTS": str(tmp_path), "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "scripts/power.py", "--profile", "mini"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "mini" / "power.csv")))
    assert len(rows) == 1 and rows[0]["section"] == "§7" and rows[0]["n"] == "20"
    se = 0.10 / (2 * 1.959964)                        # from the 95% interval [0.05, 0.15]
    mde = 2.801585 * se                               # 0.0715
    assert float(rows[0]["se"]) == pytest.approx(se, rel=1e-3) and float(rows[0]["mde"]) == pytest.approx(mde, rel=1e-3)
    assert float(rows[0]["target_effect"]) == pytest.approx(0.15)        # a 50% cut of the SFT ratio 0.3
    assert rows[0]["n_needed"] == "5"                                     # ceil(20 * (0.0715 / 0.15)^2) = ceil(4.54)
    r = subprocess.run([sys.executable, "scripts/power.py", "--profile", "smoke"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "run_all.sh --profile smoke" in r.stderr


def _power_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("power_script", ROOT / "scripts" / "power.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_section6_rows_use_the_paired_missing_target_counts():
    acc = lambda a: {"accuracy": a, "acc_lo": a - 4.9, "acc_hi": a + 4.9}   # noqa: E731
    d = {"n_missing": 12, "n_targets": 30, "matched_budget": 40, "target_set": "pool_rare", "n_eval": 400,
         "coverage_at_matched_budget_pct": {"feature synthesis": 90.0, "natural sampling": 70.0},
         "missing_covered_at_matched_budget": {"feature synthesis": 10, "natural sampling": 4, "random synthesis": 2},
         "downstream": {"sae": {"real + feature synthesis": acc(60.0), "real + random synthesis": acc(55.0)}}}
    cov, dn = _power_module().p05(d)
    z2 = 2.801585 ** 2                                                    # (z_0.975 + z_0.8)^2 = 7.849
    assert cov["mde"] == pytest.approx(z2 / (12 + z2), rel=1e-4)          # 0.395
    assert cov["estimate"] == pytest.approx(6 / 12) and cov["n_needed"] == 8   # ceil(7.849 * 0.5 / 0.5)
    assert "pool_rare" in cov["design"] and "missing_covered" in cov["source"]
    old = {k: v for k, v in d.items() if k not in ("missing_covered_at_matched_budget", "target_set")}
    assert _power_module().p05(old)[0]["estimate"] == pytest.approx(0.2 * 30 / 12)   # from Cov(T), older summaries
    assert dn["n"] == 400


def test_power_07_rows_in_the_evaluation_regime(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("power", ROOT / "scripts" / "power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    ci = lambda r, lo, hi, k="ratio", n=150, m=1: {k: r, "lo": lo, "hi": hi, "n_prompts": n, "n_samples": m}  # noqa: E731
    arm = lambda t: {"repeat_task": t, "repeat_stress": ci(0.3, 0.25, 0.35, m=4),   # noqa: E731
                     "acc_greedy": ci(0.03, 0.01, 0.05, "mean")}
    d = {"eval_regime": {"label": "greedy, 96 tokens, end-of-text after 96"},
         "arms": {"before RL": arm(ci(0.15, 0.1, 0.2)), "vanilla DAPO": arm(ci(0.2, 0.1, 0.3)),
                  "DAPO + SAE rollouts": arm(ci(0.1, 0.0, 0.2))}}
    r = power.p07(d)[0]
    se = math.hypot(0.2, 0.2) / (2 * 1.959964)           # two arms, each interval 0.2 wide
    assert r["claim"] == "the repeat ratio drops sharply (evaluation regime)" and r["n"] == 150
    assert "greedy, 96 tokens, end-of-text after 96" in r["design"] and "1 response(s) per prompt" in r["design"]
    assert r["estimate"] == pytest.approx(-0.1) and r["se"] == pytest.approx(se, rel=1e-4)
    assert r["target_effect"] == pytest.approx(-0.1)     # a 50% cut of vanilla's 0.2
    assert r["n_needed"] == math.ceil(150 * (2.801585 * se / 0.1) ** 2)
    for a in d["arms"].values():                        # nothing loops: untestable, no MDE
        a["repeat_task"] = ci(0.0, 0.0, 0.0)
    r = power.p07(d)[0]
    assert r["mde"] is None and r["target_basis"].startswith("untestable")
