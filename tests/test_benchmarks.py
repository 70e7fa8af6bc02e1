"""Mini benchmarks (built on a synthetic corpus with known answers), their scoring, the zoo evaluation,
and the paper-profile readers (datasets loader on a local file, correctness files CSV / Parquet)."""
from __future__ import annotations

import dataclasses
import json
import random
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest_sources import dataset_hub  # noqa: F401
from qscope_utils import benchmarks as bm

LANGS = ("en", "ru", "fr", "de", "zh", "es", "it", "ja")


def _words(lang: str, doc: int, n: int) -> list[str]:
    """Unique tokens per (lang, doc): any continuation can be traced back to its document."""
    return [f"{lang}{doc}w{i}" for i in range(n)]


def _cjk(doc: int, n: int, base: int) -> str:
    return "".join(chr(base + 50 * doc + i) for i in range(n))


@pytest.fixture()
def synth_corpus(tmp_path, monkeypatch):
    """A corpus profile 'synth' under QSCOPE_DATA with held-out docs of every kind the builders read."""
    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path / "data"))
    docs = []

    def add(text, lang, split="heldout", source="s"):
        docs.append({"text": text, "lang": lang, "source": source, "label": None, "split": split})

    for lang in LANGS:
        for d in range(12):
            if lang in ("zh", "ja"):
                add(_cjk(d, 40, 0x4E00 if lang == "zh" else 0x3041 + 0 * d), lang)
            else:
                add(" ".join(_words(lang, d, 30)), lang)
        add("TRAINONLY " * 30, lang, split="train")
    for d in range(10):   # poems: title, author, 4 verse lines of 5 or 7 characters
        L = 5 if d % 2 else 7
        lines = [_cjk(d, L, 0x5000 + 10 * i) for i in range(4)]
        add(f"《诗{d}》\n作者：某{d}\n" + "\n".join(lines), "lzh")
    for d in range(6):
        body = "\n".join([f"def func_{d}_{i}(x):\n    value_{d}_{i} = x + {i}\n    return value_{d}_{i} * 2"
                          for i in range(5)])
        add(body, "code")
    p = tmp_path / "data" / "synth" / "corpus"
    p.mkdir(parents=True)
    (p / "docs.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in docs) + "\n")
    return "synth"


def _doc_of(word: str) -> str:
    return word.split("w")[0]


@pytest.mark.parametrize("distractors", ["shuffle", "other"])
def test_cloze_items_are_true_continuations(synth_corpus, distractors):
    b = bm.cloze_benchmark(synth_corpus, "en", n=20, n_choices=4, seed=0, distractors=distractors)
    assert b.kind == "choice" and len(b) == 20 and b.meta["split"] == "heldout"
    assert len(set(b.uids)) == 20
    for it in b.items:
        assert "TRAINONLY" not in it.prompt and len(it.choices) == 4 and len(set(it.choices)) == 4
        ctx_doc = _doc_of(it.prompt.split()[-1])
        correct = it.choices[it.label]
        words = correct.split()
        assert len(words) == 4 and correct.startswith(" ")
        # the correct choice continues the prompt's document exactly where the prompt stops
        last = int(it.prompt.split()[-1].split("w")[1])
        assert words == [f"{ctx_doc}w{last + 1 + i}" for i in range(4)]
        for j, c in enumerate(it.choices):
            if j == it.label:
                continue
            assert c.startswith(" ") and len(c.split()) == 4
            if distractors == "shuffle":      # same words, another order
                assert sorted(c.split()) == sorted(words) and c != correct
            else:                             # words of another document
                assert _doc_of(c.split()[0]) != ctx_doc
    labels = [it.label for it in b.items]
    assert len(set(labels)) > 1                     # the answer position is shuffled
    with pytest.raises(ValueError, match="distractors"):
        bm.cloze_benchmark(synth_corpus, "en", n=2, distractors="nope")


def test_cjk_cloze_uses_characters(synth_corpus):
    b = bm.cloze_benchmark(synth_corpus, "zh", n=10, seed=1)
    for it in b.items:
        assert all(len(c) == 6 for c in it.choices)
        assert ord(it.choices[it.label][0]) == ord(it.prompt[-1]) + 1


@pytest.mark.parametrize("distractors", ["shuffle", "other"])
def test_poem_distractors_keep_the_metre(synth_corpus, distractors):
    b = bm.poem_benchmark(synth_corpus, n=20, seed=0, distractors=distractors)
    assert len(b) == 20
    for it in b.items:
        assert it.prompt.startswith("《") and it.prompt.endswith("\n")
        assert len({len(c) for c in it.choices}) == 1     # same number of characters as the answer
        verse = it.prompt.strip().split("\n")[-1]
        correct = it.choices[it.label]
        assert ord(correct[0]) == ord(verse[0]) + 10     # the next line of the same poem
        if distractors == "shuffle":
            assert all(sorted(c) == sorted(correct) for c in it.choices)


def test_code_items_predict_next_line_with_same_indent_distractors(synth_corpus):
    b = bm.code_benchmark(synth_corpus, n=15, seed=0)
    for it in b.items:
        correct = it.choices[it.label]
        indent = len(correct) - len(correct.lstrip())
        assert all(len(c) - len(c.lstrip()) == indent for c in it.choices)
        assert it.prompt.endswith("\n") and correct.strip()


def test_arithmetic_benchmarks_are_held_out():
    from qscope_utils.mini.tasks import problem_split

    g, m = bm.gsm_benchmark(12, seed=0), bm.math_benchmark(12, seed=0)
    for b, head in ((g, "Question:"), (m, "Compute")):
        assert b.kind == "exact" and len(b) == 12
        assert all(problem_split(it.prompt) == "heldout" and isinstance(it.answer, int) for it in b.items)
        assert all(it.prompt.startswith(head) for it in b.items)
    assert bm.gsm_benchmark(12, seed=0).prompts == g.prompts


def test_mini_suite_and_fallback_is_recorded(synth_corpus, tmp_path):
    suite = bm.mini_benchmarks(synth_corpus, n_items=10, n_general=20)
    assert list(suite) == ["gsm", "math", "code", "cloze-en", "cloze-ru", "cloze-fr", "cloze-de", "cloze-zh",
                           "poem-lzh", "general"]
    assert all(len(b) >= 4 for b in suite.values())
    gen = suite["general"]
    assert len(gen) == 20 and len(set(gen.uids)) == 20
    # a language without held-out documents falls back to train documents, and says so
    p = tmp_path / "data" / "synth" / "corpus" / "docs.jsonl"
    rows = [json.loads(l) for l in p.read_text().splitlines()]
    rows = [r for r in rows if not (r["lang"] == "fr" and r["split"] == "heldout")]
    p.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    import os
    os.utime(p, (1, 1))                               # new mtime: the corpus cache reloads
    with pytest.warns(UserWarning, match="train documents"):
        b = bm.cloze_benchmark(synth_corpus, "fr", n=4, seed=0)
    assert b.meta["split"] == "heldout+train"


# ----------------------------------------------------------------------------- scoring

def test_score_choices_matches_unbatched_computation(tiny_model):
    model, tok = tiny_model
    items = [bm.Item("The quick brown fox", choices=(" jumps over", " dog", " a very long continuation here", "!"),
                     label=0),
             bm.Item("Bonjour", choices=(" tout", " le monde.", " x", " 1 + 2 = 3"), label=1),
             bm.Item("def f(x):" * 20, choices=(" return x", " pass", " y", " z"), label=2)]
    got = bm.score_choices(model, tok, items, batch_size=5, max_length=40)
    for i, it in enumerate(items):
        longest = max(len(tok(c, add_special_tokens=False)["input_ids"]) for c in it.choices)
        for j, c in enumerate(it.choices):
            p = tok(it.prompt)["input_ids"][-(40 - longest):]      # prompt cut on the left, same for every choice
            cc = tok(c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p + cc])
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            L = ids.shape[1]
            want = np.mean([lp[L - len(cc) - 1 + k, cc[k]].item() for k in range(len(cc))])
            assert got[i, j] == pytest.approx(want, abs=1e-4)


