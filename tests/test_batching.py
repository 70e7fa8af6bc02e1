"""Bounded-memory inference (qscope_utils.batching): token budgets, chunked LM head, streamed rollouts.

Known answers: hand-written groups; log-probs equal to the full-logits computation; a tiny budget gives
the unbatched results; the LM head never outputs more than chunk_tokens x vocab logits.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qscope_utils import batching as B


# ----------------------------------------------------------------------------- token_budget_batches
@pytest.mark.parametrize("lengths, max_tokens, max_rows, groups", [
    ([3, 3, 3, 3], 6, None, [[0, 1], [2, 3]]),                  # 2 rows x 3 = 6 fits, a third would be 9
    ([2, 5, 1, 1], 10, None, [[0, 1], [2, 3]]),                 # [2,5] -> 2x5=10; adding 1 -> 3x5=15
    ([1, 1, 1, 1, 1], 100, 2, [[0, 1], [2, 3], [4]]),           # row limit binds
    ([4, 20, 4, 4], 10, None, [[0], [1], [2, 3]]),              # a 20-token row over the budget: its own group
    ([5, 1, 1, 1], 8, None, [[0], [1, 2, 3]]),                  # [5,1] -> 2x5=10 > 8
    ([7, 7], None, None, [[0, 1]]),                             # no budget: one group
    ([], 8, None, []),
])
def test_token_budget_batches_known_groups(lengths, max_tokens, max_rows, groups):
    got = B.token_budget_batches(lengths, max_tokens, max_rows)
    assert got == groups
    assert [i for g in got for i in g] == list(range(len(lengths)))       # original order, every row once


def test_token_budget_batches_bad_input():
    with pytest.raises(ValueError, match="max_tokens"):
        B.token_budget_batches([1, 2], 0)
    with pytest.raises(ValueError, match="max_rows"):
        B.token_budget_batches([1, 2], 8, max_rows=0)


# ----------------------------------------------------------------------------- chunked log-probs
def _batch(tok, texts):
    old = tok.padding_side
    tok.padding_side = "right"
    try:
        return tok(texts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = old


TEXTS = ["The quick brown fox jumps over the lazy dog.", "1 + 2 = 3", "Bonjour tout le monde."]


@torch.no_grad()
def _reference_logprobs(model, ids, am):
    logits = model(input_ids=ids, attention_mask=am).logits.float()
    return torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(2)


class HeadSpy:
    """Records the largest number of logits the LM head produced in one call."""

    def __init__(self, model):
        self.largest = 0
        self.h = model.get_output_embeddings().register_forward_hook(self._hook)

    def _hook(self, _m, _i, out):
        self.largest = max(self.largest, out.numel())

    def remove(self):
        self.h.remove()


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_token_logprobs_equal_full_logits(tiny_model, chunk):
    model, tok = tiny_model
    enc = _batch(tok, TEXTS)
    ref = _reference_logprobs(model, enc["input_ids"], enc["attention_mask"])
    spy = HeadSpy(model)
    with torch.no_grad():
        got = B.token_logprobs(model, enc["input_ids"], enc["attention_mask"], chunk_tokens=chunk)
    spy.remove()
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    V = model.config.vocab_size
    assert spy.largest <= min(chunk, got.numel()) * V        # never (rows x length x vocab) at once


def test_token_logprobs_under_steering(tiny_model):
    from qscope_utils.steering import steer

    model, tok = tiny_model
    enc = _batch(tok, TEXTS)
    vec = {1: 5.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    with torch.no_grad(), steer(model, vec):
        ref = _reference_logprobs(model, enc["input_ids"], enc["attention_mask"])
        got = B.token_logprobs(model, enc["input_ids"], enc["attention_mask"], chunk_tokens=3)
    with torch.no_grad():
        plain = B.token_logprobs(model, enc["input_ids"], enc["attention_mask"], chunk_tokens=3)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert (got - plain).abs().max() > 1e-2                  # the hooks did act on the chunked path


def test_sequence_nll_and_lm_loss_match_cross_entropy(tiny_model):
    from qscope_utils.recon import lm_loss

    model, tok = tiny_model
    enc = _batch(tok, TEXTS)
    ids, am = enc["input_ids"], enc["attention_mask"]
    lp = _reference_logprobs(model, ids, am)
    valid = (am[:, 1:] & am[:, :-1]).bool()
    spy = HeadSpy(model)
    with torch.no_grad():
        s, n = lm_loss(model, ids, am, chunk_tokens=2)
    spy.remove()
    assert n == int(valid.sum())
    assert s == pytest.approx(float(-lp[valid].sum()), abs=1e-4)
    assert spy.largest <= 2 * model.config.vocab_size
    lm = torch.zeros_like(am, dtype=torch.bool)
    lm[:, 4:] = True                                          # score only targets from position 4 on
    with torch.no_grad():
        s2, n2 = B.sequence_nll(model, ids, am, loss_mask=lm, chunk_tokens=3)
    v2 = valid & lm[:, 1:]
    assert n2 == int(v2.sum()) and s2 == pytest.approx(float(-lp[v2].sum()), abs=1e-4)


# ----------------------------------------------------------------------------- rollouts
PROMPTS = ["1 + 1 =", "def f(x):", "Bonjour", "The quick brown fox", "Привет"]


def test_greedy_rollouts_identical_under_tiny_budget(tiny_model):
    from qscope_utils.repetition import generation_groups, sample_rollouts

    model, tok = tiny_model
    one = sample_rollouts(model, tok, PROMPTS, max_new_tokens=6, do_sample=False)
    budget = 2 * (max(len(x) for x in tok(PROMPTS)["input_ids"]) + 6)    # at most 2 rows per batch
    assert len(generation_groups(tok, PROMPTS, 6, budget)) >= 3
    many = sample_rollouts(model, tok, PROMPTS, max_new_tokens=6, do_sample=False, max_batch_tokens=budget)
    assert many.texts == one.texts
    assert many.response_ids() == one.response_ids()
    assert torch.equal(many.hit_limit, one.hit_limit)
    assert torch.equal(many.lengths, one.lengths)
    # prompt part: same unpadded prompts, left-padded to the widest group
    for a, b, ma, mb in zip(one.input_ids, many.input_ids, one.attention_mask, many.attention_mask):
        assert a[ma.bool()].tolist() == b[mb.bool()].tolist()


def test_sampled_rollouts_with_budget_are_seeded(tiny_model):
    from qscope_utils.repetition import sample_rollouts

    model, tok = tiny_model
    a = sample_rollouts(model, tok, PROMPTS, max_new_tokens=5, seed=4, max_batch_tokens=30)
    b = sample_rollouts(model, tok, PROMPTS, max_new_tokens=5, seed=4, max_batch_tokens=30)
    assert a.texts == b.texts and len(a.texts) == len(PROMPTS)


def _reference_sampler(model, tok, prompts, max_new_tokens, temperature, seed):
    """The former implementation: output_scores=True, full (B, T, V) log_softmax, one batch."""
    import torch.nn.functional as F
    from qscope_utils.repetition import left_padded_batch

    enc, eos, pad = left_padded_batch(model, tok, prompts)
    torch.manual_seed(seed)
    gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=True, temperature=temperature, top_k=0,
                         top_p=1.0, pad_token_id=pad, eos_token_id=sorted(eos), use_cache=True, output_scores=True,
                         return_dict_in_generate=True)
    seq = gen.sequences[:, enc["input_ids"].shape[1]:]
    lp = torch.stack([F.log_softmax(s.float(), -1) for s in gen.scores], 1)
    return seq, torch.gather(lp, 2, seq[:, :lp.shape[1], None]).squeeze(2)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_with_logprobs_equals_full_softmax_reference(tiny_model, temperature):
    from qscope_utils.dapo_trainer import sample_with_logprobs

    model, tok = tiny_model
    with torch.no_grad():
        seq, ref = _reference_sampler(model, tok, PROMPTS, 7, temperature, seed=11)
        out = sample_with_logprobs(model, tok, PROMPTS, 7, temperature, seed=11)
    for i, (c, lp) in enumerate(zip(out["completion_ids"], out["logprobs"])):
        n = len(c)
        assert c == seq[i, :n].tolist()                                # same samples as before
        torch.testing.assert_close(torch.tensor(lp), ref[i, :n], atol=1e-6, rtol=0)


def test_sample_with_logprobs_budget_matches_per_row_rescoring(tiny_model):
    """Under a tiny budget the sampler's log-probs are still those of the sampled tokens: re-score each
    row alone (prompt + completion) with the full logits at the temperature."""
    from qscope_utils.dapo_trainer import sample_with_logprobs

    model, tok = tiny_model
    T = 0.8
    with torch.no_grad():
        out = sample_with_logprobs(model, tok, PROMPTS, 6, T, seed=2, max_batch_tokens=25)
        for p, c, lp in zip(out["prompt_ids"], out["completion_ids"], out["logprobs"]):
            ids = torch.tensor([p + c])
            logits = model(input_ids=ids).logits[0, len(p) - 1:-1].float() / T
            ref = torch.log_softmax(logits, -1).gather(1, torch.tensor(c)[:, None]).squeeze(1)
            torch.testing.assert_close(torch.tensor(lp), ref, atol=1e-4, rtol=0)


def test_generate_budget_keeps_greedy_results(tiny_model):
    from qscope_utils.generation import generate

    model, tok = tiny_model
    one = generate(model, tok, PROMPTS, max_new_tokens=5, do_sample=False, batch_size=16)
    many = generate(model, tok, PROMPTS, max_new_tokens=5, do_sample=False, batch_size=16, max_batch_tokens=12)
    assert many == one


# ----------------------------------------------------------------------------- callers: chunked, same answers
def test_score_choices_chunked_head(tiny_model):
    from qscope_utils import benchmarks as bm

    model, tok = tiny_model
    items = [bm.Item("The quick brown fox", choices=(" jumps over", " dog", " a long continuation", "!"), label=0),
             bm.Item("Bonjour", choices=(" tout", " le monde.", " x", " 1 + 2 = 3"), label=1)]
    full = bm.score_choices(model, tok, items, chunk_tokens=10_000)
    spy = HeadSpy(model)
    got = bm.score_choices(model, tok, items, chunk_tokens=3)
    spy.remove()
    np.testing.assert_allclose(got, full, atol=1e-5)
    assert 0 < spy.largest <= 3 * model.config.vocab_size


def test_response_ce_and_continuation_nll_chunked(tiny_model):
    from qscope_utils import sasft
    from qscope_utils import steer_eval as se

    model, tok = tiny_model
    ex = [sasft.SFTExample("Bonjour", "Hello there", "fr", "en"), sasft.SFTExample("1 + 2", "= 3", "en", "en")]
    enc = sasft.encode_examples(tok, ex)
    lp = _reference_logprobs(model, enc["input_ids"], enc["attention_mask"])
    on = enc["response_mask"][:, 1:]                                       # targets that are response tokens
    spy = HeadSpy(model)
    ce = sasft.response_ce(model, tok, ex, chunk_tokens=2)
    pre = [tok("The quick")["input_ids"], tok("Bonjour")["input_ids"]]
    cont = [tok(" brown fox")["input_ids"], tok(" le monde")["input_ids"]]
    nll = se.continuation_nll(model, pre, cont, chunk_tokens=2)
    spy.remove()
    assert ce == pytest.approx(float(-lp[on].mean()), abs=1e-5)
    assert spy.largest <= 2 * model.config.vocab_size
    for k in range(2):
        ids = torch.tensor([pre[k] + cont[k]])
        ref = _reference_logprobs(model, ids, torch.ones_like(ids))[0, len(pre[k]) - 1:]
        assert nll[k] == pytest.approx(float(-ref.mean()), abs=1e-5)


def test_capture_residuals_never_runs_the_lm_head(tiny_model):
    from qscope_utils.hooks import capture_residuals

    model, tok = tiny_model
    enc = _batch(tok, TEXTS)
    n = model.config.num_hidden_layers
    spy = HeadSpy(model)
    got = capture_residuals(model, enc["input_ids"], enc["attention_mask"], list(range(n)))
    spy.remove()
    assert spy.largest == 0                                                 # the deepest layer needs no logits
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    for layer in range(n - 1):                                              # the last entry is after the final norm
        torch.testing.assert_close(got[layer], hs[layer + 1])


def test_steered_rows_follow_their_prompts_across_batches(tiny_model):
    from qscope_utils.repetition import local_rows, sample_rollouts

    assert local_rows([0, 3, 6], [2, 3, 4]) == [1]
    assert local_rows(torch.tensor([True, False, True]), [1, 2]) == [1]
    assert local_rows(None, [0]) is None
    model, tok = tiny_model
    vec = {1: 40.0 * torch.randn(model.config.hidden_size, generator=torch.Generator().manual_seed(0))}
    kw = dict(max_new_tokens=5, do_sample=False, steer_vectors=vec, steer_rows=[0, 3])
    one = sample_rollouts(model, tok, PROMPTS, **kw)
    many = sample_rollouts(model, tok, PROMPTS, max_batch_tokens=20, **kw)
    plain = sample_rollouts(model, tok, PROMPTS, max_new_tokens=5, do_sample=False)
    assert many.texts == one.texts
    assert [one.texts[i] != plain.texts[i] for i in range(len(PROMPTS))] == [True, False, False, True, False]


def test_dapo_paper_budget_and_validation():
    from qscope_utils.dapo import DAPOConfig
    from qscope_utils.model_shapes import backbone_shape

    paper = DAPOConfig.for_profile("paper", "8B")
    kv = paper.max_batch_tokens * backbone_shape("Qwen/Qwen3-8B-Base").kv_bytes_per_token()
    assert kv == 65_536 * 147_456 and round(kv / 1e9, 1) == 9.7             # the docstring's figure
    assert paper.max_batch_tokens // (paper.max_new_tokens + 150) == 15      # rows of one paper batch
    assert DAPOConfig.for_profile("mini").max_batch_tokens is None           # mini / smoke: one batch, as before
    assert DAPOConfig.for_profile("smoke").max_batch_tokens is None
    with pytest.raises(ValueError, match="max_batch_tokens"):
        DAPOConfig(max_batch_tokens=0)


def test_sampler_keeps_no_per_step_scores(tiny_model, monkeypatch):
    """generate must not be asked to keep every step's (rows x vocab) scores (output_scores / output_logits)."""
    from qscope_utils.dapo_trainer import sample_with_logprobs

    model, tok = tiny_model
    seen = []
    real = model.generate

    def spy(*a, **kw):
        seen.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(model, "generate", spy)
    with torch.no_grad():
        out = sample_with_logprobs(model, tok, PROMPTS, 4, 1.0, seed=0, max_batch_tokens=20)
    assert len(seen) >= 3 and len(out["logprobs"]) == len(PROMPTS)
    assert not any(kw.get("output_scores") or kw.get("output_logits") for kw in seen)
