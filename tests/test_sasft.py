"""§7 SASFT: the code-switch detector on constructed strings, the bootstrap, nu on synthetic
activations, the penalty (zero below alpha, gradient only into the model, SAE frozen, equal to
the SAE's own pre-activations) and notebook 06 on smoke (the TRL trainer: test_sasft_trainer.py)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import make_sae_state
from conftest_mini import smoke_scope  # noqa: F401  (session fixture)
from qscope_utils import codeswitch as cs
from qscope_utils import sasft
from qscope_utils.hooks import capture_residuals
from qscope_utils.sae import TopKSAE


# ----------------------------------------------------------------------------- detector
@pytest.mark.parametrize("ch, script", [
    ("a", "Latin"), ("é", "Latin"), ("中", "Han"), ("々", "Han"), ("Ж", "Cyrillic"), ("한", "Hangul"),
    ("ひ", "Hiragana"), ("カ", "Katakana"), ("ﾀ", "Katakana"), ("ب", "Arabic"), ("λ", "Greek"), ("7", "Common"),
    ("，", "Common"), ("。", "Common"), (" ", "Common"), ("×", "Common"),
])
def test_script_of(ch, script):
    assert cs.script_of(ch) == script


def test_detector_on_constructed_strings():
    assert not cs.code_switched("The weather is nice today, isn't it?", "zh")
    assert cs.code_switched("The weather is nice 今天 today", "zh")
    assert cs.code_switched("I said привет to him", "ru")
    assert not cs.code_switched("I said privet to him", "ru")
    assert cs.code_switched("see ファイル for details", "ja")
    assert not cs.code_switched("see 文件 for details", "ja")        # Han alone is not kana
    assert cs.code_switched("안녕 means hello", "ko")
    assert not cs.code_switched("Café déjà vu — «naïve»", "ru")      # Latin diacritics and punctuation
    assert not cs.code_switched("x = 1, y = 2。", "zh")              # CJK punctuation is Common
    assert cs.code_switched("a 中 b", "zh", min_chars=1) and not cs.code_switched("a 中 b", "zh", min_chars=2)
    shares = cs.script_shares("ab中Ж!")
    assert shares == pytest.approx({"Latin": 0.5, "Han": 0.25, "Cyrillic": 0.25})
    assert cs.script_shares("123 !?") == {}
    assert cs.contains_script("abc д", ["Han", "Cyrillic"])
    np.testing.assert_array_equal(cs.code_switch_flags(["hi", "hi 中"], "zh"), [False, True])
    with pytest.raises(ValueError, match="Latin"):
        cs.code_switched("hello", "fr")
    with pytest.raises(KeyError, match="LANG_SCRIPT"):
        cs.code_switched("hello", "xx")
    with pytest.raises(ValueError):
        cs.script_of("ab")


def test_bootstrap_ratio_and_paired_diff():
    a = np.array([[1, 1, 1], [1, 0, 1], [0, 0, 1], [1, 1, 1]], dtype=bool)
    r = cs.bootstrap_ratio(a, n_boot=1000, seed=0)
    assert r.value == pytest.approx(9 / 12) and r.lo <= r.value <= r.hi and (r.n_prompts, r.n_seeds) == (4, 3)
    assert cs.bootstrap_ratio(np.zeros((5, 2)), n_boot=100).hi == 0.0          # degenerate: no spread
    d = cs.paired_bootstrap_diff(a, np.zeros_like(a), n_boot=1000, seed=0)
    assert d.value == pytest.approx(0.75) and d.lo > 0                          # every resample > 0
    same = cs.paired_bootstrap_diff(a, a, n_boot=200)
    assert same.lo == same.hi == 0.0                                            # pairing cancels exactly
    with pytest.raises(ValueError, match="shape"):
        cs.paired_bootstrap_diff(a, a[:2])
    with pytest.raises(ValueError, match="n_prompts"):
        cs.bootstrap_ratio(np.zeros(4))


# ----------------------------------------------------------------------------- nu and selection
def test_monolinguality_on_synthetic_means():
    means = {"en": torch.tensor([1.0, 0.0, 0.5, 0.2]), "zh": torch.tensor([0.0, 3.0, 0.5, 0.2]),
             "ru": torch.tensor([0.0, 0.0, 0.5, 2.2])}
    nu = sasft.monolinguality(means)
    assert nu["zh"][1] == pytest.approx(3.0)                  # 3 - mean(0, 0)
    assert nu["en"][0] == pytest.approx(1.0)
    assert nu["ru"][3] == pytest.approx(2.2 - 0.2)
    assert torch.allclose(nu["zh"][2], torch.tensor(0.0))     # shared feature: nu 0 everywhere
    with pytest.raises(ValueError, match="two languages"):
        sasft.monolinguality({"en": means["en"]})


def _stats(layers=(2, 3), d=16):
    """Planted per-language stats: feature 5 is Chinese, 9 Russian; 7 fires a bit on zh but more on all."""
    out = {}
    for lang in ("en", "zh", "ru"):
        out[lang] = {}
        for l in layers:
            mean = torch.full((d,), 0.1)
            mean[7] = 0.5
            if lang == "zh":
                mean[5], mean[7] = 2.0, 0.8
            if lang == "ru":
                mean[9] = 1.5
            pre = mean - 1.0
            out[lang][l] = {"mean": mean, "mean_pre": pre, "rate": (mean > 0.2).float(), "n_tokens": 100}
    return out


def test_select_language_features_finds_planted_and_alpha():
    tab = sasft.select_language_features(_stats(), ["zh", "ru"], [2, 3], top_k=2, alpha_langs=["en"])
    assert len(tab) == 8 and set(tab.layer) == {2, 3}
    top = tab.sort_values("nu", ascending=False).groupby(["target", "layer"]).head(1)
    assert set(top[top.target == "zh"].feature) == {5} and set(top[top.target == "ru"].feature) == {9}
    row = tab[(tab.target == "zh") & (tab.feature == 5)].iloc[0]
    assert row.alpha_en == pytest.approx(0.1 - 1.0)           # mean pre-activation on English
    with pytest.raises(KeyError, match="no statistics"):
        sasft.select_language_features(_stats(), ["ko"], [2])
    assert sasft.default_layers(28) == [26, 27] and sasft.default_layers(4, [1]) == [1]
    with pytest.raises(IndexError):
        sasft.default_layers(4, [4])


# ----------------------------------------------------------------------------- the penalty
def _penalty_setup(tiny_model, alpha: float, layers=(1, 2)):
    model, tok = tiny_model
    d = model.config.hidden_size
    saes = {l: TopKSAE.from_state_dict(make_sae_state(d, 64, seed=l), k=8) for l in layers}
    for s in saes.values():
        s.requires_grad_(True)          # the penalty must freeze them itself
    rows = [{"layer": l, "feature": f, "target": "zh", "alpha_en": alpha} for l in layers for f in (3, 11)]
    pen = sasft.SASFTPenalty(saes, pd.DataFrame(rows))
    enc = sasft.encode_examples(tok, [sasft.SFTExample("Bonjour tout le monde.", "The quick brown fox.", "fr", "en"),
                                      sasft.SFTExample("Привет", "Sparse autoencoders find features.", "ru", "en")])
    return model.train(), tok, saes, pen, enc


def test_penalty_matches_sae_pre_activations(tiny_model):
    model, tok, saes, pen, enc = _penalty_setup(tiny_model, alpha=0.0)
    with pen.attach(model):
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        pre = pen.pre_acts()
    hs = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [1, 2])
    want = torch.cat([saes[l].pre_acts(hs[l])[..., [3, 11]] for l in (1, 2)], dim=-1)
    torch.testing.assert_close(pre.detach(), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="attach"):
        pen.pre_acts()                                         # cleared on exit


def test_penalty_zero_below_alpha(tiny_model):
    model, tok, saes, pen, enc = _penalty_setup(tiny_model, alpha=1e6)
    with pen.attach(model):
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        p = pen.loss(enc["predict_mask"], ["en", "en"])
    assert float(p.detach()) == 0.0
    p.backward()
    assert all(q.grad is None or float(q.grad.abs().max()) == 0.0 for q in model.parameters())


def test_penalty_gradient_reaches_model_only(tiny_model):
    model, tok, saes, pen, enc = _penalty_setup(tiny_model, alpha=-1e3)      # every pre-act above alpha
    before = {l: {k: v.detach().clone() for k, v in s.state_dict().items()} for l, s in saes.items()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with pen.attach(model):
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        pre = pen.pre_acts().detach()
        p = pen.loss(enc["predict_mask"], ["en", "en"])
    m = enc["predict_mask"]
    n = int(m.sum())                       # official: per layer sum / (tokens x 2 features + 1), summed over layers
    want = sum(float((pre[m][:, sl] + 1e3).sum()) / (n * 2 + 1) for sl in (slice(0, 2), slice(2, 4)))
    assert float(p.detach()) == pytest.approx(want, rel=1e-5)
    p.backward()
    opt.step()
    assert all(not q.requires_grad and q.grad is None for s in saes.values() for q in s.parameters())
    for l, s in saes.items():
        for k, v in s.state_dict().items():
            assert torch.equal(v, before[l][k])
    blocks = model.model.layers
    assert blocks[0].mlp.down_proj.weight.grad.abs().max() > 0       # below the hooked layers: reached
    assert blocks[2].mlp.down_proj.weight.grad.abs().max() > 0
    # features of the response language itself are not applied ("x from non-L data")
    with pen.attach(model):
        model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        pen.alpha["zh"] = pen.alpha["en"]
        assert float(pen.loss(enc["predict_mask"], ["zh", "zh"])) == 0.0
    with pytest.raises(KeyError, match="alpha"):
        pen.alphas_for(["ko"])


def test_encode_examples_masks(tiny_model):
    _, tok = tiny_model
    ex = [sasft.SFTExample("Bonjour", "Hello there", "fr", "en"), sasft.SFTExample("Привет, как дела?", "Hi", "ru", "en")]
    enc = sasft.encode_examples(tok, ex)
    for i, e in enumerate(ex):
        n_p = len(tok(sasft.format_prompt(e.prompt))["input_ids"])
        n_r = len(tok(e.response + sasft.CHAT_END, add_special_tokens=False)["input_ids"])
        rm = enc["response_mask"][i]
        assert int(rm.sum()) == n_r and rm[:n_p].sum() == 0 and bool(rm[n_p])
        assert int(enc["predict_mask"][i].sum()) == n_r and bool(enc["predict_mask"][i, n_p - 1])
        assert (enc["labels"][i] != -100).sum() == n_r


def test_respond_cuts_at_im_end_and_is_seeded(tiny_model):
    model, tok = tiny_model
    eos_before = model.generation_config.eos_token_id
    r1 = sasft.respond(model, tok, ["Bonjour", "Привет"], seeds=[0, 1], max_new_tokens=5)
    r2 = sasft.respond(model, tok, ["Bonjour", "Привет"], seeds=[0, 1], max_new_tokens=5)
    assert r1 == r2 and len(r1) == 2 and len(r1[0]) == 2
    assert model.generation_config.eos_token_id == eos_before              # restored


def test_perplexity_and_response_ce(tiny_model):
    model, tok = tiny_model
    ppl = sasft.perplexity_by_lang(model, tok, {"en": ["The quick brown fox."], "ru": ["Привет, как дела?"]})
    assert set(ppl) == {"en", "ru"} and all(1 < v < 10 * model.config.vocab_size for v in ppl.values())
    ce = sasft.response_ce(model, tok, [sasft.SFTExample("Bonjour", "Hello", "fr", "en")])
    assert 0 < ce < 20


def test_jsonl_loaders_and_table4(tmp_path):
    import json
    f = tmp_path / "sft.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"p{i}", "response": f"r{i}", "response_lang": "en"}) for i in range(3)))
    ex = sasft.load_sft_jsonl(f)
    assert len(ex) == 3 and ex[0].response_lang == "en"
    g = tmp_path / "texts.jsonl"
    g.write_text("\n".join(json.dumps({"text": t, "lang": l}) for t, l in [("a", "en"), ("中", "zh"), ("b", "en")]))
    assert sasft.load_texts_jsonl(g, n=1) == {"en": ["a"], "zh": ["中"]}
    with pytest.raises(FileNotFoundError, match="not public"):
        sasft.load_sft_jsonl(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x"}))
    from qscope_utils.sources import SchemaError, SourceNotAvailable

    with pytest.raises(SchemaError, match=r"bad.jsonl:1 lacks fields \['response', 'response_lang'\]"):
        sasft.load_sft_jsonl(bad)
    with pytest.raises(SourceNotAvailable, match="set `sft_file`"):
        sasft.load_sft_jsonl(sasft.SASFTConfig.for_profile("paper").sft_file)   # no default file: a required input
    r = cs.RatioCI(0.5, 0.4, 0.6, 10, 2)
    t = sasft.table4({"ja": {"base": r, "sft": r, "sasft": r, "diff": r}}, paper_target={"ja": "ko"})
    assert t.iloc[0]["paper Qwen3-1.7B-Base SFT->SASFT"] == "0.36 -> 0.00"
    assert t.iloc[0]["paper Qwen3-8B-Base SFT->SASFT"] == "0.43 -> 0.07"


def test_config_profiles():
    mini, smoke, paper = (sasft.SASFTConfig.for_profile(p) for p in ("mini", "smoke", "paper"))
    assert 0.0 in mini.lambdas and 0.0 in smoke.lambdas and paper.top_k == 2 and paper.layers is None
    assert paper.targets == ("zh", "ru", "ko") and set(paper.lambdas) >= {5e-4, 1e-3}
    assert smoke.steps < mini.steps
    # the official schedule is the paper default (train.py of arXiv:2507.14894)
    assert (paper.lr, paper.effective_batch, paper.batch_size, paper.weight_decay, paper.scheduler, paper.max_length,
            paper.warmup) == (5e-5, 32, 1, 0.1, "cosine", 2048, 100)
    assert sasft.SASFTConfig.for_profile("paper", paper_model="Qwen3-8B-Base").lr == 5e-6
    with pytest.raises(ValueError):
        sasft.SASFTConfig.for_profile("nope")


# ----------------------------------------------------------------------------- design and lambda rule
def test_cut_design_known_answers():
    z = 2.801585                                              # z_0.975 + z_0.8
    # every prompt [1, 0]: m = 0.5, no between-prompt variance; q = 0.25:
    # var = (0.25 + 0.1875) / 4 = 0.109375
    d = cs.cut_design(np.tile([1, 0], (10, 1)), n_samples=4, cut=0.5)
    assert (d.ratio, d.between_var, d.effect) == (0.5, 0.0, 0.25)
    assert d.sd_diff == pytest.approx(0.109375 ** 0.5)
    assert d.n_needed == 14                                   # ceil((z * 0.3307 / 0.25)^2) = ceil(13.73)
    assert d.n_used == 10 and d.mde == pytest.approx(z * 0.109375 ** 0.5 / 10 ** 0.5, rel=1e-5)
    # half the prompts always switch, half never: v = 0.25, E[p(1-p)] = 0, E[q(1-q)] = 0.25 - 0.125:
    # var = 0.25 * 0.25 + 0.125 / 8 = 0.078125
    f = np.r_[np.ones((5, 4)), np.zeros((5, 4))]
    d = cs.cut_design(f, n_samples=8, cut=0.5, n_used=40)
    assert d.between_var == pytest.approx(0.25) and d.sd_diff == pytest.approx(0.078125 ** 0.5)
    assert d.n_needed == 10 and d.n_used == 40               # ceil((z * 0.2795 / 0.25)^2) = ceil(9.81)
    # more samples per prompt shrink only the sampling part
    assert cs.cut_design(np.tile([1, 0], (10, 1)), 16).n_needed < 14
    with pytest.raises(ValueError, match=">= 2 samples"):
        cs.cut_design(np.ones((5, 1)), 4)
    with pytest.raises(ValueError, match="cut must lie"):
        cs.cut_design(np.ones((5, 2)), 4, cut=0)


def test_design_effect_and_cluster_bootstrap():
    assert cs.design_effect([0.1, 0.5, 0.2, 0.0], ["a", "b", "c", "d"]) == pytest.approx(1.0)   # singletons
    # two documents of identical windows: V_c = 2/1 * (1 + 1) / 16 = 0.25, V_srs = (1/3) / 4: ratio 3
    assert cs.design_effect([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(3.0)
    f = np.tile([[1, 0, 0, 0]], (4, 1))
    d1, d3 = cs.cut_design(f, 8), cs.cut_design(np.r_[f[:2], 1 - f[2:]], 8, groups=["a", "a", "b", "b"])
    assert d1.design_effect == 1.0 and d3.design_effect > 1.0
    # documents resampled whole: all windows of one doc agree, documents differ -> wider than prompt-level
    flags = np.repeat(np.eye(2, dtype=bool)[:, :1].repeat(4, 1), 10, axis=0)          # 10 windows of doc A = 1, of B = 0
    g = np.repeat(["A", "B"], 10)
    wide, narrow = cs.bootstrap_ratio(flags, 400, 0, groups=g), cs.bootstrap_ratio(flags, 400, 0)
    assert wide.value == narrow.value == 0.5 and (wide.hi - wide.lo) > 2 * (narrow.hi - narrow.lo)
    # distinct labels: the prompt-level draw, bit-identical to no groups
    assert cs.bootstrap_ratio(flags, 400, 0, groups=np.arange(20)) == narrow
    assert cs.paired_bootstrap_diff(flags, ~flags, 400, 0, groups=g).hi > cs.paired_bootstrap_diff(flags, ~flags, 400, 0).hi


def test_cut_design_matches_simulation():
    """The predicted SD of a per-prompt paired difference equals the simulated one (beta-distributed
    per-prompt rates, pilot of 4 samples, design of 8 samples, SASFT = half the SFT rate)."""
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 4.0, 20000)                            # skewed: most prompts rarely switch
    pilot = rng.random((p.size, 4)) < p[:, None]
    d = cs.cut_design(pilot, n_samples=8, cut=0.5)
    a = (rng.random((p.size, 8)) < p[:, None]).mean(1)
    b = (rng.random((p.size, 8)) < 0.5 * p[:, None]).mean(1)
    assert d.sd_diff == pytest.approx(float(np.std(a - b)), rel=0.03)
    assert d.between_var == pytest.approx(float(p.var()), rel=0.05)
    assert d.ratio == pytest.approx(float(p.mean()), rel=0.02)


def _val(rows):
    se95 = 2 * 1.959964                                       # interval width per unit SE
    return pd.DataFrame([{"model": f"SASFT[zh] λ={l:g}", "target": "zh", "ratio": r, "lo": r - se * se95 / 2,
                          "hi": r + se * se95 / 2} for l, r, se in rows])


def test_pick_lambda_one_se_rule():
    names = {l: f"SASFT[zh] λ={l:g}" for l in (0.0, 1.0, 10.0)}
    # 10 is lower, but by less than its SE (0.20 - 0.16 < 0.05): the smaller lambda stays (argmin would flip)
    assert sasft.pick_lambda(_val([(1.0, 0.20, 0.05), (10.0, 0.16, 0.05)]), (10.0, 0.0, 1.0), names) == 1.0
    # better by more than one SE: the larger lambda
    assert sasft.pick_lambda(_val([(1.0, 0.20, 0.05), (10.0, 0.14, 0.05)]), (0.0, 1.0, 10.0), names) == 10.0
    sc = sasft.lambda_scores(_val([(1.0, 0.20, 0.05), (10.0, 0.14, 0.03)]), (10.0, 1.0), names)
    assert list(sc["lambda"]) == [1.0, 10.0] and sc.se.tolist() == pytest.approx([0.05, 0.03], rel=1e-4)
    with pytest.raises(ValueError, match="no lambda > 0"):
        sasft.pick_lambda(_val([(1.0, 0.2, 0.05)]), (0.0,), names)
    with pytest.raises(KeyError, match="evaluate it on val"):
        sasft.pick_lambda(_val([(1.0, 0.2, 0.05)]), (1.0, 10.0), names)


def test_eval_frame_parts_by_document():
    f = sasft.eval_frame({"ja": [["a1", "a2", "a3"], "b1", ["", "c2"], ["d1", "d2"]], "ru": ["x", "y", "z"]}, n=6)
    ja = f[f.lang == "ja"]
    assert ja.prompt.tolist() == ["a1", "a2", "a3", "b1", "c2", "d1"]       # capped at n, empty prompts dropped
    assert ja.part.tolist() == ["val"] * 3 + ["test", "val", "test"]      # all prompts of a document share its part
    assert ja.doc.tolist() == [0, 0, 0, 1, 2, 3]
    assert f[f.lang == "ru"].part.tolist() == ["val", "test", "val"]      # one prompt per document: alternating
    third = sasft.eval_frame({"ru": list("abcdefg")}, n=6, val_every=3)              # every third document is val
    assert third.part.tolist() == ["val", "test", "test", "val", "test", "test"]
    with pytest.raises(ValueError, match="evaluation documents"):
        sasft.eval_frame({"ja": [["a1", "a2"]]}, n=4)
    with pytest.raises(ValueError, match="val_every must be >= 2"):
        sasft.eval_frame({"ru": list("abc")}, n=3, val_every=1)


def test_prompt_windows(tiny_model):
    _, tok = tiny_model
    text = "one two three four five six seven eight nine ten eleven"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    w = sasft.prompt_windows(tok, text, 4, 100)
    assert len(w) == len(ids) // 4 and len(ids) % 4 and w[0] == sasft.clip_tokens(tok, text, 4)       # only full later windows
    assert w[1] == tok.decode(ids[4:8]).strip()
    assert sasft.prompt_windows(tok, text, 4, 1) == [w[0]] and sasft.prompt_windows(tok, text, 4, 3) == w[:3]
    with pytest.raises(ValueError, match="k >= 1"):
        sasft.prompt_windows(tok, text, 4, 0)


def test_evaluate_model_on_one_target(tiny_model, one_thread):
    model, tok = tiny_model
    cfg = sasft.SASFTConfig.for_profile("smoke", targets=("zh", "ru"), n_seeds=2, max_new_tokens=3, n_boot=50)
    prompts = sasft.eval_frame({"zh": ["你好", "中文"], "ru": ["Привет", "мир"]}, 2)
    ev = sasft.evaluate_model(model, tok, prompts, cfg, targets=["ru"])
    assert set(ev["flags"]) == {"ru"} and ev["flags"]["ru"].shape == (4, 2)
    assert ev["responses"][:2] == [None, None] and all(len(r) == 2 for r in ev["responses"][2:])
    tab = sasft.ratio_table({"SASFT[ru] λ=1": ev}, prompts, cfg, None)
    assert tab.target.tolist() == ["ru"] and tab.n_prompts.tolist() == [2]


def test_power_rows_from_design_block():
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("power", Path(__file__).resolve().parents[1] / "scripts" / "power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    v = {"value": 0.1, "lo": 0.0, "hi": 0.2, "n_prompts": 100, "n_seeds": 8}
    pw = cs.cut_design(np.tile([1, 0, 0, 0], (100, 2)), n_samples=8, n_used=100).as_dict()
    rows = power.p06({"max_new_tokens": 48, "test": {"zh": {"sft": v, "sasft": v, "diff": v}},
                      "power_50pct_cut": {"zh": pw}})
    r = rows[0]
    assert (r["n"], r["mde"], r["n_needed"], r["target_effect"]) == (100, pw["mde"], pw["n_needed"], 0.125)
    assert r["se"] == pytest.approx(pw["sd_diff"] / 10) and "8 samples of 48 new tokens" in r["design"]
    old = power.p06({"test": {"zh": {"sft": v, "sasft": v, "diff": v}}})[0]         # summaries without the block
    assert old["n"] == 100 and old["target_effect"] == pytest.approx(0.05)


# ----------------------------------------------------------------------------- notebook
@pytest.mark.slow
def test_notebook_06_runs_on_smoke(run_notebook_smoke):
    import json

    out, executed = run_notebook_smoke("06")
    for name in ("06_features.csv", "06_code_switch.csv", "06_table4.csv", "06_perplexity.csv", "06_train_log.csv",
                 "06_code_switch_vs_lambda.png", "06_training.png", "06_summary.json"):
        assert (out / name).exists(), name
    s = json.loads((out / "06_summary.json").read_text())
    assert s["_meta"]["seed"] == 0 and 0.0 in s["lambdas"]
    # one SASFT run per target language and lambda > 0, plus the lambda = 0 control
    assert s["runs"] == ["SFT"] + [f"SASFT[{t}] λ={l:g}" for t in s["targets"] for l in s["lambdas"] if l > 0]
    log = pd.read_csv(out / "06_train_log.csv")
    assert set(log.target) == {"all", *s["targets"]} and log.penalty.notna().all()
    t4 = pd.read_csv(out / "06_table4.csv")
    assert list(t4.target) == s["targets"] and t4["lambda"].gt(0).all()


def test_sweep_runs_order_and_slugs():
    from qscope_utils.sasft_sweep import sweep_runs

    runs = sweep_runs(("zh", "ru"), (0.0, 1.0, 10.0))
    assert [r.name for r in runs] == ["base", "SFT", "SASFT[zh] λ=1", "SASFT[zh] λ=10", "SASFT[ru] λ=1", "SASFT[ru] λ=10"]
    assert [r.slug for r in runs] == ["base", "sft", "sasft_zh_1", "sasft_zh_10", "sasft_ru_1", "sasft_ru_10"]
    assert runs[0].lam is None and runs[1].lam == 0.0 and runs[1].target is None