def test_evaluate_choice_benchmark_compares_argmax_with_label(tiny_model):
    model, tok = tiny_model
    items = [bm.Item(f"text {i}", choices=(" a", " bb", " ccc", " dddd"), label=0) for i in range(5)]
    s = bm.score_choices(model, tok, items)
    best = bm.Benchmark("t", "choice", [dataclasses.replace(it, label=int(s[i].argmax())) for i, it in enumerate(items)])
    worst = bm.Benchmark("t", "choice", [dataclasses.replace(it, label=int(s[i].argmin())) for i, it in enumerate(items)])
    assert bm.evaluate_benchmark(model, tok, best).all()
    assert not bm.evaluate_benchmark(model, tok, worst).any()
    with pytest.raises(ValueError, match="read_correctness"):
        bm.evaluate_benchmark(model, tok, bm.Benchmark("x", "external", items))


class _AnswerStub(torch.nn.Module):
    """A 'model' whose greedy generation always appends the tokens of a fixed string."""

    def __init__(self, tok, text: str):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.extra = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]

    @property
    def device(self):
        return torch.device("cpu")

    def generate(self, input_ids, attention_mask=None, max_new_tokens=1, **kw):
        add = self.extra[:max_new_tokens].expand(input_ids.shape[0], -1)
        return torch.cat([input_ids, add], 1)


