"""The plan before a run (qscope_utils.plan, ``./run_all.sh --plan``): arithmetic on the published shapes
with hand-computed answers, the CLI table for all seven notebooks (offline, nothing run) and clear errors."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qscope_utils import plan as P
from qscope_utils.model_shapes import BACKBONE_SHAPES

ROOT = Path(__file__).resolve().parents[1]
S8 = BACKBONE_SHAPES["Qwen/Qwen3-8B-Base"]
S17 = BACKBONE_SHAPES["Qwen/Qwen3-1.7B-Base"]


# --- pure arithmetic, hand-computed ---------------------------------------------------------------

def test_sae_layer_bytes_match_the_release_tensors():
    # W_enc + W_dec = 2 x d_model x d_sae, b_enc = d_sae, b_dec = d_model, float32 (4 B)
    assert P.sae_layer_bytes(2048, 32 * 1024) == (2 * 2048 * 32768 + 32768 + 2048) * 4 == 537_010_176   # 1.7B W32K
    assert P.sae_layer_bytes(4096, 64 * 1024) == 2_147_762_176                                           # 8B W64K
    assert P.sae_layer_bytes(4096, 65536, bytes_per_el=2) == 2_147_762_176 // 2


def test_backbone_and_kv_bytes():
    assert P.backbone_bytes(S8) == 8_190_735_360 * 2 == 16_381_470_720
    assert P.backbone_bytes(S17) == 1_720_574_976 * 2
    # 8B: 2 (K, V) x 36 layers x 8 KV heads x 128 x 2 B = 147,456 B per token
    assert P.kv_cache_bytes(S8, 1) == 147_456
    assert P.kv_cache_bytes(S8, 512 * 4352) == 328_564_998_144        # 07's 512 rollouts of 256 + 4,096 tokens
    assert P.kv_cache_bytes(S17, 1000) == 2 * 28 * 8 * 128 * 2 * 1000
    assert P.logits_bytes(151_936, 100) == 100 * 151_936 * 4
    assert P.logits_bytes(151_936, 10 ** 6) == 4096 * 151_936 * 4     # chunked


def test_forward_flops_and_gpu_time_for_a_token_count():
    # 8B per layer: attention 4096x128x(32+16) + 32x128x4096 + 2x128 = 41,943,296; MLP 3x4096x12288 = 150,994,944;
    # norms 8,192 -> 192,946,432. Forward per token: 2 x (36 x 192,946,432 + 151,936 x 4,096) = 15,136,802,816
    assert P.forward_flops(S8, 1) == 15_136_802_816
    assert P.forward_flops(S17, 1) == 2 * (28 * 50_336_000 + 151_936 * 2048) == 3_441_145_856
    assert P.forward_flops(S8, 1, upto_layer=17) == 2 * 18 * 192_946_432        # capture stops after layer 17
    # 1e9 tokens at 989 TFLOP/s x 0.4 = 38,263 s = 10.6 h
    assert P.compute_seconds(P.forward_flops(S8, 1e9)) == pytest.approx(15_136_802_816e9 / (989e12 * 0.4))
    assert P.compute_seconds(P.forward_flops(S8, 1e9)) / 3600 == pytest.approx(10.63, abs=0.01)
    assert P.sae_encode_flops(4096, 65536, 10) == 2 * 10 * 4096 * 65536


def test_decode_is_bandwidth_bound_at_small_batches():
    # one row, one token: all 16.38 GB of weights (+ half a token of KV) over 3.35 TB/s x 0.6 -> 8.15 ms
    assert P.decode_seconds(S8, 1, 0, 1, 1) == pytest.approx((16_381_470_720 + 147_456 / 2) / (3.35e12 * 0.6))
    # 64 rows in batches of 32, 100 tokens after a 200-token prompt: 2 batches x 100 steps, KV at 250 tokens mean
    per_step = (16_381_470_720 + 32 * 250 * 147_456) / (3.35e12 * 0.6)
    assert P.decode_seconds(S8, 64, 200, 100, 32) == pytest.approx(2 * 100 * per_step)
    # a huge batch becomes compute-bound: 2 x params x rows / (989 TFLOP/s x 0.2) per step
    big = P.decode_seconds(S8, 100_000, 0, 1, 100_000)
    assert big >= 2 * S8.n_params * 100_000 / (989e12 * 0.2) - 1e-9


def test_stage_seconds_and_transient_memory():
    st = P.Stage("x", "capture", rows=10, length=100, batch_rows=5, upto_layer=35, sae_layers=2)
    tokens = 10 * 100
    expect = (2 * tokens * 36 * 192_946_432) / (989e12 * 0.4) + 2 * (2 * tokens * 4096 * 65536) / (67e12 * 0.5)
    assert P.stage_seconds(S8, 65536, st) == pytest.approx(expect)
    assert P.stage_transient_bytes(S8, 65536, st) == 5 * 100 * 65536 * 4          # no logits, no KV
    gen = P.Stage("g", "generate", rows=4, length=10, batch_rows=2, new_tokens=6)
    assert P.stage_transient_bytes(S8, 65536, gen) == 2 * 16 * 147_456 + 2 * 151_936 * 4
    assert P.stage_seconds(S8, 65536, P.Stage("u", "forward", rows=None, length=10)) == 0.0


# --- notebook plans from the real parameters ------------------------------------------------------

def test_notebook_01_paper_plan_from_its_defaults():
    pl = P.plan_notebook("01", "paper")
    assert dict(pl.downloads)["Qwen/Qwen3-8B-Base (bf16 safetensors)"] == 16_381_470_720
    assert pl.download_bytes == 16_381_470_720 + 36 * 2_147_762_176           # all 36 layers
    assert pl.downloads_unknown == ["Salesforce/wikitext (wikitext-103-raw-v1, test)"]
    # weights + 2 cached SAE layers + float32 logits of one 16 x 128 batch
    assert pl.peak_bytes == 16_381_470_720 + 2 * 2_147_762_176 + 16 * 128 * 151_936 * 4
    # capture: 256 x 128 tokens x 36 passes to layer 35; two loss forwards per layer; 36 SAE encodes
    tok = 256 * 128 * 36
    expect = (2 * tok * 36 * 192_946_432 + 2 * tok * 15_136_802_816) / (989e12 * 0.4) \
        + 2 * tok * 4096 * 65536 / (67e12 * 0.5)
    assert pl.gpu_hours * 3600 == pytest.approx(expect)
    assert not pl.lower_bound


def test_overrides_change_the_plan_like_papermill_parameters():
    pl = P.plan_notebook("01", "paper", {"layers": "[9, 18]", "with_loss": False})   # -p passes a string
    assert pl.download_bytes == 16_381_470_720 + 2 * 2_147_762_176
    pl4 = P.plan_notebook("04", "paper", {"layers": [18, 27], "langs": ["en"], "n_disc": 10, "n_eval": 5})
    (st,) = pl4.stages
    assert (st.rows, st.length, st.upto_layer, st.sae_layers) == (2 * 15, 256, 27, 2)


def test_notebook_04_paper_holds_a_pass_of_layers():
    pl = P.plan_notebook("04", "paper")
    # layers_per_pass 4 SAE layers alive + float32 pre-activations of a 32 x 256 batch; 9 passes
    assert pl.peak_bytes == 16_381_470_720 + 4 * 2_147_762_176 + 32 * 256 * 65536 * 4
    assert len(pl.stages) == 9 and {s.rows for s in pl.stages} == {13 * 2 * (2000 + 500)}
    assert pl.dominant.startswith("SAE encode (fp32)")


def test_notebook_03_unknown_item_counts_make_a_lower_bound():
    full = P.plan_notebook("03", "paper")
    assert full.lower_bound                                            # SuperGPQA etc.: count not stated
    one = P.plan_notebook("03", "paper", {"paper_benchmarks": ["GSM8K"]})
    assert not one.lower_bound and [s.rows for s in one.stages] == [1319]


def test_token_budget_cuts_the_batch_not_the_flops():
    # 65,536-token budget over rows of 256 + 4,096 tokens: 15 rows per batch (a row is never split)
    st = P.Stage("g", "generate", rows=512, length=256, batch_rows=512, new_tokens=4096, max_tokens=65_536)
    assert st.batch == 15
    assert P.Stage("g", "generate", rows=4, length=256, batch_rows=4, new_tokens=4096, max_tokens=100).batch == 1
    assert P.stage_transient_bytes(S8, 65536, st) == 15 * 4352 * 147_456 + 15 * 151_936 * 4
    one = P.Stage("g", "generate", rows=512, length=256, batch_rows=512, new_tokens=4096)
    # prefill FLOPs are the same; decode runs ceil(512 / 15) = 35 batches, each re-reading the weights
    prefill = P.compute_seconds(P.forward_flops(S8, 512 * 256))
    assert P.stage_seconds(S8, 65536, st) == pytest.approx(prefill + P.decode_seconds(S8, 512, 256, 4096, 15))
    assert P.stage_seconds(S8, 65536, st) > P.stage_seconds(S8, 65536, one)
    assert P.LOGITS_CHUNK_TOKENS == __import__("qscope_utils.batching").batching.DEFAULT_CHUNK_TOKENS == 4096


def test_notebook_07_paper_peak_follows_the_budgets():
    pl = P.plan_notebook("07", "paper")
    # inference: weights + 1 SAE layer + KV of 15 rows x 4,352 tokens x 147,456 B + sampling logits of 15 rows
    infer = 16_381_470_720 + 2_147_762_176 + 15 * 4352 * 147_456 + 15 * 151_936 * 4
    assert max(b for _, b in pl.stage_peaks(training=False)) == infer == 28_164_276_736
    # training, full fine-tune, 1 GPU: 4N weights + 4N grads + 8N AdamW + 2N bf16 copies (N = 8,190,735,360)
    # + 4 rows x 4,352 tokens x 887,808 B/token (checkpointed: 36 x 4d + one layer 257,024 + head 10d)
    # + TRL's 4,096 x 32,768 fp32 head tile; plus the SAE layer
    train = 18 * 8_190_735_360 + 4 * 4352 * 887_808 + 4096 * 32768 * 4
    assert pl.train_bytes == train == 163_425_069_056
    assert pl.peak_bytes == train + 2_147_762_176 and pl.peak_stage == "DAPO updates"
    assert P.H100_MEMORY_BYTES < pl.peak_bytes < 200e9                  # not the 1.3 TB of one 512-row batch
    assert any("lora_r 16" in n and "zero3_8b.yaml" in n for n in pl.notes)
    assert pl.dominant.startswith("DAPO rollouts")
    lora = P.plan_notebook("07", "paper", {"lora_r": 16})
    assert lora.peak_bytes < P.H100_MEMORY_BYTES and "yes" in P.format_table([lora]).splitlines()[2]


def test_notebook_06_paper_peak_is_the_sasft_micro_batch():
    pl = P.plan_notebook("06", "paper")
    # 18N (fp32 weights, grads, AdamW, bf16 copies; N = 1,720,574,976) + 1 x 2,048 tokens x 3,776,512 B/token
    # (gradient checkpointing on, TRL's SFTConfig default: 384,000 B/token = 28 x 4d + one layer's 134,144 + 10d)
    # + head tile; + 2 SAE layers of the 1.7B W32K group
    train = 18 * 1_720_574_976 + 2048 * 384_000 + 4096 * 32768 * 4
    assert pl.train_bytes == train == 32_293_652_480
    assert pl.peak_bytes == train + 2 * 537_010_176 and pl.peak_stage == "SFT / SASFT training"
    # evaluation generation: 32 rows x (256 + 512) tokens of KV (1.7B: 114,688 B/token) + sampling logits
    gen = dict(pl.stage_peaks(training=False))["evaluation generation"]
    assert gen == 3_441_149_952 + 2 * 537_010_176 + 32 * 768 * 114_688 + 32 * 151_936 * 4


def test_training_rows_use_the_fit_memory_model():
    from qscope_utils import fit

    pl6 = P.plan_notebook("06", "paper")
    want = fit.training_peak_bytes(S17, lora_r=0, n_gpus=1, sharded=False, tokens_per_micro_batch=1 * 2048,
                                   grad_checkpointing=True).total
    assert pl6.train_bytes == want and not pl6.peak_unknown
    pl7 = P.plan_notebook("07", "paper", {"lora_r": 16})
    assert pl7.train_bytes == fit.training_peak_bytes(S8, lora_r=16, n_gpus=1, sharded=False,
                                                      tokens_per_micro_batch=4 * (P.ASSUMED_PROMPT_TOKENS + 4096),
                                                      grad_checkpointing=True).total


def test_training_call_site_passes_the_notebook_sizes(monkeypatch):
    """The 06/07 training rows call fit.training_peak_bytes with the notebook's sizes (a recording stand-in
    for the module here, so the call site is checked whichever branch provides the real one)."""
    import types
    from typing import NamedTuple

    class Peak(NamedTuple):
        total: int

    calls = []
    fake = types.ModuleType("qscope_utils.fit")
    fake.training_peak_bytes = lambda shape, **kw: calls.append((shape, kw)) or Peak(123_000_000_000)
    monkeypatch.setitem(sys.modules, "qscope_utils.fit", fake)
    pl = P.plan_notebook("06", "paper", {"accelerate_config": "zero3_8b.yaml", "num_processes": 8, "lora_r": 8})
    assert calls[0] == (S17, dict(lora_r=8, n_gpus=8, sharded=True, tokens_per_micro_batch=1 * 2048,
                                  grad_checkpointing=True))
    assert [c[1]["lora_r"] for c in calls[1:]] == [16, 8]        # the alternatives named when it does not fit
    assert pl.train_bytes == 123_000_000_000 and pl.peak_bytes == 123_000_000_000 + 2 * 537_010_176
    assert "NO" in P.format_table([pl]).splitlines()[2]
    monkeypatch.setitem(sys.modules, "qscope_utils.fit", None)          # module absent: "?" and a note
    missing = P.plan_notebook("07", "paper")
    assert missing.peak_unknown and any("training_peak_bytes" in n for n in missing.notes)


def test_bad_parameters_get_clear_errors():
    with pytest.raises(P.PlanError, match="n_texts='many' must be an integer"):
        P.plan_notebook("01", "paper", {"n_texts": "many"})
    with pytest.raises(P.PlanError, match="no parameter.*bogus.*its parameters are"):
        P.plan_notebook("01", "paper", {"bogus": 1})
    with pytest.raises(P.PlanError, match="layer 40 is out of range"):
        P.plan_notebook("01", "paper", {"layers": [40]})
    with pytest.raises(P.PlanError, match="no selected notebook .* has parameter"):
        P.plan_all("paper", {"nope": 1})


def test_show_plan_prints_the_row_and_never_stops_the_notebook(capsys):
    ns = {**P.notebook_defaults("05"), "profile": "paper"}
    assert P.show_plan("05", ns).notebook == "05"
    out = capsys.readouterr().out
    assert "05  Qwen3-8B-Base" in out and "allenai/wildjailbreak" in out
    assert P.show_plan("05", {**ns, "layer": 99}) is None
    assert "no plan" in capsys.readouterr().out


# --- the CLI ---------------------------------------------------------------------------------------

def _cli(tmp_path, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "QSCOPE_HOME": str(ROOT), "HF_HUB_OFFLINE": "1",
           "QSCOPE_RESULTS": str(tmp_path / "res"), "HF_HOME": str(tmp_path / "hf")}
    return subprocess.run([sys.executable, "-m", "qscope_utils.runner", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_prints_all_seven_rows_and_runs_nothing(tmp_path):
    r = _cli(tmp_path, "--profile", "paper", "--plan")
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln[:4] in {f"{n}  " for n in P.NOTEBOOKS}]
    assert [ln[:2] for ln in rows] == list(P.NOTEBOOKS)
    assert "93.7 GB + ?" in rows[0] and "Qwen3-1.7B-Base" in rows[5]
    assert not (tmp_path / "res").exists() and not (tmp_path / "hf").exists()    # nothing run or downloaded
    sub = _cli(tmp_path, "--profile", "paper", "--plan", "--only", "4", "-p", "n_disc", "10")
    assert sub.returncode == 0 and [ln[:2] for ln in sub.stdout.splitlines() if ln.startswith("04  ")] == ["04"]
    assert not any(ln.startswith("01  ") for ln in sub.stdout.splitlines())


def test_cli_plan_on_smoke_and_bad_parameter(tmp_path):
    r = _cli(tmp_path, "--profile", "smoke", "--plan")
    assert r.returncode == 0, r.stderr
    assert sum(ln[:2] in P.NOTEBOOKS and "- (built)" in ln for ln in r.stdout.splitlines()) == 7
    bad = _cli(tmp_path, "--profile", "paper", "--plan", "--only", "01", "-p", "n_texts", "lots")
    assert bad.returncode == 2 and "n_texts='lots' must be an integer" in bad.stderr


def test_every_section_notebook_shows_its_own_plan_first():
    for nb in P.NOTEBOOKS:
        (src,) = (ROOT / "notebooks" / "src").glob(f"{nb}_*.py")
        lines = [ln for ln in src.read_text().splitlines() if "show_plan(" in ln]
        assert lines == [f'from qscope_utils.plan import show_plan; show_plan("{nb}", globals())  '
                         f'# downloads, peak GPU memory, GPU time (nothing runs)'], src.name
