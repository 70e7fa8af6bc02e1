"""The SAE loader's memory promise (issue #14): each layer file is read at most once per section run
(layers outer, data inner) and at most ``cache_size`` layers are alive, checked with the read counter
``qscope_utils.sae.track_loads`` on the tiny fixture group (3 layers, so a 2-layer cache must evict).
Each section's entry point is also compared with the same statistics computed from a plain dict of
SAEs (the old data-outer path): the restructured loops give identical numbers."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from qscope_utils.sae import SAELoader, load_stats, track_loads

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Привет, как дела? Всё хорошо.", "1 + 2 = 3 and 3 + 4 = 7",
         "def f(x): return x * 2", "Bonjour tout le monde, ça va?", "床前明月光，疑是地上霜。", "Sparse autoencoders find "
         "features.", "A B C D E F G A B C D E F G", "Das ist ein kleiner Test.", "El perro come la comida."]


@pytest.fixture()
def group_dir(tmp_path, tiny_group):
    from conftest import write_group

    return write_group(tmp_path / "g", tiny_group.n_layers, tiny_group.d_model, tiny_group.d_sae)


def _scope(tiny_model, tiny_group, group_dir, cache_size: int = 2):
    from qscope_utils.profiles import get_profile
    from qscope_utils.scope import Scope

    model, tok = tiny_model
    return Scope(get_profile("smoke"), model, tok, SAELoader(tiny_group.repo_id, source=str(group_dir),
                                                             cache_size=cache_size))


def _all_layers(scope) -> dict:
    """The old path's plain dict of every layer (loaded outside any counted block)."""
    loader = SAELoader(scope.group.repo_id, source=scope.saes.source, cache_size=scope.n_layers)
    return {l: loader[l] for l in range(scope.n_layers)}


def _promise(st, repo: str, layers, cache_size: int) -> None:
    assert {l for (r, l) in st.reads if r == repo} == set(layers), st.reads
    assert st.max_reads == 1, f"layer files read more than once: {st.rereads()}"
    assert 1 <= st.peak_alive <= cache_size, st.peak_alive


# ----------------------------------------------------------------------------- the counter itself
def test_counter_counts_file_reads_not_cache_hits_and_the_peak_alive(tiny_group, group_dir):
    loader = SAELoader(tiny_group.repo_id, source=str(group_dir), cache_size=2)
    before = load_stats().n_reads
    with track_loads() as st:
        for l in (0, 1, 0, 1, 2, 0):        # 0 and 1 hit the cache; 2 evicts 0; the last 0 is a re-read
            loader[l]
    assert st.reads == {(tiny_group.repo_id, 0): 2, (tiny_group.repo_id, 1): 1, (tiny_group.repo_id, 2): 1}
    assert st.n_reads == 4 and st.max_reads == 2 and st.rereads() == {(tiny_group.repo_id, 0): 2}
    assert st.bytes_read == 2 * (group_dir / "layer0.sae.pt").stat().st_size + sum(
        (group_dir / f"layer{l}.sae.pt").stat().st_size for l in (1, 2))
    assert st.peak_alive == 2                # eviction happens BEFORE the next read
    assert load_stats().n_reads == before + 4
    assert loader.alive == 2 and list(loader._cache) == [2, 0]


def test_a_dict_of_layers_outliving_the_cache_shows_in_the_peak(tiny_group, group_dir):
    loader = SAELoader(tiny_group.repo_id, source=str(group_dir), cache_size=2)
    with track_loads() as st:
        held = {l: loader[l] for l in range(3)}     # the old notebooks' `{l: scope.saes[l] for l in layers}`
    assert st.peak_alive == 3 and loader.alive == 3
    del held
    assert loader.alive == 2                        # the cache's two remain


def test_views_refuse_more_layers_than_the_cache_and_groups_fit(tiny_group, group_dir):
    loader = SAELoader(tiny_group.repo_id, source=str(group_dir), cache_size=2)
    with pytest.raises(ValueError, match="cache_size>=3"):
        loader.view([0, 1, 2])
    assert [list(v) for v in loader.groups([0, 1, 2])] == [[0, 1], [2]]
    v = loader.view([2, 1])
    assert sorted(v) == [1, 2] and v[2].layer == 2 and len(v) == 2
    with pytest.raises(KeyError):
        v[0]
    with pytest.raises(ValueError, match="at least one layer"):
        SAELoader(tiny_group.repo_id, source=str(group_dir), cache_size=0)


def test_stats_file_for_driver_scripts(tiny_group, group_dir, tmp_path, monkeypatch):
    out = tmp_path / "stats.json"
    monkeypatch.setenv("QSCOPE_SAE_STATS", str(out))
    loader = SAELoader(tiny_group.repo_id, source=str(group_dir), cache_size=1)
    loader[1]
    d = json.loads(out.read_text())
    assert d["cache_size"] == 1 and d["reads"][f"{tiny_group.repo_id}:1"] >= 1 and d["n_reads"] >= 1


