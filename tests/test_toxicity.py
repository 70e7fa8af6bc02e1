"""§5 toxicity classification: synthetic activations where the answer is known, split loaders on
fixtures, and a papermill run of notebook 04 on the smoke scope."""
from __future__ import annotations

import numpy as np
import pytest

from conftest_sources import dataset_hub  # noqa: F401
import scipy.sparse as sp

from qscope_utils import toxicity as tx
from qscope_utils import toxicity_data as td

D_SAE = 64


def synth_acts(labels, planted: dict[int, float], d_sae=D_SAE, bg_rate=0.25, seed=0, clean_rate=None):
    """(n, d_sae) CSR max activations: background features fire at random (rate ``bg_rate``,
    independent of the label); each planted feature f fires on toxic texts with probability
    planted[f] and on clean texts with probability ``clean_rate.get(f, 0)``."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels).astype(bool)
    A = (rng.random((len(y), d_sae)) < bg_rate) * rng.uniform(0.1, 2.0, (len(y), d_sae))
    for f, p in planted.items():
        A[:, f] = 0.0
        pc = (clean_rate or {}).get(f, 0.0)
        fire = np.where(y, rng.random(len(y)) < p, rng.random(len(y)) < pc)
        A[fire, f] = rng.uniform(0.5, 3.0, fire.sum())
    return sp.csr_matrix(A.astype(np.float32))


def balanced_labels(n_per_class, seed=0):
    y = np.array([1] * n_per_class + [0] * n_per_class, dtype=np.int8)
    return np.random.default_rng(seed).permutation(y)


def stream(acts: dict, chunk=37):
    """Chunks in the (group, start, {layer: CSR}) format of stream_max_activations."""
    layers = sorted(acts)
    n = acts[layers[0]].shape[0]
    for s in range(0, n, chunk):
        yield layers, s, {l: acts[l][s:s + chunk] for l in layers}


# ----------------------------------------------------------------------------- discovery + OR rule

def test_planted_feature_is_found_and_gives_perfect_f1():
    y_d, y_e = balanced_labels(200, 1), balanced_labels(60, 2)
    d = tx.discover_from_chunks(stream({0: synth_acts(y_d, {7: 1.0}, seed=3)}), y_d, D_SAE, [0], max_k=10)
    assert tx.top_features(d["delta"][0], 1).tolist() == [7]
    assert d["delta"][0][7] == pytest.approx(1.0)
    grid = tx.evaluate_layers(d["delta"], {0: synth_acts(y_e, {7: 1.0}, seed=4)}, y_e, ks=(1, 2, 5, 10))
    k1 = grid[grid.K == 1].iloc[0]
    assert k1.features == [7] and k1.f1 == 1.0 and k1.precision == 1.0 and k1.recall == 1.0
    # adding background features (Delta ~ 0) can only add false positives under the OR rule
    assert (grid.sort_values("K").f1.diff().dropna() <= 1e-12).all()
    assert grid[grid.K == 10].iloc[0].f1 < 1.0


def test_streaming_counts_equal_batch_delta_and_firing_uses_eps():
    y = balanced_labels(90, 5)
    A = synth_acts(y, {3: 0.8, 11: 0.4}, seed=6, clean_rate={11: 0.1})
    d = tx.discover_from_chunks(stream({2: A}, chunk=13), y, D_SAE, [2])
    np.testing.assert_allclose(d["delta"][2], tx.delta_scores(A, y), atol=1e-6)
    assert d["delta"][2][3] == pytest.approx(tx.delta_scores(A, y)[3]) and d["delta"][2][3] > 0.6
    # eps is a strict threshold on the max activation
    M = sp.csr_matrix(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert tx.fired(M, 0.5).toarray().tolist() == [[False, False, True]]
    assert tx.or_predict(M, [0, 1], eps=0.5).tolist() == [False]
    assert tx.or_predict(M, [0, 2], eps=0.5).tolist() == [True]
    assert tx.or_predict(M, [], eps=0.0).tolist() == [False]


def test_or_rule_is_any_selected_feature():
    M = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 2], [0, 0, 0, 0], [3, 0, 0, 1]], dtype=np.float32))
    assert tx.or_predict(M, [1]).tolist() == [True, False, False, False]
    assert tx.or_predict(M, [1, 3]).tolist() == [True, True, False, True]
    assert tx.or_predict(M, [2]).tolist() == [False] * 4


def test_prf_counts():
    m = tx.prf([1, 1, 0, 0, 1], [1, 0, 1, 0, 1])
    assert (m["tp"], m["fp"], m["fn"]) == (2, 1, 1)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert tx.prf([1, 0], [0, 0])["f1"] == 0.0
    lo, hi = tx.bootstrap_f1_ci(np.array([1, 0] * 50), np.array([1, 0] * 45 + [0, 1] * 5), n_boot=200)
    assert lo <= tx.prf(np.array([1, 0] * 50), np.array([1, 0] * 45 + [0, 1] * 5))["f1"] <= hi


def test_nested_subsets_are_balanced_and_nested():
    y = balanced_labels(100, 9)
    keys, masks = tx.nested_subsets(y, (0.1, 0.5, 1.0), n_repeats=2, seed=0)
    assert keys[0] == (1.0, 0) and masks[0].all()
    assert len(keys) == 1 + 2 * 2
    for (f, r), m in zip(keys, masks):
        assert (y[m] == 1).sum() == (y[m] == 0).sum() == int(np.ceil(f * 100))
    by = dict(zip(keys, masks))
    for r in range(2):
        assert not (by[(0.1, r)] & ~by[(0.5, r)]).any()     # 10% subset inside 50% subset
    assert (by[(0.1, 0)] != by[(0.1, 1)]).any()
    with pytest.raises(ValueError):
        tx.nested_subsets(y, (0.0,), 1)


# ----------------------------------------------------------------------------- layer choice

def _two_layer_result(lang="a", seed=0, planted=(7, 7), rates=(1.0, 0.6), n=150, n_eval=60, fractions=(1.0,),
                      n_repeats=1):
    y_d, y_e = balanced_labels(n, seed), balanced_labels(n_eval, seed + 1)
    disc = {l: synth_acts(y_d, {planted[l]: rates[l]}, seed=seed + 10 + l) for l in (0, 1)}
    ev = {l: synth_acts(y_e, {planted[l]: rates[l]}, seed=seed + 20 + l) for l in (0, 1)}
    d = tx.discover_from_chunks(stream(disc), y_d, D_SAE, [0, 1], fractions, n_repeats, max_k=10, seed=seed)
    return tx.LanguageResult(lang, [0, 1], d["delta"], d["p_toxic"], d["p_clean"], d["subset_keys"], d["subset_n"],
                             d["subset_top"], d["subset_top1"], ev, y_e, {}, y_d)


def test_top1_diff_picks_the_layer_with_the_cleanest_feature_and_agrees_with_heldout():
    r = _two_layer_result(rates=(0.6, 1.0))
    d = tx.top1_diff(r.delta)
    assert d[1] == pytest.approx(1.0) and d[0] < 0.8
    grid = tx.evaluate_layers(r.delta, r.eval_acts, r.y_eval, ks=(1, 2))
    agree = tx.layer_agreement(grid)
    row = agree[agree.K == 1].iloc[0]
    assert row.layer_top1diff == 1 and row.layer_best_heldout == 1 and row.agree and row.f1_at_top1diff == 1.0
    assert row.f1_regret == 0.0


def test_layer_agreement_reports_disagreement_and_regret():
    import pandas as pd

    grid = pd.DataFrame({"layer": [0, 1, 2], "K": [1, 1, 1], "d_l": [0.9, 0.5, 0.4], "f1": [0.6, 0.8, 0.7]})
    row = tx.layer_agreement(grid).iloc[0]
    assert row.layer_top1diff == 0 and row.layer_best_heldout == 1 and not row.agree
    assert row.f1_regret == pytest.approx(0.2)


def _ks(*rows):
    """{"K=k": {"f1", "f1_ci95"}} from (k, f1, se) with 95% intervals f1 ± 1.96 se."""
    return {f"K={k}": {"f1": f, "f1_ci95": [f - 1.959964 * s, f + 1.959964 * s], "layer": 1} for k, f, s in rows}


def test_pick_k_smallest_k_within_one_se_of_the_best_f1():
    # argmax is K=10 (0.70); K=5 (0.68) is within its SE 0.03, K=2 (0.60) is not: the rule picks K=5
    r = tx.pick_k(_ks((10, 0.70, 0.03), (1, 0.50, 0.03), (2, 0.60, 0.03), (5, 0.68, 0.03)))
    assert (r["pick"], r["argmax"]) == ("K=5", "K=10") and "smallest K" in r["rule"]
    # numeric order of K, not string order ("K=10" < "K=2" as strings)
    assert tx.pick_k(_ks((10, 0.70, 0.05), (2, 0.69, 0.05)))["pick"] == "K=2"
    with pytest.raises(ValueError, match="at least one"):
        tx.pick_k({})


def test_pick_k_does_not_flip_with_5th_digit_noise_where_argmax_does():
    out = {eps: tx.pick_k(_ks((1, 0.55, 0.03), (2, 0.66, 0.03), (5, 0.67, 0.03), (10, 0.67 + eps, 0.03)))
           for eps in (-1e-5, 1e-5)}
    assert out[-1e-5]["argmax"] == "K=5" and out[1e-5]["argmax"] == "K=10"   # the argmax flips
    assert out[-1e-5]["pick"] == out[1e-5]["pick"] == "K=2"                   # the rule does not


def test_layer_selection_margin_and_one_se_layer():
    # d: layer 2 best (0.30); layer 0 (0.28) within SE 0.03, layer 1 (0.20) not
    r = tx.layer_selection({0: 0.28, 1: 0.20, 2: 0.30}, {0: 0.03, 1: 0.03, 2: 0.03})
    assert (r["top1diff"], r["one_se"], r["runner_up"]) == (2, 0, 0)
    assert r["margin_se"] == pytest.approx(0.02 / 0.03)
    # an exact tie: top1-diff takes the lower layer, margin 0 (any noise can flip it)
    r = tx.layer_selection({0: 0.2275, 3: 0.2275}, {0: 0.02, 3: 0.02})
    assert (r["top1diff"], r["runner_up"], r["margin_se"]) == (0, 3, 0.0)
    assert tx.layer_selection({4: 0.5}, {4: 0.1})["runner_up"] is None


def test_top1_diff_se_is_the_binomial_se_of_the_top_feature():
    delta = np.array([0.1, 0.5, 0.2])
    pt, pc = np.array([0.3, 0.8, 0.4]), np.array([0.2, 0.3, 0.2])
    want = np.sqrt(0.8 * 0.2 / 400 + 0.3 * 0.7 / 100)
    assert tx.top1_diff_se(delta, pt, pc, n_toxic=400, n_clean=100) == pytest.approx(want)
    r = _two_layer_result(rates=(0.6, 1.0))
    sel = tx.language_layer_selection(r)
    assert sel["top1diff"] == 1 and sel["runner_up"] == 0 and sel["margin_se"] > 1


def test_multi_layer_or_composition_recovers_complementary_features():
    # layer 0 feature catches toxic texts with even index, layer 1 feature the odd ones: together F1 = 1
    y = np.array([1] * 40 + [0] * 40)
    A0, A1 = np.zeros((80, D_SAE), np.float32), np.zeros((80, D_SAE), np.float32)
    A0[0:40:2, 5] = 1.0
    A1[1:40:2, 9] = 1.0
    A1[0:40:4, 9] = 1.0                      # layer 1 slightly stronger so it ranks first
    acts = {0: sp.csr_matrix(A0), 1: sp.csr_matrix(A1)}
    deltas = {l: tx.delta_scores(acts[l], y) for l in acts}
    ml = tx.multi_layer_eval(deltas, acts, y, m_values=(1, 2, 5))
    assert ml.m.tolist() == [1, 2]
    assert ml.iloc[0].layers == [1] and ml.iloc[0].f1 < 1.0
    assert ml.iloc[1].features == [(1, 9), (0, 5)] and ml.iloc[1].f1 == 1.0


# ----------------------------------------------------------------------------- cross-lingual

def test_jaccard_values_and_table():
    assert tx.jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
    assert tx.jaccard([1], [2]) == 0.0 and tx.jaccard([], []) == 1.0
    da = np.zeros(20); da[[1, 2, 3]] = [3, 2, 1]
    db = np.zeros(20); db[[2, 3, 4]] = [3, 2, 1]
    dc = np.zeros(20); dc[[10, 11, 12]] = [3, 2, 1]
    tab = tx.jaccard_by_layer({"a": {0: da}, "b": {0: db}, "c": {0: dc}}, k=3)
    get = lambda a, b: tab[(tab.lang_a == a) & (tab.lang_b == b)].jaccard.item()
    assert get("a", "a") == 1.0 and get("a", "b") == pytest.approx(0.5) and get("a", "c") == 0.0
    assert get("b", "a") == get("a", "b")


def test_transfer_shared_feature_transfers_and_foreign_one_does_not():
    res = {"a": _two_layer_result("a", 0, planted=(7, 7), rates=(1.0, 1.0)),
           "b": _two_layer_result("b", 100, planted=(7, 7), rates=(1.0, 1.0)),
           "c": _two_layer_result("c", 200, planted=(30, 30), rates=(1.0, 1.0))}
    tab = tx.transfer_table(res, ks=(1,))
    f1 = {(r.source, r.target): r.f1 for r in tab.itertuples()}
    assert f1["a", "b"] == 1.0 and f1["b", "a"] == 1.0 and f1["c", "c"] == 1.0
    assert f1["a", "c"] < 0.6 and f1["c", "a"] < 0.6
    assert (tab[tab.source == tab.target].f1 == tab[tab.source == tab.target].f1_in_target).all()


def test_data_efficiency_table_has_every_fraction_and_full_data_matches_grid():
    r = _two_layer_result(rates=(1.0, 0.5), n=200, fractions=(0.1, 0.5, 1.0), n_repeats=2)
    tab = tx.data_efficiency_table({"a": r}, ks=(1, 5))
    assert sorted(tab.fraction.unique()) == [0.1, 0.5, 1.0]
    assert len(tab[(tab.fraction == 0.1) & (tab.K == 1)]) == 2
    assert tab[tab.fraction == 0.1].n_per_class.iloc[0] == 20
    full = tab[(tab.fraction == 1.0) & (tab.K == 1)].iloc[0]
    assert full.layer == 0 and full.f1 == 1.0
    # a feature that fires on every toxic and no clean text is found from 20 examples per class too
    assert (tab[(tab.K == 1)].f1 == 1.0).all()


# ----------------------------------------------------------------------------- baselines

def test_logreg_baseline_learns_a_linear_signal_on_dense_and_sparse_inputs():
    rng = np.random.default_rng(0)
    y = balanced_labels(100, 3)
    X = rng.normal(size=(200, 8)); X[:, 2] += 3.0 * y
    m = tx.logreg_eval(X[:150], y[:150], X[150:], y[150:])
    assert m["f1"] > 0.9
    A = synth_acts(y, {4: 1.0}, seed=1)
    ms = tx.logreg_eval(A[:150], y[:150], A[150:], y[150:])
    # a linear head on magnitudes misses weakly-firing toxic texts that the OR rule catches; still far above chance
    assert ms["f1"] > 0.8 and ms["precision"] == 1.0
    assert ms["C"] in (0.01, 0.1, 1, 10, 100)


# ----------------------------------------------------------------------------- data splits

def _fixture_dataset(n_tox=40, n_clean=40):
    datasets = pytest.importorskip("datasets")
    texts = [f"toxic text {i}" for i in range(n_tox)] + [f"clean text {i}" for i in range(n_clean)]
    return datasets.Dataset.from_dict({"text": texts, "toxic": [1] * n_tox + [0] * n_clean})


def test_splits_from_dataset_balanced_disjoint_and_seeded():
    ds = _fixture_dataset()
    s = td.splits_from_dataset(ds, "en", n_disc=20, n_eval=5, seed=1)
    assert s.sizes == {"disc_toxic": 20, "disc_clean": 20, "eval_toxic": 5, "eval_clean": 5}
    assert not set(s.disc_texts) & set(s.eval_texts)
    assert all(("toxic" in t) == bool(y) for t, y in zip(s.disc_texts + s.eval_texts,
                                                          np.r_[s.disc_labels, s.eval_labels]))
    again = td.splits_from_dataset(ds, "en", n_disc=20, n_eval=5, seed=1)
    other = td.splits_from_dataset(ds, "en", n_disc=20, n_eval=5, seed=2)
    assert again.disc_texts == s.disc_texts and other.disc_texts != s.disc_texts
    with pytest.raises(ValueError, match="on_short='warn'"):
        td.splits_from_dataset(ds, "en", n_disc=40, n_eval=5, on_short="raise")
    with pytest.warns(UserWarning, match="using 32 \\+ 8 per class"):
        small = td.splits_from_dataset(ds, "en", n_disc=40, n_eval=10)
    assert small.sizes == {"disc_toxic": 32, "disc_clean": 32, "eval_toxic": 8, "eval_clean": 8}
    with pytest.raises(KeyError, match="label_col"):
        td.splits_from_dataset(ds, "en", label_col="label")


def test_short_pool_after_dedupe_uses_what_exists_and_records_sizes():
    datasets = pytest.importorskip("datasets")
    # 30 toxic rows of which 22 unique (8 duplicates), 30 unique clean rows, 2 texts in both classes
    tox = [f"toxic {i}" for i in range(22)] + [f"toxic {i}" for i in range(8)]
    cln = [f"clean {i}" for i in range(28)] + ["toxic 0", "toxic 1"]
    ds = datasets.Dataset.from_dict({"text": tox + cln, "toxic": [1] * 30 + [0] * 30})
    with pytest.warns(UserWarning, match="20 toxic / 28 clean unique texts.*using 16 \\+ 4 per class"):
        s = td.splits_from_dataset(ds, "en", n_disc=20, n_eval=5, seed=0)
    assert s.sizes == {"disc_toxic": 16, "disc_clean": 16, "eval_toxic": 4, "eval_clean": 4}
    assert {k: s.info[k] for k in ("rows_toxic", "pool_toxic", "dropped_toxic", "pool_clean", "dropped_clean",
                                   "asked_disc", "n_disc", "n_eval", "short_pool")} == \
        {"rows_toxic": 30, "pool_toxic": 20, "dropped_toxic": 10, "pool_clean": 28, "dropped_clean": 2,
         "asked_disc": 20, "n_disc": 16, "n_eval": 4, "short_pool": True}
    assert "toxic 0" not in s.disc_texts + s.eval_texts           # ambiguous (in both classes): dropped


def test_paper_splits_read_textdetox_through_the_adapter(dataset_hub):
    from qscope_utils.sources import SchemaError
    from qscope_utils.sources.textdetox import SOURCE

    home = dataset_hub(["textdetox"], n_rows=12)                   # 6 toxic + 6 clean per language
    out = td.paper_splits(langs=("en", "zh", "hin"), n_disc=4, n_eval=2)
    assert set(out) == {"en", "zh", "hin"} and len(td.PAPER_LANGS) == 13 and set(td.PAPER_LANGS) < set(SOURCE.splits)
    assert out["zh"].sizes == {"disc_toxic": 4, "disc_clean": 4, "eval_toxic": 2, "eval_clean": 2}
    assert out["zh"].info["dataset"] == td.PAPER_DATASET and not out["zh"].info["short_pool"]
    assert any("你这个蠢货" in t for t in out["zh"].disc_texts + out["zh"].eval_texts)
    for f in home.rglob("tt-*.parquet"):                            # a 9-language revision lacks tt
        f.unlink()
    with pytest.raises(SchemaError, match="split 'tt'"):
        td.paper_splits(langs=("en", "tt"), n_disc=4, n_eval=2)


def test_mini_splits_use_only_real_corpus_labels():
    from qscope_utils.mini.corpus import corpus_dir, load_corpus

    if not (corpus_dir("smoke") / "docs.jsonl").exists():
        pytest.skip("smoke corpus not built")
    langs = td.labelled_languages("smoke")
    assert langs == ["es", "it"]
    splits = td.mini_splits("smoke", n_disc=30, n_eval=8, seed=0)
    for lang, s in splits.items():
        off = {d.text for d in load_corpus("smoke", lang=lang, label="offensive")}
        cln = {d.text for d in load_corpus("smoke", lang=lang, label="clean")}
        ho = {d.text for d in load_corpus("smoke", lang=lang, split="heldout")}
        for t, y in zip(s.disc_texts + s.eval_texts, np.r_[s.disc_labels, s.eval_labels]):
            assert t in (off if y else cln)
        assert set(s.eval_texts) <= ho and not set(s.disc_texts) & ho
        assert s.sizes["disc_toxic"] == s.sizes["disc_clean"] and s.sizes["eval_toxic"] == s.sizes["eval_clean"]
    # the offensive Spanish texts are Spanish (the corpus decodes Debian's ROT13 files)
    assert sum(" que " in t or " de " in t for t in splits["es"].disc_texts[:30]) > 10
    with pytest.raises(ValueError, match="never invented"):
        td.mini_splits("smoke", langs=["en"])
    tab = td.label_table("smoke")
    assert set(tab[tab.label != "none"].lang) == {"es", "it"}


# ----------------------------------------------------------------------------- notebook

@pytest.mark.slow
def test_notebook_04_runs_on_smoke(run_notebook_smoke, smoke_scope):
    import json

    import pandas as pd

    out, executed = run_notebook_smoke("04")
    for name in ("04_f1_by_layer.png", "04_transfer_heatmap.png", "04_data_efficiency.png", "04_jaccard_by_layer.png"):
        assert (out / name).stat().st_size > 5000, name
    grid = pd.read_csv(out / "04_f1_by_layer.csv")
    assert set(grid.lang) == {"es", "it"} and set(grid.K) == {1, 2, 5, 10}
    assert ((grid.f1 >= 0) & (grid.f1 <= 1)).all()
    summary = json.loads((out / "04_summary.json").read_text())
    assert summary["languages"] == ["es", "it"] and summary["_meta"]["seed"] == 0
    for lang in ("es", "it"):
        by_k = summary["or_rule_at_top1diff_layer"][lang]
        assert summary["k_selection"][lang] == tx.pick_k(by_k)                      # one-SE K, argmax beside it
        sel = summary["layer_selection"][lang]
        assert sel["top1diff"] == by_k["K=1"]["layer"] and sel["margin_se"] >= 0
    assert executed.exists()
