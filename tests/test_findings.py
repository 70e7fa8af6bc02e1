"""The generated "what we found vs the report" cells, and the custom-corpus language check."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from qscope_utils import findings as F

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("lo, hi, sign, want", [
    (-0.04, 0.16, +1, F.UNTESTABLE), (0.02, 0.10, +1, F.REPRODUCED), (-0.10, -0.02, +1, F.NOT_REPRODUCED),
    (-0.10, -0.02, -1, F.REPRODUCED), (0.0, 0.3, +1, F.UNTESTABLE),
])
def test_verdict_of_a_difference_follows_its_interval(lo, hi, sign, want):
    assert F.verdict_of_difference(lo, hi, sign) == want


def _sasft(lo: float, hi: float) -> dict:
    r = {"sft": {"value": 0.30}, "sasft": {"value": 0.20}, "diff": {"value": 0.10, "lo": lo, "hi": hi}}
    return {"test": {"zh": r}, "lambda_chosen_on_val": 1.0, "n_seeds": 4, "_meta": {"profile": "mini"}}


def test_sasft_cell_says_when_the_interval_includes_zero():
    md = F.render("06", _sasft(-0.04, 0.16))
    assert md.startswith("### What we found vs the report (§7, mini profile)")
    assert "zh: 0.30 → 0.20, paired reduction +0.100 [-0.040, +0.160] (includes 0): **untestable at this scale**" in md
    assert "Qwen3-1.7B-Base zh 0.81 → 0.22" in md                  # the report's number beside ours
    assert "(excludes 0): **reproduced**" in F.render("06", _sasft(0.02, 0.18))


def test_toxicity_cell_compares_f1_with_the_report_threshold():
    d = {"or_rule_at_top1diff_layer": {"es": {"K=1": {"f1": 0.5, "f1_ci95": [0.4, 0.6], "layer": 1},
                                              "K=10": {"f1": 0.68, "f1_ci95": [0.62, 0.73], "layer": 1}},
                                       "en": {"K=5": {"f1": 0.95, "f1_ci95": [0.92, 0.97], "layer": 3}}},
         "data_efficiency_macro_f1": [{"fraction": 0.1, "K": 1, "ratio_to_full": 0.99},
                                      {"fraction": 0.5, "K": 1, "ratio_to_full": 0.5}]}
    md = F.render("04", d)
    assert "es 0.68 [0.62, 0.73] (K=10, layer 1; the interval excludes 0.90): **not reproduced**" in md
    assert "en 0.95 [0.92, 0.97] (K=5, layer 3; the interval excludes 0.90): **reproduced**" in md
    assert "K=1: 99% (means over resamples): **reproduced**" in md


def test_toxicity_cell_reports_the_k_the_notebook_chose_not_the_argmax():
    ks = {"K=1": {"f1": 0.5, "f1_ci95": [0.4, 0.6], "layer": 1}, "K=2": {"f1": 0.66, "f1_ci95": [0.6, 0.72], "layer": 1},
          "K=10": {"f1": 0.68, "f1_ci95": [0.62, 0.73], "layer": 1}}
    d = {"or_rule_at_top1diff_layer": {"es": ks}, "k_selection": {"es": {"pick": "K=2", "argmax": "K=10"}},
         "data_efficiency_macro_f1": []}
    assert F.chosen_k(d, "es") == ("K=2", ks["K=2"]) and F.chosen_k(d, "es", "argmax") == ("K=10", ks["K=10"])
    assert "es 0.66 [0.60, 0.72] (K=2, layer 1;" in F.render("04", d)
    assert F.chosen_k({"or_rule_at_top1diff_layer": {"es": ks}}, "es")[0] == "K=10"   # older summaries: argmax


def test_dapo_cell_calls_the_claim_untestable_when_nothing_loops():
    arm = lambda acc, lo, hi, stress: {"repeat_task": {"ratio": 0.0, "lo": 0.0, "hi": 0.0},  # noqa: E731
                                       "repeat_stress": {"ratio": stress, "lo": stress, "hi": stress},
                                       "acc_greedy": {"mean": acc, "lo": lo, "hi": hi}}
    d = {"feature": 7, "layer": 2, "arms": {"before RL": arm(0.02, 0.0, 0.05, 0.4),
                                            "vanilla DAPO": arm(0.05, 0.02, 0.09, 0.2),
                                            "DAPO + SAE rollouts": arm(0.03, 0.01, 0.05, 0.0)}}
    md = F.render("07", d)
    assert "never loops on its own" in md and md.count(F.UNTESTABLE) == 2
    assert "DAPO + SAE rollouts 0.00 [0.00, 0.00]" in md


def test_a_summary_missing_fields_gives_a_message_not_a_crash():
    assert "The summary lacks 'mid_layer_fvu'" in F.render("01", {})


def test_committed_mini_summaries_render_with_numbers_and_verdicts():
    for nn in F.FINDINGS:
        p = ROOT / "results" / "mini" / f"{nn}_summary.json"
        if not p.exists():
            continue
        md = F.render(nn, json.loads(p.read_text()))
        assert "lacks" not in md, (nn, md)
        assert re.search(r"\*\*(reproduced|not reproduced|untestable at this scale)", md), (nn, md)


def test_every_section_notebook_ends_with_its_findings_cell_and_checks_languages_first():
    for src in sorted((ROOT / "notebooks" / "src").glob("0[1-7]_*.py")):
        nn = src.name[:2]
        cells = [c for c in src.read_text().split("# %%") if c.strip()]
        assert f'Markdown(for_notebook("{nn}", profile))' in cells[-1], src.name
        params = next(i for i, c in enumerate(cells) if c.startswith(' tags=["parameters"]'))
        assert f'require_languages(profile, "{nn}")' in cells[params + 1], src.name


# --- custom corpus: languages checked up front ---------------------------------------------------

def _corpus(root: Path, docs: list[dict], user: str | None = "/somewhere/corpus") -> None:
    d = root / "smoke" / "corpus"
    d.mkdir(parents=True)
    (d / "docs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    (d / "manifest.json").write_text(json.dumps({"user_corpus_dir": user, "sources": []}))


def _doc(lang, label=None, split="train"):
    return {"text": f"a {lang} text", "lang": lang, "source": f"s-{lang}", "label": label, "split": split}


def test_require_languages_names_notebook_and_missing_language(tmp_path, monkeypatch):
    from qscope_utils.mini.corpus import CorpusSourceError
    from qscope_utils.texts import require_languages

    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path))
    _corpus(tmp_path, [_doc("en"), _doc("zh"), _doc("es", "offensive"), _doc("es", "clean"), _doc("it", "clean")])
    require_languages("smoke", "01")                                # needs nothing
    require_languages("smoke", "04")                                # es carries both labels
    require_languages("paper", "02")                                # paper reads the hub: no check
    with pytest.raises(CorpusSourceError, match=r"notebook 02 needs lzh in the smoke corpus.*QSCOPE_CORPUS_DIR="):
        require_languages("smoke", "02")
    with pytest.raises(CorpusSourceError, match=r"notebook 05 needs it \(with 'offensive' and 'clean' documents\)"):
        require_languages("smoke", "05")


def test_require_languages_is_silent_before_the_corpus_is_built(tmp_path, monkeypatch):
    from qscope_utils.texts import require_languages

    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path))
    require_languages("smoke", "06")                                # the loaders say what to build


def _synth(a_only_nat: int, b_only_nat: int, p_nat: float, p_rand: float = 0.001) -> dict:
    pair = lambda a, b, p: {"both": 1, "a_only": a, "b_only": b, "neither": 0, "n": 1 + a + b, "mcnemar_p": p}  # noqa: E731
    return {"n_targets": 40, "seed_coverage_pct": 70.0, "n_missing": 12, "target_set": "pool_rare",
            "matched_budget": 40, "coverage_at_matched_budget_pct": {"feature synthesis": 95.0, "natural sampling": 80.0},
            "missing_covered_at_matched_budget": {"feature synthesis": 10, "natural sampling": 3, "random synthesis": 1},
            "paired_missing_at_matched_budget": {"feature vs natural": pair(a_only_nat, b_only_nat, p_nat),
                                                 "feature vs random": pair(9, 0, p_rand)},
            "downstream": {"sae": {}}, "_meta": {"profile": "mini"}}


def test_synthesis_cell_uses_the_paired_mcnemar_over_missing_targets():
    md = F.render("05", _synth(7, 0, 0.0156))
    assert "Of the 12 targets the seed set misses (target set pool_rare, 40 targets)" in md
    assert "feature synthesis 10, natural sampling 3, random synthesis 1" in md
    assert "feature vs natural: 7 vs 0 discordant, McNemar p=0.0156" in md and md.rstrip().endswith("**reproduced**.")
    assert F.render("05", _synth(3, 1, 0.625)).rstrip().endswith("**untestable at this scale**.")   # right way, noise
    assert F.render("05", _synth(1, 3, 0.625)).rstrip().endswith("**not reproduced**.")            # natural covers more
    assert F.render("05", _synth(7, 0, 0.0156, p_rand=0.2)).rstrip().endswith("**untestable at this scale**.")


def test_dapo_cell_judges_the_drop_in_the_pre_registered_regime():
    def arm(r, lo, hi):
        return {"repeat_task": {"ratio": r, "lo": lo, "hi": hi, "n_prompts": 150, "n_samples": 1},
                "repeat_stress": {"ratio": 0.3, "lo": 0.25, "hi": 0.35},
                "acc_greedy": {"mean": 0.03, "lo": 0.01, "hi": 0.05}}
    reg = {"temperature": 0.0, "max_new_tokens": 96, "min_new_tokens": 96, "label": "greedy, 96 tokens, end-of-text after 96"}
    d = {"feature": 7, "layer": 2, "eval_regime": reg, "regime_rule": {"rule": "closest to band", "band": [0.3, 0.7]},
         "arms": {"before RL": arm(0.15, 0.1, 0.2), "vanilla DAPO": arm(0.2, 0.14, 0.26),
                  "DAPO + SAE rollouts": arm(0.05, 0.02, 0.09)}}
    md = F.render("07", d)
    assert "in the evaluation regime chosen before training (greedy, 96 tokens, end-of-text after 96; closest to band" in md
    assert "DAPO + SAE rollouts 0.05 [0.02, 0.09]: **reproduced**" in md
    d["arms"]["DAPO + SAE rollouts"] = arm(0.35, 0.28, 0.42)           # the SAE arm loops MORE: reversed
    assert "0.35 [0.28, 0.42]: **not reproduced**" in F.render("07", d)
    d["arms"]["DAPO + SAE rollouts"] = arm(0.18, 0.12, 0.24)           # overlapping intervals
    assert "(SAE arm vs vanilla: intervals overlap): **untestable at this scale**" in F.render("07", d)
