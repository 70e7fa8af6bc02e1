"""§7 SASFT on TRL: the official per-layer penalty on a hand-computed case, the SFTTrainer subclass
(matched lambda = 0 control, the penalty acts, float32 master weights) and a 2-process CPU launch."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from conftest import make_sae_state
from qscope_utils import sasft
from qscope_utils import sasft_trainer as st
from qscope_utils.sae import TopKSAE

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the official formula
def test_official_penalty_two_layers_hand_computed():
    """Two layers; example 0 answers in en (penalised), example 1 in zh (its own language: lang mask 0).

    Layer 1, features (3, 11), alpha_en = (0.5, 1.0): example 0's response tokens t = 1, 2 give
    relu(3 - 0.5) + relu(0.5 - 1) + relu(0 - 0.5) + relu(4 - 1) = 2.5 + 0 + 0 + 3 = 5.5; the prompt
    token t = 0 (pre 1.0 / -2.0) is not a response token. Denominator: ALL response tokens of the batch
    (2 + 2) x 2 features + 1 = 9 -> 5.5 / 9.
    Layer 2, feature 5, alpha_en = 0: relu(-1) + relu(1.5) = 1.5 over (4 x 1 + 1) = 5 -> 0.3.
    Summed over layers: 5.5 / 9 + 0.3.
    """
    W = torch.zeros(4, 64)
    saes = {l: TopKSAE.from_state_dict({"W_enc": W.T.clone(), "W_dec": W.clone(), "b_enc": torch.zeros(64),
                                        "b_dec": torch.zeros(4)}, k=4) for l in (1, 2)}
    tab = pd.DataFrame([{"layer": 1, "feature": 3, "target": "zh", "alpha_en": 0.5, "alpha_zh": 9.0},
                        {"layer": 1, "feature": 11, "target": "zh", "alpha_en": 1.0, "alpha_zh": 9.0},
                        {"layer": 2, "feature": 5, "target": "zh", "alpha_en": 0.0, "alpha_zh": 9.0}])
    pen = sasft.SASFTPenalty(saes, tab)
    pre1 = torch.tensor([[[1.0, -2.0], [3.0, 0.5], [0.0, 4.0]],
                         [[10.0, 10.0], [10.0, 10.0], [10.0, 10.0]]])
    pre2 = torch.tensor([[[2.0], [-1.0], [1.5]], [[10.0], [10.0], [10.0]]])
    mask = torch.tensor([[False, True, True], [True, True, False]])
    pen._pre = {1: pre1, 2: pre2}
    terms = pen.layer_terms(mask, ["en", "zh"])
    assert float(terms[1]) == pytest.approx(5.5 / 9, abs=1e-7)
    assert float(terms[2]) == pytest.approx(0.3, abs=1e-7)
    pen._pre = {1: pre1, 2: pre2}
    assert float(pen.loss(mask, ["en", "zh"])) == pytest.approx(5.5 / 9 + 0.3, abs=1e-7)
    # the same number from the function itself; a mean (no +1) or averaging over layers would differ
    one = sasft.official_layer_penalty(pre2, torch.zeros(2, 1), torch.tensor([[True], [False]]), mask)
    assert float(one) == pytest.approx(0.3, abs=1e-7)
    with pytest.raises(ValueError, match="shapes"):
        sasft.official_layer_penalty(pre2, torch.zeros(2, 2), torch.ones(2, 2, dtype=torch.bool), mask)


# ----------------------------------------------------------------------------- the trainer
def _setup(tiny_model):
    model, tok = tiny_model
    d = model.config.hidden_size
    saes = {2: TopKSAE.from_state_dict(make_sae_state(d, 64, seed=2), k=8)}
    ex = [sasft.SFTExample(p, r, "fr", "en") for p, r in
          [("Bonjour", "The quick brown fox."), ("Привет", "Sparse features."), ("床前明月光", "1 + 2 = 3"),
           ("Bonjour tout", "def f(x): return x")]] * 2
    tab = pd.DataFrame([{"layer": 2, "feature": f, "target": "zh", "alpha_en": 0.0} for f in (3, 11)])
    pen = sasft.SASFTPenalty(saes, tab)
    ds = st.sft_dataset(tok, ex[:4], 64)
    batch = st.SASFTCollator(tok.pad_token_id)([ds[i] for i in range(4)])
    with pen.attach(model), torch.no_grad():                  # alpha a little below the typical pre-act
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        pen.alpha["en"] = pen.pre_acts()[batch["labels"] != -100].mean(0) - 0.5
    pen._pre.clear()
    return model, tok, ex, pen


def test_trainer_control_matched_penalty_acts_fp32(tiny_model, tmp_path):
    model, tok, ex, pen = _setup(tiny_model)
    w0 = model.model.embed_tokens.weight.detach().clone()
    args = st.SASFTTrainArgs(steps=8, batch_size=2, effective_batch=4, lr=3e-3, warmup=1, max_length=64)
    m0, log0 = st.train_sasft(model, tok, ex, args, pen, 0.0, output_dir=tmp_path / "a")
    m1, log1 = st.train_sasft(model, tok, ex, args, pen, 5.0, output_dir=tmp_path / "b")
    assert torch.equal(model.model.embed_tokens.weight, w0)                    # the base model is untouched
    assert len(log0) == len(log1) == 8
    # same data order and weights at step 0: same CE, same measured penalty; lambda enters the loss exactly
    assert log0.penalty.iloc[0] == pytest.approx(log1.penalty.iloc[0], rel=1e-5)
    assert log1.loss.iloc[0] == pytest.approx(log0.loss.iloc[0] + 5.0 * 2 * log1.penalty.iloc[0], rel=1e-4)
    assert log1.penalty.iloc[-3:].mean() < log0.penalty.iloc[-3:].mean()      # the regulariser acts
    assert all(p.dtype == torch.float32 for p in m1.parameters())              # fp32 master weights
    assert not m1.training and not any(b._forward_hooks for b in m1.model.layers)   # hooks removed
    with pytest.raises(ValueError, match="SASFTPenalty"):
        st.train_sasft(model, tok, ex, args, None, 1.0, output_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="effective_batch"):
        st.sft_config(st.SASFTTrainArgs(batch_size=3, effective_batch=8), tmp_path)


def test_lora_option_trains_an_adapter_and_merges(tiny_model, tmp_path):
    model, tok, ex, pen = _setup(tiny_model)
    args = st.SASFTTrainArgs(steps=2, batch_size=2, effective_batch=2, lr=1e-2, warmup=0, max_length=64, peft_lora_r=4)
    m, log = st.train_sasft(model, tok, ex, args, pen, 1.0, output_dir=tmp_path)
    assert type(m) is type(model) and len(log) == 2 and log.penalty.notna().all()        # merged back to a plain model
    changed = [n for (n, a), b in zip(m.named_parameters(), model.parameters()) if not torch.equal(a, b)]
    assert changed and all("proj" in n for n in changed)                   # only the LoRA-adapted linear layers
    assert torch.equal(m.model.embed_tokens.weight, model.model.embed_tokens.weight)


def test_paper_schedule_is_official(tmp_path):
    a = st.SASFTTrainArgs.for_paper("Qwen3-1.7B-Base")
    assert (a.lr, a.effective_batch, a.weight_decay, a.scheduler, a.max_length, a.bf16) == \
        (5e-5, 32, 0.1, "cosine", 2048, True)
    assert st.SASFTTrainArgs.for_paper("Qwen3-8B-Base").lr == 5e-6
    cfg = st.sft_config(a.__class__(**{**a.__dict__, "use_cpu": True, "bf16": False}), tmp_path, num_processes=4)
    assert cfg.gradient_accumulation_steps == 8 and cfg.per_device_train_batch_size == 1   # 1 x 4 x 8 = 32
    assert cfg.lr_scheduler_type == "cosine" and cfg.weight_decay == 0.1 and cfg.max_length == 2048
    ft = st.feature_table_for(pd.DataFrame([{"target": "zh", "layer": 1}, {"target": "ru", "layer": 1}]), "ru")
    assert list(ft.target) == ["ru"]


# ----------------------------------------------------------------------------- 2-process launch
@pytest.mark.slow
def test_two_process_cpu_launch(tiny_model_dir, tmp_path):
    from qscope_utils import launch
    from qscope_utils.generation import load_backbone

    model, tok = load_backbone(str(tiny_model_dir))
    d = model.config.hidden_size
    saes = {2: TopKSAE.from_state_dict(make_sae_state(d, 64, seed=2), k=8)}
    tab = pd.DataFrame([{"layer": 2, "feature": f, "target": "zh", "alpha_en": 0.0} for f in (3, 11)])
    ex = [sasft.SFTExample("Bonjour", "The quick brown fox.", "fr", "en")] * 8
    args = st.SASFTTrainArgs(steps=2, batch_size=1, effective_batch=4, lr=1e-3, warmup=0, max_length=64)
    job = launch.write_sasft_job(tmp_path / "run", str(tiny_model_dir), ex, tab, saes, args, 1.0)
    launch.run_launch(launch.accelerate_command("sasft_trainer", job, num_processes=2, cpu=True), tmp_path / "log.txt",
                      timeout=240)
    done = json.loads((tmp_path / "run" / "DONE").read_text())
    assert done["processes"] == 2 and done["steps"] == 2
    m, _, log = launch.read_run(tmp_path / "run")
    assert len(log) == 2 and log.penalty.notna().all()
    assert any(not torch.equal(a, b) for a, b in zip(m.parameters(), model.parameters()))


# ----------------------------------------------------------------------------- memory: truncation, micro-batches, logits
def test_truncation_count_and_cut_rows(tiny_model):
    _, tok = tiny_model
    ex = [sasft.SFTExample("Bonjour", "The quick brown fox jumps over the lazy dog. " * 3, "fr", "en"),
          sasft.SFTExample("Hi", "1 + 2", "fr", "en"),
          sasft.SFTExample("Bonjour tout le monde. " * 8, "Yes.", "fr", "en")]
    P = [len(tok(sasft.format_prompt(e.prompt))["input_ids"]) for e in ex]
    R = [len(tok(e.response + sasft.CHAT_END, add_special_tokens=False)["input_ids"]) for e in ex]
    L = P[0] + 20                                  # example 0 keeps 20 response tokens; example 2's prompt fills L
    assert P[1] + R[1] <= L < P[0] + R[0] and P[2] >= L, (P, R, L)
    tc = st.truncation_count(tok, ex, L)
    assert tc == st.TruncationCount(n_examples=3, truncated=2, dropped=1, longest=max(p + r for p, r in zip(P, R)))
    ds = st.sft_dataset(tok, ex, L)
    assert len(ds) == 2                            # the dropped one is not trained on
    assert len(ds[0]["input_ids"]) == L and sum(x != -100 for x in ds[0]["labels"]) == 20
    full = tok(ex[0].response + sasft.CHAT_END, add_special_tokens=False)["input_ids"]
    assert ds[0]["labels"][-20:] == full[:20]       # the response's head survives, its tail is cut
    assert len(ds[1]["input_ids"]) == P[1] + R[1]
    assert st.truncation_count(tok, ex, 10_000) == (3, 0, 0, tc.longest)


class _GradGrab:
    """Trainer callback: a copy of every gradient just before the first optimizer step."""

    def __init__(self):
        from transformers import TrainerCallback

        grab = self

        class CB(TrainerCallback):
            def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
                if not grab.grads:
                    grab.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

        self.cb, self.grads = CB(), {}


def _first_step_grads(model, tok, ex, batch_size, effective, tmp_path, pen=None, lam=0.0):
    args = st.SASFTTrainArgs(steps=1, batch_size=batch_size, effective_batch=effective, lr=1e-3, warmup=0,
                             max_length=64, grad_clip=1e9)
    trainer = st.build_sasft_trainer(model, tok, ex, args, pen, lam, output_dir=tmp_path)
    g = _GradGrab()
    trainer.add_callback(g.cb)
    try:
        trainer.train()
    finally:
        trainer.detach()
    return g.grads, trainer


def test_micro_batches_accumulate_to_the_same_gradient(tiny_model, tmp_path):
    """One optimizer step of 4 examples: 1 micro-batch of 4 == 4 micro-batches of 1 (accumulation), for the CE.

    TRL normalises the CE by the response tokens of the whole accumulation window, so splitting the batch
    changes nothing; a wrong normalisation (mean per micro-batch, then / 4) would differ by the token shares."""
    model, tok, ex, pen = _setup(tiny_model)
    g4, _ = _first_step_grads(model, tok, ex, 4, 4, tmp_path / "a", pen, 0.0)
    g1, tr1 = _first_step_grads(model, tok, ex, 1, 4, tmp_path / "b", pen, 0.0)
    assert tr1.args.gradient_accumulation_steps == 4 and len(tr1.penalty_log) == 4
    assert g4.keys() == g1.keys() and len(g4) == len(list(model.parameters()))
    for n in g4:
        torch.testing.assert_close(g1[n], g4[n], rtol=1e-4, atol=1e-6, msg=n)
    assert max(float(g.abs().max()) for g in g4.values()) > 1e-3          # a real gradient, not zeros


def test_training_never_builds_vocabulary_logits(tiny_model, tmp_path):
    """TRL's fused LM head scores response tokens in tiles: the LM head module never runs in a training step,
    so no (batch x length x vocabulary) logits (nor a float32 copy of them) are made."""
    model, tok, ex, pen = _setup(tiny_model)
    args = st.SASFTTrainArgs(steps=2, batch_size=2, effective_batch=4, lr=1e-3, warmup=0, max_length=64)
    trainer = st.build_sasft_trainer(model, tok, ex, args, pen, 1.0, output_dir=tmp_path)
    calls = []
    h = trainer.model.lm_head.register_forward_hook(lambda m, i, o: calls.append(tuple(o.shape)))
    try:
        trainer.train()
    finally:
        trainer.detach()
        h.remove()
    assert calls == [] and len(trainer.penalty_log) == 4


def test_master_weights_fp32_full_and_lora_over_bf16_base(tiny_model, tmp_path):
    model, tok, ex, pen = _setup(tiny_model)
    bf = model.to(torch.bfloat16)
    args = st.SASFTTrainArgs(steps=1, batch_size=2, effective_batch=2, warmup=0, max_length=64)
    full = st.build_sasft_trainer(bf, tok, ex, args, output_dir=tmp_path / "a")
    assert all(p.dtype == torch.float32 for p in full.model.parameters())          # AdamW on float32 weights
    assert next(bf.parameters()).dtype == torch.bfloat16                           # the caller's model untouched
    lora = st.build_sasft_trainer(bf, tok, ex, st.SASFTTrainArgs(**{**args.__dict__, "peft_lora_r": 2}),
                                  output_dir=tmp_path / "b")
    train = [p for p in lora.model.parameters() if p.requires_grad]
    frozen = [p for p in lora.model.parameters() if not p.requires_grad]
    assert train and all(p.dtype == torch.float32 for p in train)                  # float32 adapters
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)               # frozen base stays bf16


def test_refused_before_any_step_when_it_cannot_fit(tiny_model, tmp_path, monkeypatch):
    from qscope_utils import fit

    model, tok, ex, pen = _setup(tiny_model)
    shape = fit.shape_from_config(model.config)
    args = st.SASFTTrainArgs(steps=1, batch_size=2, effective_batch=2, warmup=0, max_length=64)
    need = fit.training_peak_bytes(shape, tokens_per_micro_batch=2 * 64, grad_checkpointing=False,
                                   base_bytes=4).total
    built = []
    monkeypatch.setattr(st, "_trainer_class", lambda: built.append(1))
    with pytest.raises(fit.TrainingDoesNotFit, match="lora_r=16"):
        st.build_sasft_trainer(model, tok, ex, st.SASFTTrainArgs(**{**args.__dict__, "gpu_memory_gb": need / 2e9}),
                               output_dir=tmp_path)
    assert built == []                                                              # refused before the trainer
    mem = st.check_fits(model, lora_r=0, base_bytes=4, tokens_per_micro_batch=128, use_cpu=True,
                        gpu_memory_gb=need / 0.8e9)
    assert mem.total == need
    assert st.check_fits(model, lora_r=0, base_bytes=4, tokens_per_micro_batch=128, use_cpu=True,
                         gpu_memory_gb=None) is None                                # CPU run, no size given
