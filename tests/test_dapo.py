"""DAPO pieces against hand-computed cases, the log-prob alignment with generation, and the training loop."""
from __future__ import annotations

import math

import pytest

from conftest_sources import dataset_hub  # noqa: F401
import torch

from qscope_utils.dapo import (DAPOConfig, answer_correct, dapo_loss, group_advantages, overlong_penalty, paper_compute,
                               response_logprobs, steered_rows, task_rewards, train_dapo)
from qscope_utils.repetition import RepetitionDetector, sample_rollouts



pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ loss: hand-computed case
def _case():
    ratios = torch.tensor([[1.5, 1.25, 0.7], [0.5, 1.1, 3.0]])
    old = torch.log(torch.tensor([[0.5, 0.2, 0.4], [0.3, 0.6, 0.1]]))
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    adv = torch.tensor([1.0, -1.0])
    return old + torch.log(ratios), old, adv, mask


def test_dapo_loss_hand_computed_clip_higher_token_level():
    logp, old, adv, mask = _case()
    logp.requires_grad_(True)
    loss, st = dapo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    # A=+1 row: -min(r, clip(r)) = -1.28 (1.5 clipped high), -1.25 (inside 1+0.28), -0.7 (below: unclipped)
    # A=-1 row: max(r, clip(r)) = 0.8 (0.5 clipped low), 1.1; third token masked out
    # token-level: sum over the 5 tokens / 5
    assert float(loss.detach()) == pytest.approx((-1.28 - 1.25 - 0.7 + 0.8 + 1.1) / 5, abs=1e-6)
    assert st["n_tokens"] == 5 and st["clip_high"] == pytest.approx(1 / 5) and st["clip_low"] == pytest.approx(1 / 5)
    loss.backward()
    # d/dlogp of -A r = -A r where unclipped, 0 where the clipped branch is active or masked
    want = torch.tensor([[0.0, -1.25, -0.7], [0.0, 1.1, 0.0]]) / 5
    torch.testing.assert_close(logp.grad, want, atol=1e-6, rtol=0)


def test_dapo_loss_differs_from_symmetric_clip_and_sequence_mean():
    logp, old, adv, mask = _case()
    sym, _ = dapo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    assert float(sym) == pytest.approx((-1.2 - 1.2 - 0.7 + 0.8 + 1.1) / 5, abs=1e-6)   # 1.25 now clipped to 1.2
    tok, _ = dapo_loss(logp, old, adv, mask)
    seq_mean = ((-1.28 - 1.25 - 0.7) / 3 + (0.8 + 1.1) / 2) / 2                          # GRPO's per-sequence mean
    assert abs(float(tok) - seq_mean) > 0.1


def test_dapo_loss_on_policy_equals_minus_mean_advantage_and_validates():
    old = torch.randn(3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[2, 2:] = False
    adv = torch.tensor([0.5, -1.0, 2.0])
    loss, st = dapo_loss(old.clone(), old, adv, mask)
    assert float(loss) == pytest.approx(-(0.5 * 4 - 1.0 * 4 + 2.0 * 2) / 10)
    assert st["clip_low"] == st["clip_high"] == 0 and st["ratio_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        dapo_loss(old, old, adv[:2], mask)
    with pytest.raises(ValueError, match="no response tokens"):
        dapo_loss(old, old, adv, torch.zeros_like(mask))


# ------------------------------------------------------------------ advantages, shaping, reward
def test_group_advantages():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    a = group_advantages(r, eps=0.0 + 1e-12)
    s = math.sqrt(1 / 3)                                 # unbiased std of (1,0,0,1)
    torch.testing.assert_close(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / s)
    assert torch.all(a[1] == 0)                          # no signal in a uniform group
    torch.testing.assert_close(a[2], torch.tensor([-0.5, -0.5, -0.5, 1.5]))   # std of (0,0,0,1) = 0.5
    torch.testing.assert_close(a.mean(1), torch.zeros(3), atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        group_advantages(torch.ones(4))


def test_overlong_penalty():
    L = torch.tensor([10, 16, 20, 24, 30])
    torch.testing.assert_close(overlong_penalty(L, max_len=24, cache_len=8), torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))
    with pytest.raises(ValueError):
        overlong_penalty(L, max_len=8, cache_len=10)


def test_task_rewards_and_steered_rows():
    texts = [" 8", " 8 8 8 8 8 8", " 7 then 8", " eight", " -3"]
    answers = [8, 8, 8, 8, -3]
    lengths = torch.tensor([2, 12, 4, 2, 3])
    rew, cor = task_rewards(texts, answers, lengths, max_len=12, cache_len=4)
    torch.testing.assert_close(cor, torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(rew, torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0]))   # the loop hits L_max: 1 - 1
    torch.testing.assert_close(answer_correct([" 12"], [12]), torch.tensor([1.0]))
    assert steered_rows(3, 4) == [3, 7, 11] and steered_rows(2, 4, 2) == [2, 3, 6, 7]
    with pytest.raises(ValueError):
        steered_rows(2, 4, 4)


def test_config_validation_and_paper():
    with pytest.raises(ValueError, match="eps_high"):
        DAPOConfig(eps_low=0.3, eps_high=0.2)
    with pytest.raises(ValueError):
        DAPOConfig(G=1)
    for m in ("1.7B", "8B"):
        c = DAPOConfig.for_profile("paper", m)
        assert c.profile_overrides()["sae_repo"].startswith("Qwen/SAE-Res-Qwen3-" + m)
        comp = paper_compute(m, c)
        assert comp["gpu_hours_lower_bound"] > 0
    assert paper_compute("8B")["flops"] > paper_compute("1.7B")["flops"]
    assert DAPOConfig.for_profile("mini").profile_overrides() == {}
    with pytest.raises(ValueError):
        DAPOConfig.for_profile("paper", "30B")


# ------------------------------------------------------------------ log-probs match the sampler
def test_response_logprobs_match_generation_scores(tiny_model):
    model, tok = tiny_model
    prompts = ["The quick brown fox jumps", "1 +", "Bonjour tout"]   # different lengths: left padding
    ro = sample_rollouts(model, tok, prompts, max_new_tokens=6, do_sample=False)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**enc, max_new_tokens=6, do_sample=False, output_scores=True, return_dict_in_generate=True,
                         pad_token_id=tok.pad_token_id)
    ref = torch.stack([torch.log_softmax(s.float(), -1) for s in out.scores], 1)      # (B, T', V)
    T = ref.shape[1]
    ref_tok = torch.gather(ref, 2, ro.responses[:, :T, None]).squeeze(2)
    with torch.no_grad():
        lp = response_logprobs(model, ro)
    m = ro.response_mask[:, :T]
    torch.testing.assert_close(lp[:, :T][m], ref_tok[m], atol=1e-4, rtol=0)


