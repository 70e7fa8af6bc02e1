"""§8 on TRL: the DAPO configuration (loss type, clip, no KL, mini-batch updates), TRL's loss against the
hand-computed reference, reward values on constructed completions, one steered row per group through
``rollout_func``, the old policy of steered rows, the SAE-arm re-weighting and a 2-process CPU launch."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from qscope_utils import dapo as D
from qscope_utils import dapo_trainer as DT
from qscope_utils.mini.tasks import Problem
from qscope_utils.repetition import RepetitionDetector

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    base = dict(G=3, n_prompts=2, n_steps=1, max_new_tokens=6, cache_len=2, ppo_epochs=1, minibatches=2, lr=1e-3)
    return D.DAPOConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- configuration
def test_grpo_config_is_dapo(tmp_path):
    cfg = D.DAPOConfig.for_profile("mini")
    a = DT.grpo_config(cfg, tmp_path)
    assert a.loss_type == "dapo" and a.epsilon == 0.2 and a.epsilon_high == 0.28 and a.beta == 0.0
    assert a.scale_rewards == "group" and a.num_generations == cfg.G and a.top_k == 0
    # one generation batch of n_prompts x G rollouts, split into `minibatches` optimizer steps
    assert a.steps_per_generation == cfg.minibatches == 2 and a.gradient_accumulation_steps == 1
    assert a.per_device_train_batch_size * a.steps_per_generation == cfg.n_prompts * cfg.G
    assert a.max_steps == cfg.n_steps * cfg.minibatches * cfg.ppo_epochs
    # TRL computes old log-probs once per generation batch exactly when accumulation % (spg x iterations) != 0
    assert a.gradient_accumulation_steps % (a.steps_per_generation * a.num_iterations) != 0
    assert a.gradient_checkpointing is False
    # paper: 512 rollouts, 4 mini-batches of 128; each process trains 16 rows per mini-batch in passes of 4
    p = D.DAPOConfig.for_profile("paper", "1.7B")
    ap = DT.grpo_config(p, tmp_path, num_processes=8)
    assert (ap.per_device_train_batch_size, ap.gradient_accumulation_steps, ap.steps_per_generation) == (4, 4, 16)
    assert 8 * ap.per_device_train_batch_size * ap.steps_per_generation == 512           # rollouts over 8 processes
    assert ap.max_completion_length == 4096 and ap.gradient_checkpointing
    assert ap.gradient_accumulation_steps % (ap.steps_per_generation * ap.num_iterations) != 0   # old log-probs kept
    one = DT.grpo_config(p, tmp_path)                                   # one GPU: 128 rows per mini-batch
    assert (one.per_device_train_batch_size, one.gradient_accumulation_steps, one.steps_per_generation) == (4, 32, 128)
    assert one.generation_batch_size == 512 and one.max_steps == p.n_steps * 4
    small = DT.grpo_config(D.DAPOConfig(**{**p.__dict__, "n_prompts": 1, "G": 2, "minibatches": 1}), tmp_path)
    assert (small.per_device_train_batch_size, small.gradient_accumulation_steps) == (2, 1)   # 2 rows < micro_batch
    with pytest.raises(ValueError, match="micro_batch=5 must divide"):
        DT.grpo_config(D.DAPOConfig(**{**p.__dict__, "micro_batch": 5}), tmp_path)
    with pytest.raises(ValueError, match="mini-batches"):
        DT.grpo_config(_cfg(minibatches=4), tmp_path)
    with pytest.raises(ValueError, match="whole groups"):
        DT.grpo_config(_cfg(n_prompts=3, G=2, minibatches=1), tmp_path, num_processes=2)


def test_rewards_on_constructed_completions():
    corr, over = DT.reward_functions(_cfg(max_new_tokens=12, cache_len=4))
    assert corr(completions=[" 8", " 8 8 8", " 7 then 8", " eight"], answer=[8, 8, 8, 8]) == [1.0, 1.0, -1.0, -1.0]
    lengths = list(range(0, 15))
    got = over(completion_ids=[[1] * n for n in lengths])
    want = D.overlong_penalty(torch.tensor(lengths), 12, 4).tolist()
    assert got == pytest.approx(want)                       # TRL's Eq. 13 = the reference
    assert got[8] == 0.0 and got[10] == pytest.approx(-0.5) and got[12] == -1.0 and got[14] == -1.0
    assert DT.CorrectnessReward("last")(completions=["so 3 then 1,234"], answer=[1234]) == [1.0]


def test_trl_dapo_loss_equals_reference(tiny_model, tmp_path):
    """TRL's loss on a constructed batch (known ratios on both clip sides, mixed lengths) = dapo.dapo_loss."""
    model, tok = tiny_model
    cfg = _cfg()
    tr = DT._trainer_class()(model=model, reward_funcs=DT.reward_functions(cfg), args=DT.grpo_config(cfg, tmp_path),
                             train_dataset=DT.problem_dataset([Problem("1 + 1 =", 2, "math")] * 4),
                             processing_class=tok)
    model.eval()                                               # eval mode: TRL's normaliser is the token count
    pids = torch.tensor([[5, 6, 7], [0, 8, 9]])
    pmask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    cids = torch.tensor([[10, 11, 12], [13, 14, 0]])
    cmask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with torch.no_grad():
        logp, _, _ = tr._get_per_token_logps_and_entropies(model, torch.cat([pids, cids], 1),
                                                           torch.cat([pmask, cmask], 1), 3)
    ratios = torch.tensor([[1.5, 1.25, 0.7], [0.5, 1.1, 3.0]])
    old = logp - torch.log(ratios)
    adv = torch.tensor([1.0, -1.0])
    inputs = {"prompt_ids": pids, "prompt_mask": pmask, "completion_ids": cids, "completion_mask": cmask,
              "advantages": adv, "old_per_token_logps": old, "num_items_in_batch": cmask.sum()}
    got = tr._compute_loss(model, inputs)
    want, st = D.dapo_loss(logp, old, adv, cmask.bool(), 0.2, 0.28)
    assert float(got.detach()) == pytest.approx(float(want), abs=1e-5)
    # hand value: row 0 (A=+1): -min(r, clip(r, .8, 1.28)) = -1.28, -1.25, -0.7; row 1 (A=-1): max(r, clip) = .8, 1.1
    assert float(want) == pytest.approx((-1.28 - 1.25 - 0.7 + 0.8 + 1.1) / 5, abs=1e-5)


