"""Does one run agree with the committed across-seed results? (qscope_utils.agreement,
scripts/summarize.py --compare, the runner's closing line) on hand-made summaries with known answers."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_across_seeds import SEEDS, _write, s03, s06

ROOT = Path(__file__).resolve().parents[1]
T975_2 = 4.302652729911275          # t(0.975, 2), the two-sided 95% quantile with 2 degrees of freedom


def _agg(tmp_path):
    from qscope_utils.across_seeds import aggregate, load_seeds

    _write(tmp_path)
    return aggregate(load_seeds(tmp_path, "mini", [0, 1, 2]))


def _row(rows, key, value):
    return next(r for r in rows if r[key] == value)


def test_prediction_interval_known_answers():
    from qscope_utils.agreement import prediction_interval

    lo, hi = prediction_interval([1.0, 2.0, 3.0])             # mean 2, sd 1, n 3
    half = T975_2 * 1.0 * math.sqrt(1 + 1 / 3)                # 4.968...
    assert (lo, hi) == (pytest.approx(2 - half), pytest.approx(2 + half)) and half == pytest.approx(4.96828, abs=1e-5)
    assert prediction_interval([0.5, 0.5, 0.5]) == (0.5, 0.5)  # no spread: only the same value is inside
    assert prediction_interval([1.0, float("nan"), 3.0]) == pytest.approx((2 - 12.7062 * math.sqrt(2) * math.sqrt(1.5),
                                                                           2 + 12.7062 * math.sqrt(2) * math.sqrt(1.5)), rel=1e-4)
    assert prediction_interval([1.0]) is None and prediction_interval([]) is None


def test_compare_a_run_equal_to_seed_0_agrees_everywhere(tmp_path):
    from qscope_utils.agreement import compare, summary_line

    cmp = compare(_agg(tmp_path), SEEDS[0], seed=0)
    assert cmp["missing"] == ["01", "02", "04", "05", "07"] and cmp["committed_seeds"] == [0, 1, 2]
    rho = _row(cmp["headlines"], "quantity", "ρ(R, R̂)")
    assert rho["value"] == 0.2 and rho["seed_values"] == [0.2, 0.5, 0.8] and rho["same_seed"] == 0.2
    assert rho["shift_sd"] == 0.0 and rho["inside"] is True
    assert rho["pi"] == (pytest.approx(0.5 - T975_2 * 0.3 * math.sqrt(4 / 3)), pytest.approx(0.5 + T975_2 * 0.3 * math.sqrt(4 / 3)))
    assert all(r["agrees"] for r in cmp["claims"]) and all(r["agrees"] for r in cmp["picks"])
    line = summary_line(cmp)
    n_claims, n_picks = len(cmp["claims"]), len(cmp["picks"])
    assert f"verdicts equal to committed seed 0's: {n_claims}/{n_claims}" in line
    assert f"same picks as committed seed 0: {n_picks}/{n_picks}" in line and "median |shift| from committed seed 0: 0.00" in line


def test_compare_flags_numbers_outside_the_prediction_interval_and_changed_verdicts(tmp_path):
    from qscope_utils.agreement import compare

    # seed 0 rebuilt elsewhere: ρ far outside the seeds' spread, another λ, and a zh difference whose interval
    # now includes 0 (seed 0 reproduced the claim; seed 1, whose interval also includes 0, did not)
    run = {"03": s03(2, (3.0, 2.5, 3.5)), "06": s06(1.0, (0.02, -0.03, 0.07))}
    cmp = compare(_agg(tmp_path), run, seed=0)
    rho = _row(cmp["headlines"], "quantity", "ρ(R, R̂)")
    assert rho["inside"] is False and rho["shift_sd"] == pytest.approx((3.0 - 0.2) / 0.3)
    d = _row(cmp["headlines"], "quantity", "zh paired Δ (SFT − SASFT)")
    assert d["inside"] is True and d["shift_sd"] == pytest.approx((0.02 - 0.10) / 0.076376, rel=1e-4)
    lam = _row(cmp["picks"], "what", "λ for zh")
    assert (lam["value"], lam["same_seed"], lam["agrees"]) == (1.0, 10.0, False)
    zh = _row(cmp["claims"], "claim", "zh")
    assert zh["same_seed"] != zh["verdict"] and zh["agrees"] is False
    assert zh["seen"] is True                                  # seed 1 gave the same verdict
    overlap = _row(cmp["headlines"], "quantity", "overlap(gsm, math)")
    assert overlap["pi"] == pytest.approx((0.4, 0.4)) and overlap["inside"] is True and overlap["shift_sd"] == pytest.approx(0.0)


def test_summarize_compare_writes_the_report_and_the_runner_prints_one_line(tmp_path, capsys, monkeypatch):
    from qscope_utils.runner import print_agreement

    res = tmp_path / "results"
    _write(res)
    env = {**os.environ, "QSCOPE_RESULTS": str(res), "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), "--seeds", "3"], env=env, check=True,
                   capture_output=True)
    other = tmp_path / "elsewhere" / "mini"                    # a run from another machine: seed 0 with another λ
    other.mkdir(parents=True)
    for nn, summ in {"03": SEEDS[0]["03"], "06": s06(1.0, (0.10, 0.05, 0.15))}.items():
        (other / f"{nn}_summary.json").write_text(json.dumps({**summ, "_meta": {"build_seed": 0, "cpu": "Test CPU",
                                                                               "torch_threads": 2}}))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), "--compare", str(other)], env=env,
                         check=True, capture_output=True, text=True).stdout
    assert "# This run against the committed results (mini, Test CPU, 2 torch threads, build seed 0)" in out
    assert "| §7 | λ for zh | 1.0 | 10.0 | **no** |" in out
    assert (other / "REPRODUCTION.md").read_text() == out[:-1]          # print() added one newline
    saved = json.loads((other / "reproduction.json").read_text())
    assert saved["seed"] == 0 and _row(saved["picks"], "what", "λ for zh")["agrees"] is False
    missing = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), "--compare", str(other),
                              "--against", str(tmp_path / "none.json")], env=env, capture_output=True, text=True)
    assert missing.returncode == 1 and "no across-seed results at" in missing.stderr
    committed = tmp_path / "committed.json"                  # --seeds --against: verdicts beside another aggregate's
    committed.write_text((res / "mini-seeds" / "seeds.json").read_text())
    md = subprocess.run([sys.executable, str(ROOT / "scripts" / "summarize.py"), "--seeds", "3", "--against",
                         str(committed)], env=env, check=True, capture_output=True, text=True).stdout
    n = len(json.loads(committed.read_text())["claims"])
    assert f"The same verdict for {n} of {n} claims." in md and "| §7 | zh | untestable at this scale |" in md

    # the runner's closing line: only once every section has a summary
    monkeypatch.setenv("QSCOPE_RESULTS", str(res))
    monkeypatch.delenv("QSCOPE_SEED", raising=False)
    assert print_agreement("mini") is None                     # results/mini holds 03 and 06 only
    for nn in ("01", "02", "04", "05", "07"):
        (res / "mini" / f"{nn}_summary.json").write_text("{}")
    line = print_agreement("mini")
    assert line is not None and "verdicts equal to committed seed 0's" in line
    printed = capsys.readouterr().out
    assert "details: python scripts/summarize.py --profile mini --compare" in printed


def test_compare_settled_pairs_claims_by_section_and_label(tmp_path):
    from qscope_utils.across_seeds import aggregate, load_seeds
    from qscope_utils.agreement import compare_settled

    ours = _agg(tmp_path / "a")
    # the same seeds on "another machine": seed 1's zh difference now excludes 0, so every seed reproduces
    # zh there (here seed 1's interval includes 0: untestable); ρ and everything else as before
    other = {s: dict(v) for s, v in SEEDS.items()}
    other[1] = {**SEEDS[1], "06": s06(10.0, (0.10, 0.05, 0.15))}
    root = tmp_path / "b"
    for s, by_nn in other.items():
        d = root / ("mini" if s == 0 else f"mini-seed{s}")
        d.mkdir(parents=True)
        for nn, summ in by_nn.items():
            (d / f"{nn}_summary.json").write_text(json.dumps(summ))
    theirs = aggregate(load_seeds(root, "mini", [0, 1, 2]))
    rows = compare_settled(ours, theirs)
    assert {r["claim"] for r in rows} == {c["claim"] for c in ours["claims"]}
    zh = _row(rows, "claim", "zh")
    assert (zh["ours"], zh["theirs"], zh["equal"]) == ("untestable at this scale", "reproduced", False)
    assert [r["equal"] for r in rows if r["claim"] != "zh"] == [True] * (len(rows) - 1)
    assert zh["ours_seeds"] == {"reproduced": 2, "untestable at this scale": 1} and zh["theirs_seeds"] == {"reproduced": 3}
    assert compare_settled(ours, {"claims": []}) == []


def test_the_runner_line_names_the_fix_for_an_unreadable_aggregate(tmp_path, capsys, monkeypatch):
    from qscope_utils.runner import print_agreement

    res = tmp_path / "results"
    (res / "mini-seeds").mkdir(parents=True)
    (res / "mini-seeds" / "seeds.json").write_text('{"claims": []}')      # no "seeds", "headlines", "picks"
    (res / "mini").mkdir()
    for nn in ("01", "02", "03", "04", "05", "06", "07"):
        (res / "mini" / f"{nn}_summary.json").write_text(json.dumps(SEEDS[0].get(nn, {})))
    monkeypatch.setenv("QSCOPE_RESULTS", str(res))
    monkeypatch.delenv("QSCOPE_SEED", raising=False)
    assert print_agreement("mini") is None
    out = capsys.readouterr().out
    assert "could not compare with" in out and "summarize.py --profile mini --seeds N" in out


def _build_stamps(data: Path, pretrain_seconds: dict) -> None:
    from qscope_utils.profiles import get_profile

    prof = get_profile("mini")
    for sub, extra in (("corpus", {"n_docs": 3, "n_chars": 2_000_000}), ("tokenizer", {}), ("models", {})):
        (data / "mini" / sub).mkdir(parents=True, exist_ok=True)
        (data / "mini" / sub / ".stamp.json").write_text(json.dumps({"seconds": 2.0, **extra}))
    sae = Path(prof.sae_source)
    sae.mkdir(parents=True)
    (sae / ".stamp.json").write_text(json.dumps({"seconds": 7.0, "layers": [
        {"layer": 0, "heldout_fvu": 0.1, "tokens_per_s": 100.0}, {"layer": 1, "heldout_fvu": 0.2, "tokens_per_s": 300.0}]}))
    (data / "mini" / "models" / "pretrain.json").write_text(json.dumps(
        {"n_params": 1_000_000, "zoo": [1, 2], "tokens_per_s": 5000.0, "seconds": pretrain_seconds}))


@pytest.mark.parametrize("seconds, shown", [
    ({"train_wall": 100.0, "balanced": 90.0, "code_math_heavy": 60.0, "perplexity_eval": 5.0}, "| 105 |"),  # at once
    ({"balanced": 90.0, "code_math_heavy": 60.0, "perplexity_eval": 5.0}, "| 155 |"),   # older build: in sequence
])
def test_build_table_counts_the_pretraining_wall_time_once(tmp_path, monkeypatch, seconds, shown):
    import importlib.util

    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path / "data"))
    _build_stamps(tmp_path / "data", seconds)
    spec = importlib.util.spec_from_file_location("summarize_under_test", ROOT / "scripts" / "summarize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.build_table("mini")
    pre = next(r for r in rows if r.startswith("| pretraining"))
    assert pre.endswith(shown) and "5000 tokens/s" in pre and "2 zoo checkpoints" in pre
    assert "held-out FVU per layer 0.100, 0.200" in next(r for r in rows if r.startswith("| SAEs")) and "200 tokens/s" in rows[-1]


def test_readme_crosscheck_numbers_are_those_of_the_committed_reports():
    """The README's cross-machine table and verdict count are copied from results/mini-crosscheck: recompute them."""
    import re
    import statistics

    readme = (ROOT / "README.md").read_text()
    cc = ROOT / "results" / "mini-crosscheck"
    for seed, folder in ((0, "mini"), (1, "mini-seed1"), (2, "mini-seed2")):
        d = json.loads((cc / folder / "reproduction.json").read_text())
        c, h, p = d["claims"], d["headlines"], d["picks"]
        shifts = [abs(r["shift_sd"]) for r in h if r["shift_sd"] is not None]
        cells = [f"{sum(r['agrees'] for r in c)}/{len(c)}", f"{sum(r['seen'] for r in c)}/{len(c)}",
                 f"{sum(bool(r['inside']) for r in h)}/{len(h)}", f"{statistics.median(shifts):.2f}",
                 f"{sum(x > 1 for x in shifts)}/{len(shifts)}", f"{sum(r['agrees'] for r in p)}/{len(p)}"]
        label = "0 (fresh clone)" if seed == 0 else str(seed)
        assert f"| {label} | {' | '.join(cells)} |" in readme
    same = re.search(r"The same verdict for (\d+) of (\d+) claims", (cc / "mini-seeds" / "SUMMARY.md").read_text())
    assert f"**{same[1]} of the {same[2]} claims get the same verdict on both machines**" in readme
