"""Corrupt or partial caches and bad activations: each error names the file (or layer) and the fix,
in one line, never a bare zip/pickle/safetensors error or a chained 200-line traceback."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from qscope_utils.atomic import CorruptFileError, safetensors_problem
from qscope_utils.sae import NonFiniteActivationsError, SAELoader, TopKSAE

from conftest import TINY_GROUP, make_sae_state, write_group


def _truncate(p, keep: float = 0.5):
    data = p.read_bytes()
    p.unlink()                       # hub snapshots hold symlinks into blobs: write a real file
    p.write_bytes(data[: int(len(data) * keep)])


def _one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    return msg


def test_truncated_local_layer_file_names_file_and_fix(tmp_path, tiny_group):
    d = write_group(tmp_path / "g", 3, 32, 1024)
    _truncate(d / "layer1.sae.pt")
    (d / "layer2.sae.pt").write_bytes(b"not a torch file at all")
    loader = SAELoader(TINY_GROUP, source=str(d))
    assert loader[0].d_sae == 1024
    for n in (1, 2):
        with pytest.raises(CorruptFileError) as ei:
            loader[n]
        msg = _one_line(ei.value)
        assert f"layer{n}.sae.pt is damaged" in msg and "delete it" in msg
        assert "qscope_utils.mini.build" in msg and ei.value.path == d / f"layer{n}.sae.pt"


def test_truncated_hub_layer_file_names_the_force_download(hub_cache, tiny_group):
    snap = next((hub_cache / ("models--" + TINY_GROUP.replace("/", "--")) / "snapshots").iterdir())
    _truncate(snap / "layer1.sae.pt", 0.9)
    with pytest.raises(CorruptFileError) as ei:
        SAELoader(TINY_GROUP)[1]
    assert f"`hf download {TINY_GROUP} layer1.sae.pt --force-download`" in _one_line(ei.value)


def test_offline_missing_sae_is_one_line_with_the_exact_command(hub_cache):
    from qscope_utils.registry import SAEGroup, register

    register(SAEGroup("Qwen/SAE-Res-Absent-Base-W1K-L0_8", "x", 32, 1024, 8, 2))
    with pytest.raises(FileNotFoundError) as ei:
        SAELoader("Qwen/SAE-Res-Absent-Base-W1K-L0_8")[1]
    msg = _one_line(ei.value)
    assert "`hf download Qwen/SAE-Res-Absent-Base-W1K-L0_8 layer1.sae.pt`" in msg
    assert "huggingface-cli" not in msg and "HF_HUB_OFFLINE=1" in msg


def test_offline_missing_backbone_is_one_line_with_the_exact_command(hub_cache):
    from qscope_utils.generation import load_backbone

    with pytest.raises(FileNotFoundError) as ei:
        load_backbone("Qwen/Qwen3-Absent-Base")
    msg = _one_line(ei.value)
    assert "backbone Qwen/Qwen3-Absent-Base is not in the Hugging Face cache" in msg
    assert "`hf download Qwen/Qwen3-Absent-Base`" in msg


def test_truncated_model_shard_local_and_in_hub_cache(tiny_model_dir, tmp_path, hub_cache):
    from qscope_utils.generation import load_backbone

    local = tmp_path / "ckpt"
    shutil.copytree(tiny_model_dir, local)
    assert safetensors_problem(local / "model.safetensors") is None
    _truncate(local / "model.safetensors", 0.8)
    with pytest.raises(CorruptFileError) as ei:
        load_backbone(str(local))
    msg = _one_line(ei.value)
    assert "model.safetensors is damaged" in msg and "truncated" in msg and "qscope_utils.mini.build" in msg
    # the same checkpoint as a cached hub repo
    repo = hub_cache / "models--Qwen--TinyShard"
    rev = "89abcdef0123456789abcdef0123456789abcdef"
    shutil.copytree(local, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    with pytest.raises(CorruptFileError) as ei:
        load_backbone("Qwen/TinyShard")
    assert "`hf download Qwen/TinyShard model.safetensors --force-download`" in _one_line(ei.value)


def test_safetensors_problem_known_answers(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "a.safetensors"
    save_file({"w": torch.arange(10.0)}, str(p))
    assert safetensors_problem(p) is None
    p.write_bytes(p.read_bytes() + b"\0")
    assert "holds" in safetensors_problem(p)
    p.write_bytes(b"\x05\0\0")
    assert "shorter than" in safetensors_problem(p)
    p.write_bytes((100).to_bytes(8, "little") + b"{}")
    assert "inside its header" in safetensors_problem(p)


def test_corrupt_corpus_names_file_and_rebuild_command(tmp_path, monkeypatch):
    from qscope_utils.mini.corpus import load_corpus

    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path))
    d = tmp_path / "smoke" / "corpus"
    d.mkdir(parents=True)
    doc = {"text": "hello", "lang": "en", "source": "s", "split": "train", "label": None}
    (d / "docs.jsonl").write_text(json.dumps(doc) + "\n" + json.dumps(doc)[:20])   # torn last line
    with pytest.raises(CorruptFileError) as ei:
        load_corpus("smoke")
    msg = _one_line(ei.value)
    assert "docs.jsonl is damaged" in msg and "line 2" in msg
    assert "`python -m qscope_utils.mini.build --profile smoke`" in msg


def test_nan_or_inf_activations_name_layer_and_token_count(tmp_path, tiny_group):
    d = write_group(tmp_path / "g", 3, 32, 1024)
    sae = SAELoader(TINY_GROUP, source=str(d))[2]
    x = torch.randn(2, 5, 32)
    x[0, 1, 3] = float("nan")
    x[1, 4, :] = float("inf")
    for call in (sae.encode, sae.encode_sparse, sae.forward, sae.pre_acts):
        with pytest.raises(NonFiniteActivationsError, match=r"layer 2 hold NaN or inf in 2 of 10 tokens"):
            call(x)
    x[0, 1, 3], x[1, 4, :] = 0.0, 1.0
    assert torch.isfinite(sae.encode(x)).all()
    bare = TopKSAE.from_state_dict(make_sae_state(32, 1024), k=8)
    with pytest.raises(NonFiniteActivationsError, match="1 of 1 tokens"):
        bare.encode(torch.full((32,), float("nan")))


def test_preflight_lists_one_line_per_missing_artefact(hub_cache, tmp_path, tiny_group):
    from qscope_utils.hub import missing_lines
    from qscope_utils.registry import SAEGroup, register

    register(SAEGroup("Qwen/SAE-Res-Absent-Base-W1K-L0_8", "x", 32, 1024, 8, 2))
    lines = SAELoader("Qwen/SAE-Res-Absent-Base-W1K-L0_8").missing()
    assert len(lines) == 2 and all("\n" not in x for x in lines)
    assert [x.split("`")[1] for x in lines] == [f"hf download Qwen/SAE-Res-Absent-Base-W1K-L0_8 layer{n}.sae.pt"
                                                for n in (0, 1)]
    assert SAELoader(TINY_GROUP).missing() == []                       # the fixture cache holds every layer
    assert missing_lines("Qwen/Qwen3-Absent-Base")[0].count("`hf download Qwen/Qwen3-Absent-Base`") == 1
    assert missing_lines(TINY_GROUP) == []
    d = write_group(tmp_path / "g", 3, 32, 1024, skip=(1,))
    (local,) = SAELoader(TINY_GROUP, source=str(d)).missing()
    assert "layer1.sae.pt" in local and "qscope_utils.mini.build" in local
