"""Fast checks of what the paper path needs besides data (issue #13): the test-only registry
override, notebook parameter parsing, single-pass layer loading in notebook 01, massive-norm token
exclusion, given-feature ranks (§3) and non-degenerate safety targets (§6)."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
G8 = "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50"


# ----------------------------------------------------------------------------- registry override
def test_registry_override_replaces_shapes_and_keeps_the_real_table(monkeypatch):
    from qscope_utils import registry as R

    real = R.get_group(G8)
    monkeypatch.setitem(R.REGISTRY, G8, real)       # restored after the test
    R.apply_override({G8: {"d_model": 32, "d_sae": 37888}})
    g = R.get_group(G8)
    assert (g.d_model, g.d_sae, g.k, g.n_layers, g.backbone) == (32, 37888, 50, 36, "Qwen/Qwen3-8B-Base")
    assert R.official_group(G8).d_sae == 65536 and R.official_group(G8).d_model == 4096
    with pytest.raises(KeyError, match="allowed keys"):
        R.apply_override({G8: {"backbone": "x"}})
    with pytest.raises(KeyError, match="not an official group"):
        R.apply_override({"Qwen/SAE-Res-Nope-W1K-L0_8": {"d_model": 4}})


def test_registry_override_reaches_a_separate_process(tmp_path):
    spec = tmp_path / "override.json"
    spec.write_text(json.dumps({G8: {"d_model": 16, "d_sae": 2048}}))
    code = "from qscope_utils.registry import get_group as g; x = g('%s'); print(x.d_model, x.d_sae)" % G8
    env = {**os.environ, "QSCOPE_REGISTRY_OVERRIDE": str(spec), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["16", "2048"]
    env.pop("QSCOPE_REGISTRY_OVERRIDE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["4096", "65536"]


# ----------------------------------------------------------------------------- parameters
def test_list_parameters_parse_from_papermill_strings_and_yaml():
    from qscope_utils.params import as_int_list, as_list

    assert as_int_list("[18]") == [18]          # what `papermill -p layers '[18]'` passes
    assert as_int_list([18, 20]) == [18, 20]    # what `-y 'layers: [18, 20]'` passes
    assert as_int_list("18, 20") == [18, 20] and as_int_list(7) == [7] and as_int_list(None) is None
    assert as_list("[en, ru]") == ["en", "ru"] and as_list(("a",)) == ["a"]
    with pytest.raises(ValueError, match="list of integers"):
        as_int_list("[a, b]", "layers")


def test_config_override_checks_names_and_makes_tuples():
    from qscope_utils.params import given, override_config
    from qscope_utils.safety import SafetyConfig

    cfg = override_config(SafetyConfig(), {"natural_column": "text", "budget_grid": [0, 2]})
    assert cfg.natural_column == "text" and cfg.budget_grid == (0, 2)
    assert override_config(SafetyConfig(), "{tau: 0.25}").tau == 0.25
    with pytest.raises(KeyError, match="no field"):
        override_config(SafetyConfig(), {"natrual_column": "text"})
    assert given(a=None, b=0, c="x") == {"b": 0, "c": "x"}


def test_runner_parameters_merge_yaml_and_pairs():
    from qscope_utils.runner import RunnerError, parse_parameters

    p = parse_parameters([("layer", "[3]"), ("name", "en"), ("n_texts", "4")], "layers: [18, 20]\nn_texts: 8")
    assert p == {"layers": [18, 20], "n_texts": 4, "layer": [3], "name": "en"}
    with pytest.raises(RunnerError, match="mapping"):
        parse_parameters(None, "[1, 2]")


# ----------------------------------------------------------------------------- notebook 01
def test_evaluate_group_reads_each_layer_file_once_and_gives_norm_quantiles(tiny_model, tiny_group, tmp_path,
                                                                             monkeypatch):
    from conftest import write_group
    from qscope_utils import sae as sae_mod
    from qscope_utils.profiles import get_profile
    from qscope_utils.recon import evaluate_group
    from qscope_utils.scope import Scope

    model, tok = tiny_model
    d = write_group(tmp_path / "g", tiny_group.n_layers, tiny_group.d_model, tiny_group.d_sae)
    reads = []
    real = sae_mod.load_layer_file
    monkeypatch.setattr(sae_mod, "load_layer_file", lambda path, **kw: reads.append(Path(path).name) or real(path, **kw))
    loader = sae_mod.SAELoader(tiny_group.repo_id, source=str(d), cache_size=1)
    scope = Scope(get_profile("smoke"), model, tok, loader)
    df = evaluate_group(scope, ["The quick brown fox.", "Привет, как дела?"], layers=[0, 1, 2], with_loss=False)
    assert sorted(reads) == ["layer0.sae.pt", "layer1.sae.pt", "layer2.sae.pt"]
    W = torch.load(d / "layer1.sae.pt", weights_only=True)["W_dec"].norm(dim=0)
    row = df[df.layer == 1].iloc[0]
    assert row.dec_norm_q50 == pytest.approx(float(W.quantile(0.5)), rel=1e-5)
    assert row.dec_norm_q05 <= row.dec_norm_q50 <= row.dec_norm_q95
    # the notebook draws the norm boxes from the table: it never touches scope.saes after the pass
    src = (ROOT / "notebooks" / "src" / "01_sae_loading.py").read_text()
    assert "scope.saes[" not in src and ".numpy()" not in src


# ----------------------------------------------------------------------------- massive-norm exclusion
def test_massive_norm_token_is_excluded_from_pooled_statistics(tiny_model, tiny_group):
    """One token's residual is scaled x1000 at the hooked layer: with norm_ratio it is dropped, and the
    pooled mean activation equals the hand-computed mean over the remaining tokens."""
    from conftest import make_sae_state
    from qscope_utils.features import mean_activations
    from qscope_utils.hooks import capture_residuals, decoder_layers, iter_batches
    from qscope_utils.profiles import get_profile, massive_norm_ratio
    from qscope_utils.sae import TopKSAE

    model, tok = tiny_model
    sae = TopKSAE.from_state_dict(make_sae_state(tiny_group.d_model, tiny_group.d_sae), k=8)
    texts = ["The quick brown fox jumps over the lazy dog.", "Sparse autoencoders find features."]
    L, spike = 1, (0, 3)

    def hook(_m, _i, out):
        h = out[0] if isinstance(out, tuple) else out
        if h.shape[1] > spike[1]:
            h[spike[0], spike[1]] *= 1000.0
        return out

    handle = decoder_layers(model)[L].register_forward_hook(hook)
    try:
        ratio = massive_norm_ratio(get_profile("paper"))
        assert ratio == 10.0 and massive_norm_ratio(get_profile("smoke")) is None
        got = mean_activations(model, tok, {L: sae}, texts, batch_size=8, max_length=32, progress=False,
                               norm_ratio=ratio)[L]
        keep_all = mean_activations(model, tok, {L: sae}, texts, batch_size=8, max_length=32, progress=False)[L]
        from qscope_utils.sasft import language_stats      # §7's per-language statistics pool the same way
        lang = language_stats(model, tok, {L: sae}, {"en": texts}, batch_size=8, max_length=32, progress=False,
                              norm_ratio=ratio)["en"][L]
        (_, enc), = list(iter_batches(tok, texts, batch_size=8, max_length=32))
        h = capture_residuals(model, enc["input_ids"], enc["attention_mask"], [L])[L]
    finally:
        handle.remove()
    am = enc["attention_mask"].bool().clone()
    am[:, 0] = False                              # position 0 (right padding: first real token)
    am[spike] = False                             # the massive token, by hand
    want = sae.encode(h[am].float()).double().mean(0)
    assert got["n_tokens"] == int(am.sum()) == keep_all["n_tokens"] - 1
    torch.testing.assert_close(got["mean"].double(), want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(keep_all["mean"].double(), want, atol=1e-4)
    assert lang["n_tokens"] == got["n_tokens"]
    torch.testing.assert_close(lang["mean"].double(), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- §3 given feature ids
def test_given_feature_rank_reports_rank_and_warns_when_not_selective():
    from qscope_utils.discovery import given_feature_rank

    t = pd.DataFrame({"rank": [1, 2, 3], "feature": [7, 6159, 9], "mean_pos": [3.0, 2.0, 0.1],
                      "mean_neg": [0.0, 0.5, 0.2]})
    r = given_feature_rank(6159, {"contrast": t}, layer=18, top=5, min_ratio=2.0)
    assert r["tables"]["contrast"]["rank"] == 2 and r["selective"] and r["warning"] is None
    r = given_feature_rank(9, {"contrast": t}, layer=18, top=5)
    assert not r["selective"] and "not selective at layer 18" in r["warning"]
    r = given_feature_rank(36398, {"contrast": t}, layer=18)
    assert r["tables"]["contrast"]["rank"] is None and r["warning"]


# ----------------------------------------------------------------------------- §6 targets
def test_seed_is_disjoint_from_discovery_so_t_miss_is_not_empty():
    """Every text fires its own feature (+ a shared unsafe one). Targets are ranked on discovery; the
    seed is drawn disjoint, so the unique features of unsafe discovery texts are exactly T_miss."""
    from qscope_utils import safety as S

    train = [S.LabelledText(f"{lab}-{i}", lab, "g") for lab in (S.UNSAFE, S.SAFE) for i in range(30)]
    cfg = S.SafetyConfig(n_seed_per_cell=10, n_discovery_per_cell=None, tau=0.5, min_unsafe_rate=0.0,
                          target_set="relevant", fire_quantile=None)   # the T_miss split logic, without a pool
    splits = S.split_pools(train, train[:4] + train[-4:], [], cfg)
    seed_txt, disc_txt = {x.text for x in splits.seed}, {x.text for x in splits.discovery}
    assert not seed_txt & disc_txt and len(seed_txt) == 20 and len(disc_txt) == 40
    fid = {x.text: i + 1 for i, x in enumerate(train)}            # feature 0: shared by unsafe texts

    def encode(texts):
        rows = [[0, fid[t]] if t.startswith(S.UNSAFE) else [fid[t]] for t in texts]
        r = [i for i, row in enumerate(rows) for _ in row]
        c = [f for row in rows for f in row]
        return sp.csr_matrix((np.ones(len(c), np.float32), (r, c)), shape=(len(texts), len(train) + 1))

    T, _, _ = S.discover_targets(encode, splits.discovery, cfg)
    miss = S.missing_targets(encode([x.text for x in splits.seed]), T.ids)
    want = {fid[x.text] for x in splits.discovery if x.label == S.UNSAFE}
    assert set(miss.tolist()) == want and 0 in set(T.ids.tolist()) and 0 not in set(miss.tolist())
    assert S.empty_miss_reason(len(T), len(miss), 20, cfg) is None
    assert "T_miss is empty" in S.empty_miss_reason(len(T), 0, 20, cfg)
    assert "T is empty" in S.empty_miss_reason(0, 0, 20, cfg)
