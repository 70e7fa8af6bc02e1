"""DAPO reference pieces against hand-computed cases, configuration, paper data (training on TRL: test_dapo_trainer.py)."""
from __future__ import annotations

import math

import pytest

from conftest_sources import dataset_hub  # noqa: F401
import torch

from qscope_utils.dapo import (DAPOConfig, answer_correct, dapo_loss, group_advantages, overlong_penalty, paper_compute,
                               steered_rows, task_rewards)



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
    assert steered_rows(3, 4) == [0, 4, 8] and steered_rows(2, 4, 2) == [0, 1, 4, 5]
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


# ------------------------------------------------------------------ notebook
@pytest.mark.slow
def test_notebook_07_on_smoke(run_notebook_smoke, smoke_scope):
    import json

    import pandas as pd

    out, executed = run_notebook_smoke("07")
    comp = pd.read_csv(out / "07_comparison.csv")
    assert list(comp.arm)[:3] == ["before RL", "vanilla DAPO", "DAPO + SAE rollouts"] and len(comp) in (3, 4)
    val = pd.read_csv(out / "07_variant_validation.csv")
    assert val.chosen.sum() == 1 and "vanilla DAPO" in set(val.arm) and len(val) == 5      # vanilla + 4 variants
    assert (val.loc[val.arm == "vanilla DAPO", "ppl_ratio_vs_vanilla"] == 1.0).all()
    for c in ("repeat_task", "repeat_text", "acc_greedy"):
        assert ((comp[f"{c}_lo"] <= comp[c] + 1e-9) & (comp[c] <= comp[f"{c}_hi"] + 1e-9)).all()
        assert comp[c].between(0, 1).all()
    assert (comp.ppl > 1).all()
    curves = pd.read_csv(out / "07_training_curves.csv")
    assert {"vanilla DAPO", "DAPO + SAE rollouts"} <= set(curves.arm) and curves.arm.nunique() == 5
    assert curves[curves.arm == "DAPO + SAE rollouts"].steered_repeat_ratio.notna().all()
    assert curves[curves.arm == "vanilla DAPO"].steered_reward.isna().all()
    sweep = pd.read_csv(out / "07_steering_sweep.csv")
    assert 0.0 in set(sweep.alpha) and set(sweep.direction) == {f"feature {int(sweep.direction.iloc[0].split()[-1])}",
                                                                 "random (same norm)"}
    s = json.loads((out / "07_summary.json").read_text())
    assert s["sae_variant_chosen"] in set(val.arm) and "loss_type='dapo'" in s["trainer"]
    assert "x vanilla" in s["sae_ppl_verdict"] and s["sae_ppl_ratio_vs_vanilla_test"] > 0
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


# ------------------------------------------------------------------ the SAE arm's variant (one-SE rule)
def test_pick_variant_one_se_rule_known_answers():
    import pandas as pd

    from qscope_utils.dapo import pick_variant

    def table(rows):   # (arm, val_ppl, stress, half-width of the stress interval)
        return pd.DataFrame([{"arm": a, "val_ppl": p, "val_stress": s, "val_stress_lo": s - h, "val_stress_hi": s + h,
                              "ppl_ratio_vs_vanilla": p / 40.0} for a, p, s, h in rows])

    base = [("vanilla DAPO", 40.0, 0.27, 0.05), ("recipe", 320.0, 0.0, 0.0)]
    # b has the lowest stress (0.01); a (less damage, stress 0.03) is picked only if 0.03 <= 0.01 + b's SE:
    # b's interval +-0.0196 -> SE 0.01: not within -> b; +-0.0588 -> SE 0.03: within -> a
    v, rule = pick_variant(table(base + [("a", 42.0, 0.03, 0.0392), ("b", 44.0, 0.01, 0.0196)]), 1.5)
    assert v == "b" and "one standard error" in rule
    v, _ = pick_variant(table(base + [("a", 42.0, 0.03, 0.0392), ("b", 44.0, 0.01, 0.0588)]), 1.5)
    assert v == "a"
    # ties at 0 (the committed mini case): the lowest perplexity among the eligible; the recipe is not eligible
    v, _ = pick_variant(table(base + [("drop", 42.6, 0.0, 0.0), ("trunc", 43.5, 0.0, 0.0)]), 1.5)
    assert v == "drop"
    v, rule = pick_variant(table(base + [("x", 100.0, 0.0, 0.0)]), 1.5)      # none eligible: the lowest perplexity
    assert v == "x" and rule.startswith("NO variant")
    with pytest.raises(ValueError, match="no SAE-arm variant"):
        pick_variant(table(base[:1]), 1.5)