def test_exact_match_scores_first_integer(tiny_model):
    _, tok = tiny_model
    stub = _AnswerStub(tok, " 42 and 7")
    items = [bm.Item("Compute 6 * 7 =", answer=42), bm.Item("Compute 40 + 1 =", answer=41),
             bm.Item("Question: x? Answer:", answer=42)]
    assert bm.exact_match(stub, tok, items, max_new_tokens=8, batch_size=2).tolist() == [True, False, True]


def test_correctness_matrices_on_a_tiny_zoo(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QSCOPE_DATA", str(tmp_path))
    zoo_dir = tmp_path / "tiny" / "models"
    entries = []
    for name in ("a-step1", "b-step1"):
        shutil.copytree(tiny_model_dir, zoo_dir / "zoo" / name)
        entries.append({"name": name, "mixture": name[0], "step": 1, "branch_from": None, "tokens_seen": 1,
                        "path": f"zoo/{name}"})
    (zoo_dir / "zoo.json").write_text(json.dumps(entries))
    zoo = bm.load_zoo("tiny")
    items = [bm.Item(f"sample {i}", choices=(" a", " b", " c", " d"), label=i % 4, uid=f"u{i}") for i in range(8)]
    out = bm.correctness_matrices(zoo, {"t": bm.Benchmark("t", "choice", items)}, progress=False)
    df = out["t"]
    assert df.shape == (2, 8) and list(df.index) == ["a-step1", "b-step1"] and list(df.columns) == [f"u{i}" for i in range(8)]
    assert set(np.unique(df.values)) <= {0, 1}
    assert (df.iloc[0] == df.iloc[1]).all()          # identical weights, identical answers
    one, two = (bm.correctness_matrices(zoo, {"t": bm.Benchmark("t", "choice", items)}, progress=False, workers=w,
                                        threads=1)["t"] for w in (1, 2))
    pd.testing.assert_frame_equal(two, one)          # checkpoints scored on two worker processes: same matrix
    pd.testing.assert_frame_equal(one, df)
    with pytest.raises(FileNotFoundError, match="build"):
        bm.load_zoo("absent")


# ----------------------------------------------------------------------------- paper profile readers

def test_load_hf_benchmark_from_local_file(tmp_path):
    rows = [{"qid": f"q{i}", "question": f"What is {i}?", "choices": [f"{i}", f"{i + 1}", "x", "y"]} for i in range(6)]
    f = tmp_path / "mc.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    b = bm.load_hf_benchmark("MMLU", dataset_id=str(f), id_column="qid")
    assert b.kind == "external" and len(b) == 6 and b.uids[0] == "q0"
    assert b.items[2].prompt == "What is 2?\nA. 2\nB. 3\nC. x\nD. y\nAnswer:"
    sub = bm.load_hf_benchmark("MMLU", n=3, seed=1, dataset_id=str(f), id_column="qid")
    assert len(sub) == 3 and sub.uids == bm.load_hf_benchmark("MMLU", n=3, seed=1, dataset_id=str(f), id_column="qid").uids
    spec = bm.HFBenchmarkSpec("custom", str(f), prompt="{nope}")
    with pytest.raises(KeyError, match="nope"):
        bm.load_hf_benchmark(spec)
    with pytest.raises(KeyError, match="unknown benchmark"):
        bm.load_hf_benchmark("NOT-A-BENCH")
    with pytest.raises(RuntimeError, match="Fix"):
        bm.load_hf_benchmark(bm.HFBenchmarkSpec("gone", str(tmp_path / "missing" / "x.parquet")))
    assert len(bm.PAPER_BENCHMARKS) == 15 and len(bm.ALL_BENCHMARKS) == 17
    assert {"KOR-Bench", "ICLEval"} == set(bm.USER_BENCHMARKS) and not set(bm.USER_BENCHMARKS) & set(bm.PAPER_BENCHMARKS)


def test_read_correctness_long_wide_parquet(tmp_path):
    long = pd.DataFrame({"model": ["m1", "m1", "m2", "m2"], "sample_id": ["0", "1", "0", "1"],
                         "correct": [True, False, 1, 1]})
    long.to_csv(tmp_path / "long.csv", index=False)
    a = bm.read_correctness(tmp_path / "long.csv")
    assert a.loc["m1"].tolist() == [1.0, 0.0] and a.loc["m2"].tolist() == [1.0, 1.0]
    wide = pd.DataFrame({"checkpoint": ["m1", "m2"], "0": [1, 1], "1": [0, 1]})
    wide.to_parquet(tmp_path / "wide.parquet")
    b = bm.read_correctness(tmp_path / "wide.parquet")
    assert np.array_equal(a.values, b[["0", "1"]].values)
    multi = long.assign(benchmark=["x", "y", "x", "y"])
    multi.to_csv(tmp_path / "multi.csv", index=False)
    with pytest.raises(ValueError, match="benchmark="):
        bm.read_correctness(tmp_path / "multi.csv")
    assert bm.read_correctness(tmp_path / "multi.csv", benchmark="x").shape == (2, 1)
    pd.concat([long, long]).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicate"):
        bm.read_correctness(tmp_path / "dup.csv")
    long.assign(correct=[2, 0, 0, 1]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bm.read_correctness(tmp_path / "bad.csv")
    bench = bm.Benchmark("t", "external", [bm.Item("p", uid="1"), bm.Item("q", uid="0")])
    assert list(bm.align_correctness(a, bench).columns) == ["1", "0"]
    with pytest.raises(KeyError, match="no score"):
        bm.align_correctness(a, bm.Benchmark("t", "external", [bm.Item("p", uid="7")]))


def test_paper_benchmarks_read_through_their_adapters(dataset_hub, tmp_path):
    from qscope_utils.sources import SourceNotAvailable, get_source

    dataset_hub(["ceval", "include", "gsm8k"], n_rows=2)
    ce = bm.load_hf_benchmark("C-Eval")                             # 52 subjects concatenated, val split
    assert len(ce) == 2 * 52 and ce.uids[:2] == ["computer_network/0", "computer_network/1"]
    assert ce.prompts[0].endswith("答案：") and "A. " in ce.prompts[0]
    inc = bm.load_hf_benchmark("INCLUDE", n=5, seed=0)
    assert len(inc) == 5 and all("\nD. " in p for p in inc.prompts)
    assert bm.load_hf_benchmark("GSM8K").prompts[1].startswith("Question: Tom has 4 boxes")
    with pytest.raises(SourceNotAvailable, match="benchmark_files"):
        bm.load_hf_benchmark("KOR-Bench")
    f = get_source("kor-bench").write_miniature(tmp_path, n_rows=3) / "kor_bench.jsonl"
    kb = bm.load_hf_benchmark("KOR-Bench", dataset_id=str(f))
    assert kb.uids == ["kor-bench-0", "kor-bench-1", "kor-bench-2"]
    for spec in bm.PAPER_BENCHMARKS.values():                       # every default names a real adapter + repo
        assert spec.dataset_id == get_source(spec.source).repo_id != ""