# ----------------------------------------------------------------------------- sections
def test_01_evaluate_group_reads_once_with_a_one_layer_cache(tiny_model, tiny_group, group_dir):
    from qscope_utils.recon import evaluate_group

    scope = _scope(tiny_model, tiny_group, group_dir, cache_size=1)
    with track_loads() as st:
        evaluate_group(scope, TEXTS[:4], layers=[0, 1, 2], with_loss=False, batch_size=2)
    _promise(st, tiny_group.repo_id, [0, 1, 2], 1)


def test_03_feature_sets_read_each_layer_once_for_all_benchmarks(tiny_model, tiny_group, group_dir):
    from qscope_utils import redundancy as rd

    scope = _scope(tiny_model, tiny_group, group_dir)
    benches = {"a": TEXTS[:4], "b": TEXTS[4:7], "c": TEXTS[7:]}
    with track_loads() as st:
        fsets = rd.feature_sets_by_layer(scope.model, scope.tokenizer, scope.saes, benches, [0, 1, 2], batch_size=3,
                                         max_length=16, progress=False)
    _promise(st, tiny_group.repo_id, [0, 1, 2], 2)
    ref = _all_layers(scope)
    for n, texts in benches.items():        # old path: one call per benchmark with every layer in a dict
        old = rd.last_token_feature_sets(scope.model, scope.tokenizer, ref, texts, batch_size=3, max_length=16,
                                         progress=False)
        for l in range(3):
            assert (fsets[l][n] != old[l]).nnz == 0 and fsets[l][n].shape == (len(texts), tiny_group.d_sae)
            assert fsets[l][n].getnnz() > 0


def _splits():
    from qscope_utils.toxicity_data import ToxicSplit

    rng = np.random.default_rng(0)
    words = "alpha beta gamma delta toxic rude nice kind sun moon red blue one two three".split()
    out = {}
    for lang in ("en", "es", "it"):
        def texts(n, tag):
            return [f"{lang} {tag} {i} " + " ".join(rng.choice(words, 6)) for i in range(n)]
        y_d, y_e = np.array([1, 0] * 6), np.array([1, 0] * 3)
        out[lang] = ToxicSplit(lang, texts(12, "d"), y_d, texts(6, "e"), y_e)
    return out


def test_04_multilingual_run_reads_each_layer_once_for_all_languages(tiny_model, tiny_group, group_dir):
    """Three languages x three layers with two layers per pass: the old per-language loop read every
    layer twice per language (discovery, then evaluation) = 18 reads; now 3, and identical numbers."""
    from qscope_utils import toxicity as tx
    from qscope_utils.features import top_contexts

    scope = _scope(tiny_model, tiny_group, group_dir, cache_size=2)
    cfg = replace(tx.ToxicityConfig.for_profile("smoke"), layers_per_pass=2, batch_size=4, chunk_texts=5,
                  max_length=16, fractions=(0.5, 1.0), n_repeats=1)
    splits = _splits()
    with track_loads() as st:
        res = tx.run_languages(scope, splits, cfg, layers=[0, 1, 2], context_texts=4, context_n=3)
    _promise(st, tiny_group.repo_id, [0, 1, 2], 2)

    ref = _all_layers(scope)
    for lang, split in splits.items():      # old path: per language, every layer from a dict
        chunks = tx.stream_max_activations(scope.model, scope.tokenizer, ref, split.disc_texts, [0, 1, 2],
                                           cfg.chunk_texts, 2, **tx._enc_kw(cfg))
        d = tx.discover_from_chunks(chunks, split.disc_labels, tiny_group.d_sae, [0, 1, 2], cfg.fractions,
                                    cfg.n_repeats, 10, cfg.eps, cfg.seed, keep_layers=[0, 1, 2])
        ev = tx._encode_all(scope.model, scope.tokenizer, ref, split.eval_texts, [0, 1, 2], cfg, "eval")
        r = res[lang]
        assert r.layers == [0, 1, 2] and np.array_equal(r.subset_n, d["subset_n"])
        for l in range(3):
            np.testing.assert_array_equal(r.delta[l], d["delta"][l])
            np.testing.assert_array_equal(r.subset_top[l], d["subset_top"][l])
            assert (r.eval_acts[l] != ev[l]).nnz == 0 and (r.disc_acts[l] != d["kept"][l]).nnz == 0
            f0 = int(tx.top_features(d["delta"][l], 1)[0])
            old_ctx = top_contexts(scope.model, scope.tokenizer, ref[l], l, split.eval_texts[:4], [f0], n=3,
                                   max_length=cfg.max_length, progress=False)[f0]
            assert r.contexts[l] == {"feature": f0, "contexts": old_ctx}
        assert max(float(r.delta[l].max()) for l in range(3)) > 0


