"""Paper-shape dry run (issue #14 part 4) and its benchmark (part 5): known answers only, no timings.

The real-shape run itself (GBs, minutes) is ``scripts/paper_shape.py``; these tests check the pieces it
is built from at small sizes: the random backbone has exactly the parameter count of its published-shape
formula, the real-shape hub serves the 8B ids at the 1.7B shapes through the registry override, the
per-stage arithmetic of the results table, QSCOPE_DTYPE, and the benchmark's ratio.
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qscope_utils.model_shapes import BACKBONE_SHAPES
from qscope_utils.testing import paper_shape as ps

ROOT = Path(__file__).resolve().parents[1]
SMALL = replace(BACKBONE_SHAPES["Qwen/Qwen3-1.7B-Base"], hidden_size=64, intermediate_size=96, n_layers=3, n_heads=4,
                n_kv_heads=2, head_dim=16, vocab_size=500)


def test_random_backbone_has_the_published_shape_formula():
    from qscope_utils.testing.paper_hub import fixture_tokenizer, random_backbone

    model = random_backbone(SMALL, fixture_tokenizer(), torch.float32, seed=0)
    assert sum(p.numel() for p in model.parameters()) == SMALL.n_params          # tied: counted once
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert torch.all(model.model.norm.weight == 1)
    std = model.model.layers[0].mlp.up_proj.weight.std().item()
    assert abs(std - 0.02) < 0.002
    inv = model.model.rotary_emb.inv_freq                                        # rebuilt after to_empty
    expect = 1.0 / (1e6 ** (torch.arange(0, 16, 2, dtype=torch.float) / 16))
    assert torch.allclose(inv, expect)
    out = model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert out.shape == (1, 3, 500) and torch.isfinite(out).all()


def test_real_hub_serves_the_8b_ids_at_the_1_7b_shape(tmp_path, monkeypatch):
    from qscope_utils import model_shapes, registry
    from qscope_utils.testing import paper_hub

    small_group = replace(registry.official_group("Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"), d_model=64, d_sae=128,
                          n_layers=3)
    monkeypatch.setitem(model_shapes.BACKBONE_SHAPES, "Qwen/Qwen3-1.7B-Base", SMALL)
    real = registry.official_group
    monkeypatch.setattr(registry, "official_group",
                        lambda rid: small_group if rid == small_group.repo_id else real(rid))
    hub = paper_hub.build_paper_hub(tmp_path / "hf", shape="real", models=("1.7B",), datasets=False,
                                    n_distinct_layers=2)
    override = json.loads(hub.override.read_text())
    assert override == {"Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50": {"d_model": 64, "d_sae": 128, "k": 50, "n_layers": 3}}
    assert hub.aliases["Qwen/Qwen3-8B-Base"] == "Qwen/Qwen3-1.7B-Base"
    snap = {r: next((hub.cache / f"models--{r.replace('/', '--')}" / "snapshots").iterdir())
            for r in ("Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-8B-Base")}
    w = [(s / "model.safetensors").resolve() for s in snap.values()]
    assert w[0].stat().st_ino == w[1].stat().st_ino                             # one copy, hard-linked
    cfg = json.loads((snap["Qwen/Qwen3-8B-Base"] / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["dtype"]) == (64, 3, 500, "bfloat16")
    sae = hub.cache / "models--Qwen--SAE-Res-Qwen3-8B-Base-W64K-L0_50" / "snapshots"
    files = sorted(p.name for p in next(sae.iterdir()).iterdir())
    assert files == ["layer0.sae.pt", "layer1.sae.pt", "layer2.sae.pt"]
    sd = torch.load(next(sae.iterdir()) / "layer2.sae.pt", weights_only=True)
    assert sd["W_enc"].shape == (128, 64) and sd["W_dec"].shape == (64, 128)
    with pytest.raises(ValueError, match="choose among"):
        paper_hub.build_paper_hub(tmp_path / "x", shape="real", models=("3B",), datasets=False)


def _cell(n, seconds, peak, sae=(), model=(), rchar=0, cuda=None):
    return {"cell": n, "label": f"cell {n}", "seconds": seconds, "peak_rss_bytes": peak, "rss_end_bytes": peak,
            "cuda_max_allocated_bytes": cuda, "rchar_bytes": rchar, "error": False,
            "sae_files": [{"file": f, "repo": "r", "bytes": 100} for f in sae],
            "model_files": [{"file": f, "repo": "m", "bytes": 1000} for f in model]}


def test_stage_totals_and_table_arithmetic(tmp_path):
    log = tmp_path / "probe.jsonl"
    recs = [_cell(1, 1.5, 2**30, model=["model.safetensors"], rchar=10),
            _cell(2, 2.5, 3 * 2**30, sae=["layer9.sae.pt", "layer18.sae.pt", "layer9.sae.pt"], rchar=20),
            {"cell": "exit", "ru_maxrss_bytes": 4 * 2**30}]
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    rec = ps.summarize("01_sae_loading", ps.read_probe(log), "ok", 7.0, "", {"layers": [9, 18]}, [])
    t = rec["total"]
    assert t["seconds_cells"] == 4.0 and t["seconds_wall"] == 7.0
    assert t["peak_rss_bytes"] == 4 * 2**30                     # the exit ru_maxrss is above every cell's peak
    assert (t["sae_bytes"], t["sae_loads"], t["sae_distinct_files"]) == (300, 3, 2)
    assert (t["model_bytes"], t["rchar_bytes"], t["cuda_max_allocated_bytes"]) == (1000, 30, None)
    cfg = ps.RunConfig(model="1.7B", device="cpu")
    rows = ps.csv_rows(cfg, [rec])
    assert [r["stage"] for r in rows] == [1, 2, "TOTAL"] and rows[1]["peak_rss_mb"] == 3072.0
    md = ps.markdown_table([rec])
    assert md[2] == "| 01_sae_loading | ok | 7 | 4.00 | - | 3 (2) | 0.00 | 0.00 | 0.00 | - |"
    assert ps.read_probe(tmp_path / "missing.jsonl") == ([], {})


def test_notebook_parameters_fit_the_shape():
    from qscope_utils.registry import official_group

    for model, group in (("1.7B", "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"),
                         ("8B", "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50")):
        g = official_group(group)
        for nb in ps.NOTEBOOKS:
            p = ps.notebook_parameters(nb, model)
            for key in ("layer", "paper_layer"):
                if key in p:
                    assert p[key] < g.n_layers, (nb, model)
            assert all(l < g.n_layers for l in p.get("layers", [])), (nb, model)
            if "lzh_feature" in p:
                assert p["lzh_feature"] < g.d_sae
    assert ps.notebook_parameters("04_toxicity", "1.7B")["sae_repo"] == "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"
    assert "sae_repo" not in ps.notebook_parameters("04_toxicity", "8B")
    assert ps._stem("04") == "04_toxicity"
    with pytest.raises(SystemExit, match="unknown notebook"):
        ps._stem("09")


def test_qscope_dtype_overrides_the_profile(monkeypatch):
    from qscope_utils.profiles import get_profile

    monkeypatch.delenv("QSCOPE_DTYPE", raising=False)
    assert get_profile("paper").dtype == "bfloat16"
    monkeypatch.setenv("QSCOPE_DTYPE", "float32")
    assert get_profile("paper").dtype == "float32"
    monkeypatch.setenv("QSCOPE_DTYPE", "fp32")
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        get_profile("paper")


def test_benchmark_ratio_and_table_row():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_paper_shape as b
    import run as bench_run

    assert b.ratio(2.0, 4.0) == 0.5 and b.ratio(3.0, 1.5) == 2.0
    with pytest.raises(ValueError, match="positive"):
        b.ratio(0.0, 1.0)
    res = {"device": "cpu", "sae": {"rows": [{"d_model": 2048, "d_sae": 32768, "k": 50, "dtype": "float32",
                                              "encode_vs_gemm": 0.85, "sparse_decode_vs_gemm": 12.34}]},
           "backbone": {"hidden_size": 2048, "n_layers": 28}, "steering_overhead": {"ratio": 0.9712},
           "capture": {"layers": 28, "ratio": 0.99}}
    rows = bench_run.paper_shape_rows(res)
    assert rows[0] == ("| paper width: encode 2048x32768 k=50 float32 (cpu) | 0.85 of its GEMM; sparse decode x12.3 "
                       "vs the decode GEMM | >= 0.8 |")
    assert rows[1] == "| paper width: steering in generate (2048x28, cpu) | 0.971 of unhooked | >= 0.95 |"
    assert "not run yet" in bench_run.paper_shape_rows(None)[0]


def test_portable_strips_absolute_paths(tmp_path):
    text = f"Input Notebook:  {ps.ROOT}/notebooks/05.ipynb\nOutput Notebook: {tmp_path}/runs/05.ipynb"
    assert ps.portable(text, tmp_path) == "Input Notebook:  notebooks/05.ipynb\nOutput Notebook: <root>/runs/05.ipynb"
    assert ps.portable(None, tmp_path) is None


def test_probe_records_a_finished_cell_and_the_heartbeat_of_a_killed_one(tmp_path):
    """The kernel probe (sitecustomize) in a plain process that names ipykernel in its argv: a finished cell
    gets a row with its SAE file bytes; a cell still running leaves ``.running`` with its peak so far."""
    import os
    import subprocess

    log = tmp_path / "probe.jsonl"
    sae = tmp_path / "layer3.sae.pt"
    sae.write_bytes(b"x" * 1000)
    code = f"""
import sitecustomize as s, time, types
import qscope_utils.sae as sae_mod
s._pre(types.SimpleNamespace(raw_cell="# load one layer\\nx = 1"))
try:
    sae_mod.load_layer_file({str(sae)!r}, k=2)
except Exception:
    pass                                                  # not a real SAE file: only the counter matters
s._post(types.SimpleNamespace(info=types.SimpleNamespace(raw_cell="# load one layer"), error_in_exec=None))
s._pre(types.SimpleNamespace(raw_cell="# big cell"))
buf = bytearray(200 * 2**20)
time.sleep(6.5)
"""
    env = {**os.environ, "QSCOPE_PROBE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(ps.PROBE), str(ROOT)])}
    r = subprocess.run([sys.executable, "-c", code, "ipykernel"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    cells, exit_rec = ps.read_probe(log)
    assert [c["label"] for c in cells] == ["# load one layer", "(stopped) # big cell"]
    assert cells[0]["sae_files"] == [{"file": "layer3.sae.pt", "repo": tmp_path.parent.parent.name, "bytes": 1000}]
    assert cells[1]["peak_rss_bytes"] > 200 * 2**20 and cells[1]["error"]
    assert exit_rec["ru_maxrss_bytes"] > 200 * 2**20
