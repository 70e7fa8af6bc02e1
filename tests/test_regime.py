"""The pre-registered evaluation regime of §8: settings, grid, the pick rule (known answers), the
end-of-text floor in generation, and the pilot's token counts."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from qscope_utils.dapo import DAPOConfig
from qscope_utils.regime import GenerationRegime, pick_regime, pilot_regimes, regime_grid, regime_repeat_ratio
from qscope_utils.repetition import RepetitionDetector, sample_rollouts

pytestmark = pytest.mark.usefixtures("one_thread")


def _table(rows):
    """Pilot-shaped table from (temperature, max_new_tokens, min_new_tokens, ratio) with n_samples = 4."""
    out = []
    for t, L, m, r in rows:
        g = GenerationRegime(t, L, m)
        out.append({"temperature": t, "max_new_tokens": L, "min_new_tokens": m, "label": g.label, "ratio": r,
                    "lo": max(r - 0.1, 0), "hi": min(r + 0.1, 1), "budget_tokens": 10 * g.budget(4)})
    return pd.DataFrame(out)


def test_regime_settings_rows_budget_and_checks():
    assert GenerationRegime(1.0, 24).budget(4) == 96 and GenerationRegime(0.0, 96, 96).budget(4) == 96
    assert GenerationRegime(0.0, 24).rows(4) == 1 and GenerationRegime(0.5, 24).rows(4) == 4
    assert GenerationRegime(0.0, 48, 48).label == "greedy, 48 tokens, end-of-text after 48"
    for bad in ((-0.1, 24, 0), (1.0, 0, 0), (1.0, 24, 25), (1.0, 24, -1)):
        with pytest.raises(ValueError):
            GenerationRegime(*bad)


def test_regime_grid_order_and_floors():
    g = regime_grid(24, (1.0, 0.0), (1, 2), (0.0, 0.5, 1.0))
    assert len(g) == 12 and g[0] == GenerationRegime(1.0, 24, 0) and g[-1] == GenerationRegime(0.0, 48, 48)
    assert g[4] == GenerationRegime(1.0, 48, 24)                  # T=1, 2 x 24 tokens, half the limit suppressed
    with pytest.raises(ValueError, match="eos_floors"):
        regime_grid(24, (1.0,), (1,), (1.5,))
    with pytest.raises(ValueError):
        regime_grid(24, (), (1,), (0.0,))


def test_pick_regime_cheapest_in_band():
    t = _table([(1.0, 24, 0, 0.0), (0.0, 96, 96, 0.35), (1.0, 48, 48, 0.5), (0.3, 24, 24, 0.9), (0.0, 48, 48, 0.3)])
    p = pick_regime(t, (0.3, 0.7))
    # in band: greedy 96 (budget 960), T=1 48 (1,920), greedy 48 (480, ratio exactly on the edge): cheapest wins
    assert (p["temperature"], p["max_new_tokens"], p["min_new_tokens"], p["rule"]) == (0.0, 48, 48, "in band")
    assert p["budget_tokens"] == 480 and p["ratio"] == 0.3 and p["band"] == [0.3, 0.7]


def test_pick_regime_falls_back_to_the_closest_then_cheapest():
    t = _table([(1.0, 24, 0, 0.0), (0.5, 96, 96, 0.12), (0.0, 96, 96, 0.2), (0.0, 48, 48, 0.2), (0.3, 24, 24, 0.95)])
    p = pick_regime(t, (0.3, 0.7))
    assert p["rule"] == "closest to band" and (p["max_new_tokens"], p["ratio"]) == (48, 0.2)   # 0.1 away, cheaper tie
    assert pick_regime(_table([(1.0, 24, 0, 0.8), (1.0, 48, 0, 0.0)]))["ratio"] == 0.8        # 0.1 above beats 0.3 below
    with pytest.raises(ValueError, match="band"):
        pick_regime(t, (0.7, 0.3))
    with pytest.raises(ValueError, match="empty"):
        pick_regime(t.iloc[:0])


def test_dapo_config_eval_regime_fields():
    c = DAPOConfig.for_profile("mini")
    assert c.eval_regime() is None and len(c.regime_grid()) == 5 * 3 * 2
    assert c.regime_grid()[0] == GenerationRegime(1.0, 24, 0)
    fixed = DAPOConfig(eval_temperature=0.0, eval_max_new_tokens=96, eval_min_new_tokens=96)
    assert fixed.eval_regime() == GenerationRegime(0.0, 96, 96)
    with pytest.raises(ValueError, match="set all of eval_temperature"):
        DAPOConfig(eval_temperature=0.5)
    with pytest.raises(ValueError):
        DAPOConfig(eval_temperature=0.5, eval_max_new_tokens=10, eval_min_new_tokens=11)
    paper = DAPOConfig.for_profile("paper", "1.7B")
    assert paper.regime_grid() == [GenerationRegime(1.0, 4096, 0)]       # the report's ordinary sampling


def test_min_new_tokens_suppresses_end_of_text(tiny_model, monkeypatch):
    """Make the token greedy decoding emits first for row 0 the end-of-text: free generation then stops at
    once, with a floor it may not stop before ``min_new_tokens``."""
    model, tok = tiny_model
    prompts = ["The quick brown fox", "1 + 2 ="]
    free = sample_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False)
    first = int(free.responses[0, 0])
    monkeypatch.setattr(model.generation_config, "eos_token_id", first)
    stop = sample_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False)
    assert int(stop.lengths[0]) == 1 and not bool(stop.hit_limit[0])
    floor = sample_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False, min_new_tokens=5)
    assert (floor.responses[:, :5] != first).all() and (floor.lengths >= 5).all()
    full = sample_rollouts(model, tok, prompts, max_new_tokens=8, do_sample=False, min_new_tokens=8)
    assert bool(full.hit_limit.all()) and (full.lengths == 8).all()
    with pytest.raises(ValueError, match="min_new_tokens"):
        sample_rollouts(model, tok, prompts, max_new_tokens=8, min_new_tokens=9)


def test_pilot_counts_tokens_and_greedy_uses_one_response(tiny_model):
    model, tok = tiny_model
    prompts = ["The quick brown fox", "1 + 2 =", "Bonjour"]
    det = RepetitionDetector(max_unit=2, min_span=4, min_repeats=2)
    grid = [GenerationRegime(1.0, 6, 6), GenerationRegime(0.0, 6, 6)]
    t = pilot_regimes(model, tok, prompts, grid, det, n_samples=2, seed=3, n_boot=50)
    assert list(t.n_samples) == [2, 1] and list(t.n_prompts) == [3, 3]
    assert list(t.generated_tokens) == [3 * 2 * 6, 3 * 6] and list(t.budget_tokens) == [36, 18]   # forced to the limit
    assert t.ratio.between(0, 1).all() and (t.lo <= t.ratio + 1e-12).all() and list(t.label) == [g.label for g in grid]
    again = regime_repeat_ratio(model, tok, prompts, grid[1], det, 2, seed=3, n_boot=50)
    assert again["ratio"] == t.ratio.iloc[1]                                 # greedy: the same answer every time
    g = sample_rollouts(model, tok, prompts, 6, do_sample=False, min_new_tokens=6)
    assert again["ratio"] == pytest.approx(float(det.flags(g).mean()))