def test_04_refuses_a_pass_wider_than_the_cache(tiny_model, tiny_group, group_dir):
    from qscope_utils import toxicity as tx

    scope = _scope(tiny_model, tiny_group, group_dir, cache_size=2)
    cfg = replace(tx.ToxicityConfig.for_profile("smoke"), layers_per_pass=3)
    with pytest.raises(ValueError, match="cache_size>=3"):
        tx.run_languages(scope, _splits(), cfg, layers=[0, 1, 2])


def test_06_language_stats_through_a_view_read_each_layer_once(tiny_model, tiny_group, group_dir):
    from qscope_utils import sasft

    scope = _scope(tiny_model, tiny_group, group_dir, cache_size=2)
    by_lang = {"en": TEXTS[:3], "ru": TEXTS[3:6], "fr": TEXTS[6:]}
    with track_loads() as st:
        stats = sasft.language_stats(scope.model, scope.tokenizer, scope.saes.view([1, 2]), by_lang, max_length=16,
                                     progress=False)
    _promise(st, tiny_group.repo_id, [1, 2], 2)
    ref = _all_layers(scope)
    old = sasft.language_stats(scope.model, scope.tokenizer, {1: ref[1], 2: ref[2]}, by_lang, max_length=16,
                               progress=False)
    for g in by_lang:
        for l in (1, 2):
            for k in ("mean", "rate", "mean_pre"):
                assert torch.equal(stats[g][l][k], old[g][l][k])


def test_07_candidate_pass_reads_each_layer_once_and_keeps_every_needed_column(tiny_model, tiny_group, group_dir):
    from qscope_utils import repetition as R

    scope = _scope(tiny_model, tiny_group, group_dir, cache_size=1)
    contexts = R.make_repeated_contexts(scope.tokenizer, TEXTS, 8, 2, seed=0)
    with track_loads() as st:
        feats, cols = R.repetition_candidates(scope.model, scope.saes, [0, 1, 2], contexts,
                                              scope.tokenizer.pad_token_id, m=5, extra={0: [7]}, progress=False)
    _promise(st, tiny_group.repo_id, [0, 1, 2], 1)
    ref = _all_layers(scope)
    pooled = R.pool_candidates(feats, 50).head(5)
    for c in pooled.itertuples():           # every pooled candidate's column was kept, equal to the file's
        assert torch.equal(cols[(int(c.layer), int(c.feature))], ref[int(c.layer)].direction(int(c.feature)))
    assert torch.equal(cols[(0, 7)], ref[0].direction(7))
    for L in range(3):
        old = R.repetition_features(scope.model, ref[L], L, contexts, scope.tokenizer.pad_token_id, progress=False)
        assert old.equals(feats[L])


# ----------------------------------------------------------------------------- feature extraction budget
def test_encode_budget_streams_in_chunks_with_the_same_codes(tiny_group, group_dir):
    from qscope_utils.features import encode_rows

    sae = SAELoader(tiny_group.repo_id, source=str(group_dir))[0]
    x = torch.randn(37, tiny_group.d_model, generator=torch.Generator().manual_seed(0))
    full, pre = encode_rows(sae, x, with_pre=True)
    calls = []
    real = sae.pre_acts
    sae.pre_acts = lambda t: calls.append(t.shape[0]) or real(t)
    small, pre_sum = encode_rows(sae, x, with_pre="sum", budget=5 * tiny_group.d_sae)   # 5 tokens per call
    del sae.pre_acts
    assert max(calls) <= 5 and sum(calls) == 2 * 37              # encode_sparse + pre-activation sums
    assert torch.allclose(small.to_dense(), full.to_dense(), rtol=1e-6, atol=1e-5)   # GEMM rounding only
    scale = pre.double().abs().sum(0)
    assert float(((pre_sum - pre.double().sum(0)).abs() / scale).max()) < 1e-6
    with pytest.raises(ValueError, match="with_pre"):
        encode_rows(sae, x, with_pre="mean")


# ----------------------------------------------------------------------------- the notebooks use these passes
def test_notebooks_hold_no_dict_of_layers_and_read_through_the_layer_passes():
    """03/04/07 hand ``scope.saes`` to the layer-outer passes above (no ``scope.saes[...]`` of their own,
    which re-read evicted layers or kept a dict of all layers alive); 06 takes a view sized to its cache."""
    from pathlib import Path

    src = {p.name[:2]: p.read_text() for p in (Path(__file__).resolve().parents[1] / "notebooks" / "src").glob("0*.py")}
    for nb in ("03", "04", "07"):
        assert "scope.saes[" not in src[nb], nb
    assert "rd.feature_sets_by_layer(" in src["03"] and "tx.run_languages(" in src["04"]
    assert "cache_size=cfg.layers_per_pass" in src["04"] and "R.repetition_candidates(" in src["07"]
    assert "scope.saes.view(layers)" in src["06"] and "cache_size=len(layers)" in src["06"]
    for nb in ("02", "05"):                  # one layer for the whole notebook
        assert src[nb].count("scope.saes[") == 1, nb