def test_steered_advantages_variants():
    adv = torch.tensor([-1.0, 0.5, 0.5, -2.0, 1.0, 1.0])
    s = torch.tensor([True, False, False, True, False, False])
    lengths = torch.tensor([24, 4, 8, 6, 6, 6])
    trunc = torch.tensor([True, False, False, False, False, False])
    same = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy())
    assert torch.equal(same, adv)
    w = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(weight=0.25))
    torch.testing.assert_close(w, torch.tensor([-0.25, 0.5, 0.5, -0.5, 1.0, 1.0]))
    seq = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(aggregation="sequence"))
    # mean normal length = 6: row 0 (24 tokens) x 6/24, row 3 (6 tokens) x 1
    torch.testing.assert_close(seq, torch.tensor([-0.25, 0.5, 0.5, -2.0, 1.0, 1.0]))
    drop = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(drop_truncated=True))
    torch.testing.assert_close(drop, torch.tensor([0.0, 0.5, 0.5, -2.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="aggregation"):
        DT.SteeredRowPolicy(aggregation="mean")
    # normal-row baseline: groups of 3 (row 0 / 3 steered); normal rows zero-sum among themselves
    rew = torch.tensor([-2.0, 1.0, -1.0, -1.5, 1.0, 1.0])
    nb = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(baseline="normal"), rew, 3)
    sd = math.sqrt(2.0)                                   # std of (1, -1) with Bessel's correction
    sd_all = float(torch.tensor([-2.0, 1.0, -1.0]).std())
    torch.testing.assert_close(nb[:3], torch.tensor([(-2.0 - 0.0) / (sd_all + 1e-4), 1 / (sd + 1e-4), -1 / (sd + 1e-4)]))
    torch.testing.assert_close(nb[4:], torch.tensor([0.0, 0.0]))             # equal normal rewards: no signal
    assert float(nb[3]) == pytest.approx(-2.5 / (float(torch.tensor([-1.5, 1.0, 1.0]).std()) + 1e-4), rel=1e-5)
    # drop overlong-only: group 1 all wrong (steered advantage only from length) -> 0; group 2 normal rows right -> kept
    cor = torch.tensor([-1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    oo = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(drop_overlong_only=True), rew, 3,
                               correct=cor)
    torch.testing.assert_close(oo, torch.tensor([0.0, 0.5, 0.5, -2.0, 1.0, 1.0]))
    mixed = DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(drop_overlong_only=True), rew, 3,
                                  correct=torch.tensor([-1.0, 1.0, -1.0, 1.0, 1.0, 1.0]))
    torch.testing.assert_close(mixed, torch.tensor([-1.0, 0.5, 0.5, 0.0, 1.0, 1.0]))   # a right normal row: kept
    with pytest.raises(ValueError, match="baseline"):
        DT.steered_advantages(adv, s, lengths, trunc, DT.SteeredRowPolicy(baseline="normal"))


# ----------------------------------------------------------------------------- rollouts
def _fake_trainer(model):
    return SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m, process_index=0),
                           state=SimpleNamespace(global_step=0), model=model)