# ------------------------------------------------------------------ training loop
def test_update_raises_logprob_of_positive_advantage(tiny_model):
    from qscope_utils.dapo import _update

    model, tok = tiny_model
    cfg = DAPOConfig(G=2, n_prompts=1, lr=1e-2, ppo_epochs=3, max_new_tokens=6, cache_len=2)
    ro = sample_rollouts(model, tok, ["Hello world", "Hello world"], max_new_tokens=6, seed=0)
    with torch.no_grad():
        before = response_logprobs(model, ro)
    _update(model.train(), torch.optim.AdamW(model.parameters(), lr=cfg.lr), ro, torch.tensor([1.0, -1.0]), cfg)
    with torch.no_grad():
        after = response_logprobs(model.eval(), ro)
    m = ro.response_mask.float()
    delta = ((after - before) * m).sum(1) / m.sum(1)
    assert delta[0] > 0 and delta[0] > delta[1]


def test_train_dapo_vanilla_and_steered_arms(tiny_model, monkeypatch):
    from qscope_utils import dapo
    from qscope_utils.mini.tasks import Problem

    model, tok = tiny_model
    probs = [Problem(f"{a} + {a} =", 2 * a, "math") for a in range(10)]
    monkeypatch.setattr(dapo, "_problems", lambda cfg, split, n, seed: probs)
    real = dapo.task_rewards

    def varied(texts, answers, *args):                # a random model never answers right: give the groups
        rew, cor = real(texts, answers, *args)        # some spread, from the text itself
        return rew + torch.tensor([float(len(t) % 3) for t in texts]), cor

    monkeypatch.setattr(dapo, "task_rewards", varied)
    cfg = DAPOConfig(G=3, n_prompts=2, n_steps=2, max_new_tokens=6, cache_len=2, ppo_epochs=1, lr=1e-3)
    det = RepetitionDetector(max_unit=2, min_span=4, min_repeats=2)
    w0 = {k: v.clone() for k, v in model.state_dict().items()}
    pol, cur = train_dapo(model, tok, cfg, det, progress=False)
    assert len(cur) == 2 and {"reward", "accuracy", "repeat_ratio", "loss", "clip_high", "length"} <= set(cur.columns)
    assert all(torch.equal(w0[k], v) for k, v in model.state_dict().items())          # base model untouched
    assert any(not torch.equal(w0[k], v) for k, v in pol.state_dict().items())
    vec = {1: 40.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    _, cur_s = train_dapo(model, tok, cfg, det, steer_vectors=vec, progress=False)
    assert "steered_repeat_ratio" in cur_s.columns and cur_s.steered_reward.notna().all()



def test_train_dapo_first_ratio_is_one_for_steered_and_normal_rows(tiny_model, monkeypatch):
    """Steered rows are sampled under steering but scored (old AND new log-probs) by the unsteered policy."""
    from qscope_utils import dapo
    from qscope_utils.mini.tasks import Problem
    from qscope_utils.steering import steer

    model, tok = tiny_model
    probs = [Problem(f"{a} + {a} =", 2 * a, "math") for a in range(10)]
    monkeypatch.setattr(dapo, "_problems", lambda cfg, split, n, seed: probs)
    real_loss, real_sample = dapo.dapo_loss, dapo.sample_rollouts
    seen, rolls = [], []

    def rec_loss(logp, old, adv, mask, *a):
        seen.append((logp.detach().clone(), old.clone(), mask.clone()))
        return real_loss(logp, old, adv, mask, *a)

    def rec_sample(*a, **k):
        ro = real_sample(*a, **k)
        rolls.append(ro)
        return ro

    monkeypatch.setattr(dapo, "dapo_loss", rec_loss)
    monkeypatch.setattr(dapo, "sample_rollouts", rec_sample)
    cfg = DAPOConfig(G=3, n_prompts=2, n_steps=2, max_new_tokens=6, cache_len=2, ppo_epochs=2, lr=1e-3)
    vec = {1: 40.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    det = RepetitionDetector(max_unit=2, min_span=4, min_repeats=2)
    train_dapo(model, tok, cfg, det, steer_vectors=vec, progress=False)
    assert len(seen) == cfg.n_steps * cfg.ppo_epochs
    for step in range(cfg.n_steps):                       # first update of every batch: ratio exactly 1, all rows
        logp, old, mask = seen[step * cfg.ppo_epochs]
        assert torch.equal(torch.exp(logp - old)[mask], torch.ones(int(mask.sum())))
    # step 0: the policy is still the base model, so old log-probs must be the UNSTEERED model's, for every row
    ro = rolls[0]
    rows = steered_rows(cfg.n_prompts, cfg.G, cfg.n_steered)
    with torch.no_grad():
        plain = response_logprobs(model.eval(), ro)
        with steer(model, vec, rows=rows):
            steered = response_logprobs(model, ro)
    m = ro.response_mask
    assert torch.allclose(seen[0][1][m], plain[m], atol=1e-5)
    assert not torch.allclose(steered[rows][m[rows]], plain[rows][m[rows]], atol=1e-3)   # the test can tell them apart


# ------------------------------------------------------------------ notebook
@pytest.mark.slow
def test_notebook_07_on_smoke(run_notebook_smoke, smoke_scope):
    import json

    import pandas as pd

    out, executed = run_notebook_smoke("07")
    comp = pd.read_csv(out / "07_comparison.csv")
    assert list(comp.arm) == ["before RL", "vanilla DAPO", "DAPO + SAE rollouts"]
    for c in ("repeat_task", "repeat_text", "acc_greedy"):
        assert ((comp[f"{c}_lo"] <= comp[c] + 1e-9) & (comp[c] <= comp[f"{c}_hi"] + 1e-9)).all()
        assert comp[c].between(0, 1).all()
    assert (comp.ppl > 1).all()
    curves = pd.read_csv(out / "07_training_curves.csv")
    assert set(curves.arm) == {"vanilla DAPO", "DAPO + SAE rollouts"}
    assert curves[curves.arm == "DAPO + SAE rollouts"].steered_repeat_ratio.notna().all()
    sweep = pd.read_csv(out / "07_steering_sweep.csv")
    assert 0.0 in set(sweep.alpha) and set(sweep.direction) == {f"feature {int(sweep.direction.iloc[0].split()[-1])}",
                                                                 "random (same norm)"}
    s = json.loads((out / "07_summary.json").read_text())
    assert s["_meta"]["seed"] == 0 and s["paper_claims"]["MGSM_gain_points"]["Qwen3-8B"] == 2.28
    for name in ("07_repetition_features", "07_steering_sweep", "07_training_curves", "07_comparison"):
        assert (out / f"{name}.png").stat().st_size > 5000
    assert executed.exists()


# ------------------------------------------------------------------ answers and paper data (no hub: a fake dataset)
def test_extract_int_rules():
    from qscope_utils.dapo import extract_int

    assert extract_int(" 12 apples, then 3") == 12 and extract_int(" 12 apples, then 3", "last") == 3
    assert extract_int("so the total is 1,234.", "last") == 1234 and extract_int("x = -5 so -7", "last") == -7
    assert extract_int("no digits") is None and extract_int("none", "last") is None
    with pytest.raises(ValueError):
        extract_int("1", "middle")
    assert float(answer_correct(["... so 1,234"], [1234], "last")[0]) == 1.0


def test_hf_problems_gsm8k_and_mgsm_rows(dataset_hub):
    from qscope_utils.dapo import hf_problems

    dataset_hub(["gsm8k", "mgsm"], n_rows=3)
    g = hf_problems("openai/gsm8k", "main", "train", template="Q: {question}\nA:")
    assert [p.answer for p in g] == [36, 1068, 2110]              # "#### 1,068" parsed with its comma
    assert g[0].prompt == "Q: Tom has 3 boxes with 12 pencils each and buys 0 more pencils. How many pencils does he " \
                          "have?\nA:"
    m = hf_problems("juletxara/mgsm", "en", "test")
    assert [p.answer for p in m] == [9, 13, 17]
    cfg = DAPOConfig.for_profile("paper", "1.7B")
    assert cfg.train_data[0] == "openai/gsm8k" and cfg.eval_data[0] == "juletxara/mgsm" and cfg.answer_rule == "last"
