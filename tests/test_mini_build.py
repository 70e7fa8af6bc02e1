"""The smoke build of the mini scope: tokenizer, checkpoints, SAE files, stage caching and resume."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace

import pandas as pd
import pytest
import torch

from conftest_mini import smoke_scope  # noqa: F401  (session fixture)
from qscope_utils.profiles import SMOKE_SCOPE, mini_group_name

pytestmark = pytest.mark.slow


def test_build_report_and_layout(smoke_scope):
    prof, rep = smoke_scope
    assert set(rep["stages"]) == {"corpus", "tokenizer", "pretrain", "sae"}
    d = prof.data_dir
    assert (d / "corpus" / "manifest.json").exists() and (d / "corpus" / "docs.jsonl").exists()
    assert (d / "models" / "main" / "config.json").exists()
    assert rep["group"] == prof.sae_repo == mini_group_name(SMOKE_SCOPE)
    ppl = pd.read_csv(d / "models" / "perplexity.csv")
    assert {"level", "name", "lang", "ppl", "bits_per_char"} <= set(ppl.columns)
    assert set(ppl[ppl.level == "lang"].name) >= {"en", "zh", "lzh", "ru", "code", "math"}
    assert (ppl.ppl > 1).all() and (ppl.ppl < SMOKE_SCOPE.vocab_size * 2).all()


def test_tokenizer_round_trip(smoke_scope):
    from qscope_utils.mini.tokenizer import load_tokenizer

    prof, _ = smoke_scope
    tok = load_tokenizer(prof.backbone)
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token == "<|bos|>"
    for s in ["Hello, world! 12345", "床前明月光，疑是地上霜。", "Привет, мир", "Grüße aus München",
              "def f(x):\n    return x * 2\n", "日本語のテキスト", "¿Qué tal?  \t tabs"]:
        ids = tok(s)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == s
    # digits are single tokens, like Qwen
    toks = tok.convert_ids_to_tokens(tok("Compute 123 + 45 =", add_special_tokens=False)["input_ids"])
    assert "1" in toks and "2" in toks and "3" in toks


def test_zoo_and_main_checkpoint(smoke_scope):
    from transformers import Qwen3ForCausalLM

    prof, _ = smoke_scope
    zoo = json.loads((prof.data_dir / "models" / "zoo.json").read_text())
    names = {z["name"] for z in zoo}
    assert names == {"balanced-step20", "balanced-step40", "code_math_heavy-step40"}
    for z in zoo:
        assert z["tokens_seen"] == z["step"] * SMOKE_SCOPE.batch_size * SMOKE_SCOPE.seq_len
        assert (prof.data_dir / "models" / z["path"] / "model.safetensors").exists()
    m = Qwen3ForCausalLM.from_pretrained(prof.backbone)
    assert m.config.hidden_size == SMOKE_SCOPE.hidden_size and m.config.tie_word_embeddings
    assert len(m.model.layers) == SMOKE_SCOPE.n_layers


def test_sae_files_match_release_format(smoke_scope):
    from qscope_utils.registry import get_group
    from qscope_utils.sae import SAELoader

    prof, _ = smoke_scope
    d, n = SMOKE_SCOPE.hidden_size, SMOKE_SCOPE.sae_expansion * SMOKE_SCOPE.hidden_size
    for layer in range(SMOKE_SCOPE.n_layers):
        sd = torch.load(os.path.join(prof.sae_source, f"layer{layer}.sae.pt"), weights_only=True)
        assert isinstance(sd, dict) and set(sd) == {"W_enc", "W_dec", "b_enc", "b_dec"}
        assert sd["W_enc"].shape == (n, d) and sd["W_dec"].shape == (d, n)
        assert sd["b_enc"].shape == (n,) and sd["b_dec"].shape == (d,)
        assert all(v.dtype == torch.float32 for v in sd.values())
        assert torch.allclose(sd["W_dec"].norm(dim=0), torch.ones(n), atol=1e-4)
        log = json.loads(open(os.path.join(prof.sae_source, f"layer{layer}.log.json")).read())
        assert 0 <= log["heldout"]["fvu"] < 1.0 and log["tokens_per_s"] > 0
    g = get_group(prof.sae_repo)
    assert (g.d_model, g.d_sae, g.k, g.n_layers) == (d, n, SMOKE_SCOPE.sae_k, SMOKE_SCOPE.n_layers)
    sae = SAELoader(prof.sae_repo, source=prof.sae_source)[0]
    assert sae.k == SMOKE_SCOPE.sae_k


@pytest.fixture()
def smoke_copy(smoke_scope, tmp_path, monkeypatch):
    """A private copy of the built smoke data (so the tests below can change and rebuild it)."""
    prof, _ = smoke_scope
    shutil.copytree(prof.data_dir, tmp_path / "smoke", symlinks=True)
    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path))
    return tmp_path / "smoke"


def test_second_build_does_nothing_and_sae_k_rebuilds_only_saes(smoke_copy):
    from qscope_utils.mini.build import build_scope

    rep = build_scope("smoke", progress=False)
    assert {s: v["status"] for s, v in rep["stages"].items()} == dict.fromkeys(rep["stages"], "cached")
    rep = build_scope("smoke", scope=replace(SMOKE_SCOPE, sae_k=4), progress=False)
    status = {s: v["status"] for s, v in rep["stages"].items()}
    assert status == {"corpus": "cached", "tokenizer": "cached", "pretrain": "cached", "sae": "built"}
    assert rep["group"].endswith("-W1K-L0_4")
    assert (smoke_copy / "sae" / "SAE-Res-MiniQwen3-Base-W1K-L0_4" / "layer1.sae.pt").exists()
    # the k=8 group is untouched and still current
    rep = build_scope("smoke", progress=False)
    assert rep["stages"]["sae"]["status"] == "cached"


def test_interrupted_builds_resume(smoke_copy):
    from qscope_utils.mini.build import build_scope

    models = smoke_copy / "models"
    sae_dir = smoke_copy / "sae" / mini_group_name(SMOKE_SCOPE).split("/")[-1]
    # pretraining interrupted after the balanced run: the branch has not been trained yet
    shutil.rmtree(models / "zoo" / "code_math_heavy-step40")
    (models / "_resume" / "code_math_heavy.pt").unlink()
    (models / ".stamp.json").unlink()
    bal = models / "zoo" / "balanced-step40" / "model.safetensors"
    bal_mtime = bal.stat().st_mtime_ns
    # and SAE training interrupted after layer 0
    (sae_dir / "layer1.sae.pt").unlink()
    layer0_mtime = (sae_dir / "layer0.sae.pt").stat().st_mtime_ns
    rep = build_scope("smoke", progress=False)
    assert rep["stages"]["pretrain"]["status"] == "built"
    assert (models / "zoo" / "code_math_heavy-step40" / "model.safetensors").exists()
    assert bal.stat().st_mtime_ns == bal_mtime          # the balanced run was not redone
    assert rep["stages"]["sae"]["status"] == "built"   # downstream of a rebuilt stage
    assert (sae_dir / "layer1.sae.pt").exists()
    assert (sae_dir / "layer0.sae.pt").stat().st_mtime_ns == layer0_mtime   # finished layer kept


def test_pretrain_segments_split_at_the_branch_point_and_follow_the_resume_states():
    from qscope_utils.mini.pretrain import Segment, _segments

    scope = replace(SMOKE_SCOPE, train_steps=40, branch_step=20, mixtures=("balanced", "code_math_heavy"))
    fresh = _segments(scope, {"balanced": None, "code_math_heavy": None})
    assert fresh == ([Segment(0, "balanced", 0, 20, None)],
                     [Segment(0, "balanced", 20, 40, "balanced.pt"),
                      Segment(1, "code_math_heavy", 20, 40, "balanced-step20.pt")])
    # the trunk got past the branch point, the branch has its own state at 30
    trunk, par = _segments(scope, {"balanced": {"step": 25}, "code_math_heavy": {"step": 30}})
    assert trunk == [] and par == [Segment(0, "balanced", 25, 40, "balanced.pt"),
                                   Segment(1, "code_math_heavy", 30, 40, "code_math_heavy.pt")]
    # trunk done, branch still to train; trunk before the branch point resumes there
    assert _segments(scope, {"balanced": {"step": 40}, "code_math_heavy": None}) == \
        ([], [Segment(1, "code_math_heavy", 20, 40, "balanced-step20.pt")])
    assert _segments(scope, {"balanced": {"step": 10}, "code_math_heavy": None})[0] == \
        [Segment(0, "balanced", 10, 20, "balanced.pt")]
    # one mixture: no branch point, the whole run on every thread
    solo = replace(scope, mixtures=("balanced",))
    assert _segments(solo, {"balanced": None}) == ([Segment(0, "balanced", 0, 40, None)], [])


def test_mixtures_on_worker_processes_train_the_same_checkpoints(smoke_scope, tmp_path, monkeypatch):
    """The parallel phase (trunk's rest and branch after the branch point) gives the same bytes on two
    worker processes as in this process, at the same threads per mixture."""
    import hashlib

    from qscope_utils.mini import pretrain as P

    prof, _ = smoke_scope
    scope = replace(SMOKE_SCOPE, train_steps=8, zoo_steps=(4, 8), branch_step=4)
    out = {}
    for name, min_tokens in (("workers", 0), ("here", 10 ** 12)):
        monkeypatch.setattr(P, "MIN_WORKER_TOKENS", min_tokens)
        summary = P.pretrain(scope, prof, prof.data_dir / "tokenizer", tmp_path / name, config_hash="t", progress=False)
        assert summary["threads"]["parallel_workers"] == (min(2, os.cpu_count() or 1) if name == "workers" else 1)
        out[name] = {p.relative_to(tmp_path / name).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in sorted((tmp_path / name / "zoo").glob("*/model.safetensors"))}
    assert list(out["here"]) == ["zoo/balanced-step4/model.safetensors", "zoo/balanced-step8/model.safetensors",
                                 "zoo/code_math_heavy-step8/model.safetensors"]
    assert out["workers"] == out["here"]
    assert out["here"]["zoo/balanced-step8/model.safetensors"] != out["here"]["zoo/code_math_heavy-step8/model.safetensors"]