def test_rollout_func_steers_first_row_of_each_group(tiny_model):
    model, tok = tiny_model
    G, n = 3, 3
    prompts = [p for p in ("1 + 1 =", "def f(x):", "Bonjour") for _ in range(G)]
    vec = {1: 40.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    calls = []
    h = model.model.layers[1].register_forward_hook(lambda m, i, o: calls.append(1))
    plain = DT.SteeredRollouts(tok, G, 8, seed=3)(prompts, _fake_trainer(model))
    n_plain = len(calls)
    steered = DT.SteeredRollouts(tok, G, 8, steer_vectors=vec, seed=3)(prompts, _fake_trainer(model))
    h.remove()
    assert steered["steered"] == [i % G == 0 for i in range(G * n)]          # rows 0, G, 2G
    assert len(calls) == 2 * n_plain                                          # one batched generate each
    for i in range(G * n):
        same = steered["completion_ids"][i] == plain["completion_ids"][i]
        assert same == (i % G != 0), f"row {i}: steered={i % G == 0} but same={same}"
    assert not any(b._forward_hooks for b in model.model.layers)            # steering removed afterwards
    for k in ("prompt_ids", "completion_ids", "logprobs"):
        assert len(steered[k]) == G * n
    assert all(len(c) == len(l) for c, l in zip(steered["completion_ids"], steered["logprobs"]))
    with pytest.raises(ValueError, match="whole groups"):
        DT.SteeredRollouts(tok, G, 8, steer_vectors=vec)(prompts[:4], _fake_trainer(model))


def test_old_policy_of_steered_rows_is_the_unsteered_policy(tiny_model, monkeypatch, tmp_path):
    """Steered rows are sampled under steering; TRL's old log-probs for them are the UNSTEERED policy's."""
    model, tok = tiny_model
    monkeypatch.setattr(DT, "_problems", lambda cfg, split, n, seed: [Problem(f"{a} + {a} =", 2 * a, "m") for a in range(6)])
    seen = []
    orig = DT._trainer_class()._generate_and_score_completions

    def spy(self, inputs):
        out = orig(self, inputs)
        seen.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in self.last_batch.items()})
        return out

    monkeypatch.setattr(DT._trainer_class(), "_generate_and_score_completions", spy)
    vec = {1: 40.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    base = {k: v.clone() for k, v in model.state_dict().items()}
    DT.train_dapo(model, tok, _cfg(), RepetitionDetector(max_unit=2, min_span=4, min_repeats=2), steer_vectors=vec,
                  output_dir=tmp_path)
    b = seen[0]
    assert "old_per_token_logps" in b                                         # computed once per generation batch
    ids = torch.cat([b["prompt_ids"], b["completion_ids"]], 1)
    am = torch.cat([b["prompt_mask"], b["completion_mask"]], 1)
    ref = type(model)(model.config)
    ref.load_state_dict(base)
    ref.eval()
    pos = (am.cumsum(1) - 1).clamp_min(0)
    T = b["completion_ids"].shape[1]
    with torch.no_grad():
        lg = ref(input_ids=ids, attention_mask=am, position_ids=pos).logits[:, -T - 1:-1].float()
    plain = torch.gather(torch.log_softmax(lg, -1), 2, b["completion_ids"][:, :, None]).squeeze(2)
    m = b["completion_mask"].bool()
    s = b["steered"].bool()
    assert s.sum() == 2 and s.tolist() == [True, False, False, True, False, False]
    torch.testing.assert_close(b["old_per_token_logps"][m], plain[m], atol=1e-4, rtol=1e-4)
    samp = b["sampling_per_token_logps"]
    ms, mn = m & s[:, None], m & ~s[:, None]
    torch.testing.assert_close(samp[mn], plain[mn], atol=1e-4, rtol=1e-4)    # normal rows: on-policy
    assert (samp[ms] - plain[ms]).abs().max() > 1e-2                         # steered rows: the sampler differs


# ----------------------------------------------------------------------------- micro-batches, precision, fit
def _first_update_grads(model, tok, cfg, tmp_path):
    from transformers import TrainerCallback

    grads = {}

    class Grab(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):
            if not grads:
                grads.update({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})

    tr = DT.build_dapo_trainer(model, tok, cfg, output_dir=tmp_path)
    tr.add_callback(Grab())
    tr.train()
    return grads, tr


def test_micro_batches_give_the_same_update(tiny_model, monkeypatch, tmp_path):
    """The first mini-batch (3 of the 6 rollouts) as one pass or as 3 accumulated passes of 1 row: same rollouts,
    same gradient (TRL's DAPO normaliser is the generation batch's token count, rescaled per accumulation window)."""
    model, tok = tiny_model
    monkeypatch.setattr(DT, "_problems", lambda cfg, split, n, seed: [Problem(f"{a} + {a} =", 2 * a, "m") for a in range(6)])
    # a random tiny policy is never right: score text lengths instead so that advantages are not all 0
    monkeypatch.setattr(DT.CorrectnessReward, "__call__", lambda self, completions, answer, **_:
                        [float(sum(map(ord, c)) % 5) for c in completions])
    g1, t1 = _first_update_grads(model, tok, _cfg(max_grad_norm=1e9), tmp_path / "a")
    g3, t3 = _first_update_grads(model, tok, _cfg(max_grad_norm=1e9, micro_batch=1), tmp_path / "b")
    assert (t1.args.gradient_accumulation_steps, t3.args.gradient_accumulation_steps) == (1, 3)
    assert torch.equal(t1.last_batch["completion_ids"], t3.last_batch["completion_ids"])     # same rollouts
    assert g1.keys() == g3.keys() and g1
    for n in g1:
        torch.testing.assert_close(g3[n], g1[n], rtol=1e-4, atol=1e-6, msg=n)
    assert max(float(g.abs().max()) for g in g1.values()) > 1e-4
    assert t1.state.global_step == t3.state.global_step == 2                                   # 2 mini-batch updates


def test_fp32_master_weights_and_refusal(tiny_model, monkeypatch, tmp_path):
    from qscope_utils import fit

    model, tok = tiny_model
    monkeypatch.setattr(DT, "_problems", lambda cfg, split, n, seed: [Problem(f"{a} + {a} =", 2 * a, "m") for a in range(6)])
    tr = DT.build_dapo_trainer(model.to(torch.bfloat16), tok, _cfg(), output_dir=tmp_path / "a")
    assert all(p.dtype == torch.float32 and p.requires_grad for p in tr.model.parameters())   # AdamW on fp32
    # refused before the trainer is built when the given GPU is too small, naming LoRA and the 8-GPU configs
    longest = max(len(tok(f"{a} + {a} =")["input_ids"]) for a in range(6))
    need = fit.training_peak_bytes(fit.shape_from_config(model.config), tokens_per_micro_batch=3 * (longest + 6),
                                   grad_checkpointing=False).total
    built = []

    class Built(Exception):
        pass

    def stub():
        built.append(1)
        raise Built

    monkeypatch.setattr(DT, "_trainer_class", stub)
    with pytest.raises(fit.TrainingDoesNotFit, match="zero3_8b.yaml") as e:
        DT.build_dapo_trainer(model, tok, _cfg(gpu_memory_gb=need / 1.2e9), output_dir=tmp_path / "b")
    assert "DAPO" in str(e.value) and "lora_r=16" in str(e.value) and built == []
    with pytest.raises(fit.TrainingDoesNotFit):                  # the micro-batch sizes the check: 3 rows do not fit
        DT.build_dapo_trainer(model, tok, _cfg(gpu_memory_gb=need / 0.95e9), output_dir=tmp_path / "c")
    with pytest.raises(Built):                                   # fits: the trainer is built
        DT.build_dapo_trainer(model, tok, _cfg(gpu_memory_gb=need / 0.85e9), output_dir=tmp_path / "d")
    assert built == [1]


# ----------------------------------------------------------------------------- 2-process launch
@pytest.mark.slow
def test_two_process_cpu_launch(tiny_model_dir, tmp_path):
    from qscope_utils import launch

    cfg = _cfg(n_prompts=2, G=2, minibatches=1, n_steps=2, n_train_problems=20)
    vec = {1: 10.0 * torch.randn(32, generator=torch.Generator().manual_seed(0))}
    job = launch.write_dapo_job(tmp_path / "run", str(tiny_model_dir), cfg, vec,
                                {"policy": {"aggregation": "sequence"}, "detector": {"max_unit": 2, "min_span": 4}})
    launch.run_launch(launch.accelerate_command("dapo_trainer", job, num_processes=2, cpu=True), tmp_path / "log.txt",
                      timeout=240)
    done = json.loads((tmp_path / "run" / "DONE").read_text())
    assert done["processes"] == 2 and done["steps"] == 2
    _, _, log = launch.read_run(tmp_path / "run")
    assert len(log) == 2 and log.steered_reward.notna().all() and math.isfinite(log.loss.iloc[-1])


def test_launch_modes_and_commands(tmp_path):
    from qscope_utils import launch

    assert launch.obtain("a", "inline", None, "dapo_trainer", lambda: ("m", "log"), None) == ("m", "log")
    with pytest.raises(ValueError, match="run_dir"):
        launch.obtain("a", "launch", None, "dapo_trainer", None, None)
    with pytest.raises(FileNotFoundError, match="DONE"):
        launch.obtain("a", "read", tmp_path, "dapo_trainer", None, None)       # not finished: says so
    with pytest.raises(ValueError, match="inline"):
        launch.obtain("a", "later", tmp_path, "dapo_trainer", None, None)
    cmd = launch.accelerate_command("sasft_trainer", "j.json", config="zero3_8b.yaml")
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and cmd[-4:] == ["-m", "qscope_utils.sasft_trainer", "--job", "j.json"]
    assert str(launch.ACCELERATE_CONFIGS / "zero3_8b.yaml") in cmd
    for f in ("ddp_1.7b.yaml", "zero3_8b.yaml", "fsdp_8b.yaml"):
        import yaml

        c = yaml.safe_load((launch.ACCELERATE_CONFIGS / f).read_text())
        assert c["mixed_precision"] == "bf16" and c["num_processes"] > 1
    assert yaml.safe_load((launch.ACCELERATE_CONFIGS / "zero3_8b.yaml").read_text())["deepspeed_config"]["zero_stage"] == 3
    with pytest.raises(FileNotFoundError, match="ddp_1.7b.yaml"):
        launch.accelerate_command("dapo_trainer", "j.json", config="nope.yaml")
    assert "torch.distributed.run" in launch.accelerate_command("dapo_trainer", "j.json", num_processes=2, cpu=True)


def test_dapo_job_round_trips_the_config_with_its_tuple_fields(tiny_model_dir, tmp_path):
    from qscope_utils import launch

    cfg = _cfg(n_prompts=2, G=2)
    job = launch.write_dapo_job(tmp_path / "run", str(tiny_model_dir), cfg, None, {})
    back = launch.load_dapo_job(job)["cfg"]
    assert back == cfg                                   # lists from JSON are tuples again (regime grid, styles ...)
    assert isinstance(back.regime_temperatures, tuple)
