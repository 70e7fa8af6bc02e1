"""Steering evaluation (qscope_utils.steer_eval): metrics with known answers, bootstrap, NLL, the
classicalness classifier, paired generation on the tiny model, and the notebook on the smoke profile."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest_mini import smoke_scope  # noqa: F401  (fixture)
from conftest_sources import dataset_hub  # noqa: F401
from qscope_utils import steer_eval as se
from qscope_utils.sae import TopKSAE


# ----------------------------------------------------------------------------- metrics
def test_script_metrics_known_values():
    m = se.script_metrics(["hello world", "hi 你好", "你好，世界", "123 !", ""])
    assert list(m.has_script) == [0, 1, 1, 0, 0]
    assert m.script_share.tolist() == pytest.approx([0, 2 / 4, 1, 0, 0])
    m2 = se.script_metrics(["Привет hi"], script={"Cyrillic"})
    assert m2.script_share[0] == pytest.approx(6 / 8)


def test_style_stats_and_normalize():
    s = se.style_stats("学而时习之，不亦说乎。有朋自远方来")
    assert s["n_han"] == 15 and s["function_share"] == pytest.approx(2 / 15)
    assert s["clause_len"] == pytest.approx(np.mean([6, 5, 4]))
    assert np.isnan(se.style_stats("no chinese")["function_share"])
    z = se.normalize_zh("《静夜思》\n作者：李白\n床前明月光，疑是地上霜。\n    -- 《菜根谭》\nabc 12")
    assert z == "床前明月光，疑是地上霜。"
    w = se.zh_windows(["床前明月光疑是地上霜举头望明月"], size=5)
    assert w == ["床前明月光", "疑是地上霜", "举头望明月"]


def test_cluster_bootstrap_known_answers():
    est, lo, hi = se.cluster_bootstrap(np.full((10, 3), 0.5), n_boot=200)
    assert (est, lo, hi) == (0.5, 0.5, 0.5)
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=(400, 2))
    est, lo, hi = se.cluster_bootstrap(x, n_boot=1000)
    assert lo < x.mean() < hi and est == pytest.approx(x.mean())
    assert 0.09 < hi - lo < 0.2            # ~ 2 * 1.96 * 1 / sqrt(800) = 0.139
    x[0, 0] = np.nan
    assert se.cluster_bootstrap(x, n_boot=100)[0] == pytest.approx(np.nanmean(x))
    d, dlo, dhi = se.paired_diff_bootstrap(np.zeros((50, 2)), np.ones((50, 2)), n_boot=100)
    assert (d, dlo, dhi) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        se.paired_diff_bootstrap(np.zeros((5, 2)), np.zeros((5, 3)))
    assert all(np.isnan(se.cluster_bootstrap(np.full((3, 2), np.nan))))


def _fake_runs(effect: float, n_prompts=30, seeds=(0, 1), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for cond, shift in (("baseline", 0.0), ("add-1", effect)):
        for p in range(n_prompts):
            for s in seeds:
                base = float(rng.random() < 0.6)
                rows.append({"condition": cond, "alpha": -1.0 if shift else 0.0, "multiplier": 1.0 if shift else 0.0,
                             "prompt_id": p, "seed": s, "has_script": max(base - (1 if shift else 0) * (rng.random() < effect), 0.0)})
    return pd.DataFrame(rows)


def test_summarise_detects_a_real_effect_and_not_a_null_one():
    strong = se.summarise(_fake_runs(0.9), ["has_script"], n_boot=500).set_index("condition")
    assert strong.loc["add-1", "significant"] and strong.loc["add-1", "diff"] < 0
    assert not strong.loc["baseline", "significant"] and strong.loc["baseline", "diff"] == 0
    null = se.summarise(_fake_runs(0.0), ["has_script"], n_boot=500).set_index("condition")
    assert null.loc["add-1", "diff_lo"] <= 0 <= null.loc["add-1", "diff_hi"]
    with pytest.raises(ValueError, match="baseline"):
        se.summarise(_fake_runs(0.5)[lambda d: d.condition != "baseline"], ["has_script"])


def _sweep(rows: list[tuple[str, float, str, float, float]]) -> pd.DataFrame:
    """A hand-made summarise() table: (condition, alpha, metric, diff, se) -> 95% interval diff ± 1.96 se."""
    out = []
    for cond, alpha, metric, d, s in rows:
        lo, hi = d - 1.959964 * s, d + 1.959964 * s
        out.append({"condition": cond, "alpha": alpha, "multiplier": abs(alpha), "metric": metric, "n": 100,
                    "mean": 0.5 + d, "lo": 0.4 + d, "hi": 0.6 + d, "diff": d, "diff_lo": lo, "diff_hi": hi,
                    "significant": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(out)


# suppression sweep: has_script change (SE 0.03 each) and NLL cost per alpha; the argmax is -8 (-0.30),
# -4 (-0.28) is within one SE of it, -2 (-0.20) is not; clamp rows are never candidates
SUPPRESS = [("baseline", 0.0, "has_script", 0.0, 0.0), ("add-2", -2.0, "has_script", -0.20, 0.03),
            ("add-4", -4.0, "has_script", -0.28, 0.03), ("add-8", -8.0, "has_script", -0.30, 0.03),
            ("clamp=0", 0.0, "has_script", -0.50, 0.03),
            ("baseline", 0.0, "nll", 0.0, 0.0), ("add-2", -2.0, "nll", 0.05, 0.04), ("add-4", -4.0, "nll", 0.20, 0.04),
            ("add-8", -8.0, "nll", 0.90, 0.05), ("clamp=0", 0.0, "nll", 0.0, 0.04)]


def test_pick_alpha_one_se_rule_differs_from_argmax_and_is_recorded_beside_it():
    r = se.pick_alpha(_sweep(SUPPRESS), "has_script", "down")
    assert r["argmax_steered"]["condition"] == "add-8"
    assert r["best_steered"]["condition"] == "add-4" and r["best_steered"]["alpha"] == -4.0
    assert r["mildest_significant"]["condition"] == "add-2"
    assert "one standard error" in r["selection_rule"] and "nll" not in r["selection_rule"]
    assert set(r["best_steered"]) == {"condition", "alpha", "mean", "lo", "hi", "diff", "diff_lo", "diff_hi",
                                      "significant"}
    # the NLL budget removes -8 (cost 0.90): best is now -4 (-0.28); -2 (-0.20) is still > 1 SE away
    r = se.pick_alpha(_sweep(SUPPRESS), "has_script", "down", cost="nll", max_cost=0.25)
    assert r["argmax_steered"]["condition"] == "add-4" and r["best_steered"]["condition"] == "add-4"
    assert "nll change is <= 0.25" in r["selection_rule"]
    # a budget nothing meets: the cheapest alpha alone
    assert se.pick_alpha(_sweep(SUPPRESS), "has_script", "down", cost="nll", max_cost=0.01)[
        "best_steered"]["condition"] == "add-2"
    # activation ("up"): the weakest alpha within one SE of the largest increase
    up = _sweep([("baseline", 0.0, "p", 0.0, 0.0), ("add+1", 1.0, "p", 0.05, 0.02), ("add+2", 2.0, "p", 0.20, 0.04),
                 ("add+4", 4.0, "p", 0.23, 0.04), ("add+8", 8.0, "p", 0.10, 0.04)])
    assert se.pick_alpha(up, "p", "up")["best_steered"]["condition"] == "add+2"
    assert se.pick_alpha(up, "p", "up")["argmax_steered"]["condition"] == "add+4"
    with pytest.raises(ValueError, match="'down' or 'up'"):
        se.pick_alpha(up, "p", "more")
    with pytest.raises(ValueError, match="cost"):
        se.pick_alpha(up, "p", "up", cost="nll", max_cost=0.2)
    assert se.pick_alpha(up, "missing", "up")["best_steered"]["condition"] == "none"


def test_pick_alpha_does_not_flip_with_5th_digit_noise_where_argmax_does():
    tie = [("baseline", 0.0, "has_script", 0.0, 0.0), ("add-2", -2.0, "has_script", -0.10, 0.03),
           ("add-4", -4.0, "has_script", -0.25, 0.03), ("add-8", -8.0, "has_script", -0.25, 0.03)]
    picks = {}
    for eps in (-1e-5, 1e-5):   # add-8 slightly better, then slightly worse than add-4
        rows = [(c, a, m, d + (eps if c == "add-8" else 0.0), s) for c, a, m, d, s in tie]
        r = se.pick_alpha(_sweep(rows), "has_script", "down")
        picks[eps] = (r["argmax_steered"]["condition"], r["best_steered"]["condition"])
    assert picks[-1e-5][0] == "add-8" and picks[1e-5][0] == "add-4"        # the argmax flips
    assert picks[-1e-5][1] == picks[1e-5][1] == "add-4"                     # the rule does not


def test_english_prompts_cycle_cues():
    texts = [f"This is English sentence number {i} with enough words." for i in range(10)]
    df = se.english_prompts(texts, 8, seed=0)
    assert len(df) == 8 and list(df.prompt_id) == list(range(8))
    assert list(df.cue[:4]) == list(se.CUES)
    assert all(p.endswith(se.CUES[c]) for p, c in zip(df.prompt, df.cue))
    with pytest.raises(ValueError, match="English"):
        se.english_prompts(["short"], 4)


def test_config_profiles():
    p = se.SteerConfig.for_profile("paper")
    assert (p.zh_feature, p.lzh_feature, p.alpha_scale) == (6159, 36398, 1.0)
    assert se.SteerConfig.for_profile("mini", layer=3).layer == 3
    assert se.middle_layer(36) == 18 and se.middle_layer(4) == 2
    with pytest.raises(ValueError, match="unknown profile"):
        se.SteerConfig.for_profile("huge")
    with pytest.raises(ValueError, match="never fires"):
        se.alpha_scale_from_contrast({"feature": 1, "mean_pos": 0.0, "rate_pos": 0.0})
    assert se.alpha_scale_from_contrast({"mean_pos": 0.2, "rate_pos": 0.1}) == pytest.approx(2.0)


def test_paper_texts_need_dataset_ids():
    from qscope_utils.profiles import get_profile

    from qscope_utils.sources import SourceNotAvailable

    with pytest.raises(SourceNotAvailable, match="set classical_dataset .*JSONL file with a 'text' column"):
        se.load_case_texts(get_profile("paper"), se.SteerConfig.for_profile("paper"))


# ----------------------------------------------------------------------------- classifier
CLASSICAL = ["学而时习之不亦说乎有朋自远方来不亦乐乎人不知而不愠不亦君子乎", "知之为知之不知为不知是知也",
             "三人行必有我师焉择其善者而从之其不善者而改之", "逝者如斯夫不舍昼夜", "君子坦荡荡小人长戚戚",
             "温故而知新可以为师矣", "岁寒然后知松柏之后凋也", "敏而好学不耻下问是以谓之文也"] * 3
MODERN = ["我今天早上去学校的时候看见了一只很可爱的小狗", "他们正在讨论明天要不要一起去看电影",
          "这个问题其实没有你想的那么复杂我们可以慢慢来", "妈妈说晚饭已经做好了让我们赶快回家",
          "我觉得这本书写得非常好你也应该看一看", "公司最近在招聘新的员工工作还是挺忙的",
          "下雨了我们还是在家里看电视吧", "你能不能帮我把这个箱子搬到楼上去"] * 3


def test_classifier_learns_and_reports_heldout_accuracy():
    clf = se.ClassicalnessClassifier(window=8, seed=0).fit(CLASSICAL[:16], MODERN[:16])
    ev = clf.evaluate(CLASSICAL[16:], MODERN[16:])
    assert ev["accuracy"] >= 0.75 and ev["n_classical"] > 0 and ev["n_modern"] > 0
    p = clf.predict_proba(["学而时习之不亦说乎", "我们明天一起去看电影吧", "English only text"])
    assert p[0] > 0.5 > p[1] and np.isnan(p[2])
    with pytest.raises(RuntimeError, match="fit"):
        se.ClassicalnessClassifier().predict_proba(["之乎者也"])
    with pytest.raises(ValueError, match="too little"):
        se.ClassicalnessClassifier().fit(["ab"], ["cd"])


# ----------------------------------------------------------------------------- generation & NLL on the tiny model
def _sae_for(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_size
    W_dec = torch.randn(d, 16, generator=g)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    return TopKSAE.from_state_dict({"W_enc": W_dec.T.contiguous(), "b_enc": torch.zeros(16), "W_dec": W_dec,
                                    "b_dec": torch.zeros(d)}, k=4)


def test_run_conditions_paired_and_steering_changes_output(tiny_model):
    model, tok = tiny_model
    sae = _sae_for(model)
    prompts = ["The quick brown", "床前明月"]
    conds = [se.BASELINE, se.additive(1, sae, 0, 0.0, 0.0, name="zero"), se.additive(1, sae, 0, 50.0, 1.0),
             se.clamped(1, sae, [0, 1])]
    df = se.run_conditions(model, tok, prompts, [0, 1], conds, max_new_tokens=6, progress=False)
    assert len(df) == len(conds) * 2 * 2
    by = {c: g.sort_values(["seed", "prompt_id"]).continuation.tolist() for c, g in df.groupby("condition")}
    assert by["baseline"] == by["zero"]                      # same seeds, zero vector: identical samples
    assert by["baseline"] != by["add+50"]                    # a large push changes them
    again = se.run_conditions(model, tok, prompts, [0, 1], [se.BASELINE], max_new_tokens=6, progress=False)
    assert again.continuation.tolist() == df[df.condition == "baseline"].continuation.tolist()
    assert set(df.columns) >= {"condition", "alpha", "multiplier", "prompt_id", "seed", "continuation", "ids"}


def test_continuation_nll_matches_manual(tiny_model):
    model, tok = tiny_model
    pre = [tok("The quick")["input_ids"], tok("床前明月光")["input_ids"]]
    cont = [tok(" brown fox")["input_ids"], []]
    nll = se.continuation_nll(model, pre, cont, batch_size=2)
    ids = torch.tensor([pre[0] + cont[0]])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0], -1)
    p = len(pre[0])
    manual = -np.mean([float(logp[p - 1 + i, t]) for i, t in enumerate(cont[0])])
    assert nll[0] == pytest.approx(manual, rel=1e-4) and np.isnan(nll[1])
    with pytest.raises(ValueError, match="prefixes"):
        se.continuation_nll(model, pre, cont[:1])


# ----------------------------------------------------------------------------- notebook on smoke
def test_notebook_runs_on_smoke(smoke_scope, tmp_path, monkeypatch):
    from qscope_utils.paths import results_dir

    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path / "results"))     # never into the repo's results/
    from qscope_utils.runner import list_notebooks, run_notebook

    (nb,) = list_notebooks(["02"])
    t0 = time.perf_counter()
    run_notebook(nb, "smoke")
    took = time.perf_counter() - t0
    out = results_dir("smoke")
    for name in ("02_case1_summary.csv", "02_case2_summary.csv", "02_examples.csv", "02_summary.json",
                 "02_case1_sweep.png", "02_case2_sweep.png", "02_dashboards.png", "02_dashboards.txt"):
        assert (out / name).exists(), name
    rec = json.loads((out / "02_summary.json").read_text())
    assert rec["_meta"]["seed"] == 0 and isinstance(rec["zh_feature"], int) and isinstance(rec["lzh_feature"], int)
    assert 0.0 <= rec["case2"]["classifier_heldout"]["accuracy"] <= 1.0
    s1 = pd.read_csv(out / "02_case1_summary.csv")
    assert {"baseline", "clamp=0"} <= set(s1.condition)
    # the recorded operating point is the one-SE rule's pick on the saved sweep, the argmax beside it
    want = se.pick_alpha(s1, "has_script", "down", cost="nll", max_cost=rec["config"]["max_nll_cost"])
    got = rec["case1"]["has_script"]
    assert got["best_steered"]["condition"] == want["best_steered"]["condition"] != "none"
    assert got["argmax_steered"]["condition"] == want["argmax_steered"]["condition"]
    assert got["selection_rule"] == want["selection_rule"]
    assert "argmax_steered" in rec["case2"]["p_classical"]
    assert took < 180, f"smoke notebook took {took:.0f} s"


def test_paper_path_pieces(dataset_hub, tmp_path):
    """The paper profile's ids fit a W64K-shaped SAE, and its data path reads the configured datasets."""
    from qscope_utils.profiles import get_profile
    from qscope_utils.sources.chinese_text import CLASSICAL, MODERN

    lzh = CLASSICAL.write_miniature(tmp_path / "lzh", n_rows=6) / CLASSICAL.data_files
    zh = MODERN.write_miniature(tmp_path / "zh", n_rows=6) / MODERN.data_files
    dataset_hub(["wikitext"], n_rows=16)
    cfg = se.SteerConfig.for_profile("paper", classical_dataset=str(lzh), modern_dataset=str(zh), n_discovery_texts=3,
                                     n_cs_prompts=1)
    sae = TopKSAE(8, 65536, 50)
    for f in (cfg.zh_feature, cfg.lzh_feature):
        c = se.additive(18, sae, f, -cfg.suppress_multipliers[-1] * cfg.alpha_scale, cfg.suppress_multipliers[-1])
        assert c.alpha == -100.0 and c.name == "add-100"
    with pytest.raises(IndexError):
        se.additive(18, TopKSAE(8, 32768, 50), cfg.lzh_feature, 5.0)   # 36398 needs a 64K SAE
    d = se.load_case_texts(get_profile("paper"), cfg)
    assert len(d["lzh"]) == 3 and len(d["lzh_heldout"]) == 3 and len(d["zh"]) == 3
    assert all("之" in t or "乎" in t or "也" in t or "本" in t or "已" in t for t in d["lzh"] + d["lzh_heldout"])
    assert set(d["zh"] + d["zh_heldout"]) <= {r["text"] for r in MODERN.mini_rows("default", "train", 6)}
    # English prompts: WikiText validation paragraphs only (no blank / heading rows), 4 x n_cs_prompts
    assert len(d["english"]) == 4 and all(len(t) >= 40 and not t.startswith("=") for t in d["english"])
    assert d["other"]["en"]
