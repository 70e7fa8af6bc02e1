"""Feature discovery (qscope_utils.discovery) and Unicode script detection (qscope_utils.scripts_unicode).

Known-answer setup: a "probe" SAE whose feature 0 reads the direction separating the tiny model's
residuals on Han tokens from the other tokens, all other features reading weak random directions.
Both discovery methods must then put feature 0 first.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qscope_utils import discovery as disc
from qscope_utils.hooks import capture_residuals, iter_batches
from qscope_utils.sae import TopKSAE
from qscope_utils.scripts_unicode import COMMON, LANG_SCRIPT, contains_script, script_of, script_shares

LAYER = 1
EN = ["The quick brown fox jumps over the lazy dog.", "Sparse autoencoders find features in residual streams.",
      "Bonjour tout le monde.", "def f(x): return x"]
ZH = ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。", "明月光，地上霜。"]


# ----------------------------------------------------------------------------- scripts_unicode
@pytest.mark.parametrize("char,script", [("中", "Han"), ("々", "Han"), ("𠀀", "Han"), ("a", "Latin"), ("Ａ", "Latin"),
                                          ("é", "Latin"), ("Д", "Cyrillic"), ("가", "Hangul"), ("が", "Hiragana"),
                                          ("カ", "Katakana"), ("ｶ", "Katakana"), ("ا", "Arabic"), ("α", "Greek"),
                                          ("，", COMMON), ("。", COMMON), ("1", COMMON), (" ", COMMON), ("\n", COMMON)])
def test_script_of(char, script):
    assert script_of(char) == script


def test_script_of_rejects_strings():
    with pytest.raises(ValueError, match="one character"):
        script_of("ab")


def test_script_shares_and_contains():
    assert script_shares("中文 ok，123") == {"Han": 0.5, "Latin": 0.5}
    assert script_shares("123 ，。") == {}
    sh = script_shares("ab中", include_common=True)
    assert sh == {"Latin": 2 / 3, "Han": 1 / 3}
    assert contains_script("hello 世界", "Han") and not contains_script("hello, world。", "Han")
    assert contains_script("Привет 你好", {"Hangul", "Cyrillic"})
    assert not contains_script("a中b", "Han", min_chars=2)
    assert LANG_SCRIPT["ru"] == {"Cyrillic"} and LANG_SCRIPT["zh"] == {"Han"}
    with pytest.raises(ValueError, match="unknown script"):
        contains_script("x", "HAN")


# ----------------------------------------------------------------------------- token masks
def test_token_script_masks_marks_han_tokens_only(tiny_model):
    _, tok = tiny_model
    text = "Hello world 明月光 ok"
    (m,) = disc.token_script_masks(tok, [text], "Han")
    offs = tok(text, return_offsets_mapping=True)["offset_mapping"]
    assert len(m) == len(offs) and m.any() and not m.all()
    for (s, e), flag in zip(offs, m):
        assert flag == contains_script(text[s:e], "Han")
    (m2,) = disc.token_script_masks(tok, [text], "Han", start_chars=[len(text)])
    assert not m2.any()


def test_render_context_shows_whole_characters(tiny_model):
    _, tok = tiny_model
    text = "The moon 明月光 shines"
    enc = tok(text, return_offsets_mapping=True)
    pos = next(i for i, (s, e) in enumerate(enc["offset_mapping"]) if contains_script(text[s:e], "Han"))
    ctx = disc.render_context(tok, text, pos)
    assert "[[" in ctx and "\ufffd" not in ctx and ctx.replace("[[", "").replace("]]", "") in text


# ----------------------------------------------------------------------------- known-answer discovery
def _residuals(model, tok, texts):
    """Han-token and other-token residuals at LAYER (position 0 excluded)."""
    masks = disc.token_script_masks(tok, texts, "Han")
    han, other = [], []
    for start, enc in iter_batches(tok, texts, batch_size=8):
        h = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [LAYER])[LAYER]
        for r in range(h.shape[0]):
            n = int(enc["attention_mask"][r].sum())
            m = masks[start + r][:n]
            for p in range(1, n):
                (han if m[p] else other).append(h[r, p])
    return torch.stack(han), torch.stack(other)


@pytest.fixture()
def probe_sae(tiny_model):
    """SAE whose feature 0 fires on Han-token residuals (threshold between the two classes)."""
    model, tok = tiny_model
    han, other = _residuals(model, tok, ZH + [e + " " + z for e, z in zip(EN, ZH)] + EN)
    d = han.mean(0) - other.mean(0)
    d = d / d.norm()
    ph, po = han @ d, other @ d
    d_model, d_sae = d.shape[0], 64
    g = torch.Generator().manual_seed(0)
    W_enc = torch.randn(d_sae, d_model, generator=g) * 0.01
    W_enc[0] = d * 10
    b_enc = torch.zeros(d_sae)
    b_enc[0] = -10 * float(po.quantile(0.9))
    W_dec = torch.randn(d_model, d_sae, generator=g)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    sae = TopKSAE.from_state_dict({"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": torch.zeros(d_model)}, k=8)
    assert float(ph.mean()) > float(po.quantile(0.9)), "fixture: Han residuals do not separate on this direction"
    return sae


def test_rank_by_response_finds_the_han_feature(tiny_model, probe_sae):
    model, tok = tiny_model
    prompts = [e + " " for e in EN[:3]]
    texts = [p + z for p, z in zip(prompts, ZH)]
    for by in ("mean_on", "diff"):
        df = disc.rank_by_response(model, tok, probe_sae, LAYER, texts, "Han", start_chars=[len(p) for p in prompts],
                                   by=by, top=5, progress=False)
        assert int(df.feature.iloc[0]) == 0, df
        assert list(df["rank"]) == [1, 2, 3, 4, 5]
        assert df.attrs["n_target_tokens"] > 0 and df.attrs["n_other_tokens"] > 0
        assert df.loc[0, "rate_on"] > df.loc[0, "rate_off"]


def test_rank_by_response_errors_without_target_tokens(tiny_model, probe_sae):
    model, tok = tiny_model
    with pytest.raises(ValueError, match="nothing to rank"):
        disc.rank_by_response(model, tok, probe_sae, LAYER, EN, "Han", progress=False)
    with pytest.raises(ValueError, match="by="):
        disc.rank_by_response(model, tok, probe_sae, LAYER, ZH, "Han", by="max", progress=False)


def test_contrast_features_finds_the_han_feature(tiny_model, probe_sae):
    model, tok = tiny_model
    df = disc.contrast_features(model, tok, probe_sae, LAYER, ZH, EN, top=None, progress=False)
    assert len(df) == probe_sae.d_sae
    assert int(df.feature.iloc[0]) == 0
    assert np.all(np.diff(df["diff"].to_numpy()) <= 1e-12)            # sorted descending
    row = df.iloc[0]
    assert row["diff"] == pytest.approx(row.mean_pos - row.mean_neg)
    assert row.rate_pos > 0 and row.mean_neg < row.mean_pos
    with pytest.raises(ValueError, match="non-empty"):
        disc.contrast_features(model, tok, probe_sae, LAYER, ZH, [], progress=False)


def test_pick_feature_prefers_the_specific_one(tiny_model, probe_sae):
    import pandas as pd

    resp = pd.DataFrame({"rank": [1, 2, 3], "feature": [5, 0, 7]})
    con = pd.DataFrame({"rank": [1, 2, 3], "feature": [0, 7, 5], "diff": [2.0, 1.0, -0.5]})
    p = disc.pick_feature(resp, con, top=3)
    assert p["feature"] == 0 and p["response_rank"] == 2 and p["contrast_rank"] == 1
    assert p["runner_up"] == 7 and p["diff_margin"] == pytest.approx(0.5)      # (2.0 - 1.0) / 2.0
    assert disc.pick_feature(resp, con, top=1)["runner_up"] is None
    con2 = pd.DataFrame({"rank": [1, 2, 3], "feature": [4, 6, 9], "diff": [1.0, 0.9, 0.8],
                         "mean_pos": [1.5, 1.0, 0.9], "mean_neg": [0.5, 0.1, 0.1]})
    c = disc.pick_contrast(con2, min_ratio=2.0)
    assert (c["feature"], c["runner_up"], c["ratio"]) == (4, 6, pytest.approx(3.0))
    assert c["diff_margin"] == pytest.approx(0.1)
    assert disc.pick_contrast(con2, min_ratio=5.0)["feature"] == 6               # 4 fails the 5x cut
    assert disc.pick_feature(None, con)["feature"] == 0
    assert disc.pick_feature(resp, con, top=1)["feature"] == 5


def test_dashboards_text_and_png(tiny_model, probe_sae, tmp_path):
    model, tok = tiny_model
    ds = disc.feature_dashboards(model, tok, probe_sae, LAYER, [0, 3], {"zh": ZH, "en": EN}, n=4,
                                 labels={0: "Han probe"}, progress=False)
    assert [d.feature for d in ds] == [0, 3]
    d0 = ds[0]
    assert 0 < len(d0.contexts) <= 4 and all(r["lang"] == "zh" for r in d0.contexts)
    acts = [r["activation"] for r in d0.contexts]
    assert acts == sorted(acts, reverse=True)
    assert d0.by_lang["zh"] > d0.by_lang["en"]
    # profile equals the per-token mean computed by the shared reducer
    prof = disc.language_profile(model, tok, probe_sae, LAYER, {"zh": ZH}, [0], progress=False)
    from qscope_utils.features import mean_activations

    ref = mean_activations(model, tok, {LAYER: probe_sae}, ZH, progress=False)[LAYER]["mean"][0]
    assert prof.loc[0, "zh"] == pytest.approx(float(ref), rel=1e-5)
    txt = disc.format_dashboards(ds)
    assert "feature 0 (Han probe)" in txt and "[[" in txt
    fig = disc.plot_dashboards(ds, title="t")
    fig.savefig(tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000
