"""The external-data layer: every adapter's miniature, written into an offline hub cache, read back
through the real path (snapshot_download + datasets), with known answers and schema errors."""
from __future__ import annotations

import json
import warnings

import pytest

from conftest_sources import dataset_hub  # noqa: F401
from qscope_utils import sources as S
from qscope_utils.sources import SchemaError, SourceNotAvailable

HUB = [n for n, s in S.SOURCES.items() if not s.is_user_supplied]


@pytest.mark.parametrize("name", HUB)
def test_every_hub_source_reads_its_miniature_offline(dataset_hub, name):
    src = S.get_source(name)
    dataset_hub([name], n_rows=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                          # MMLU-Redux: "not 3,000 rows"
        ds = src.load()
    n_configs = len(src.configs) if src.concat_configs else 1
    assert len(ds) == 6 * n_configs
    assert set(src.columns) <= set(ds.column_names)
    assert ds.to_list()[0] == {**src.mini_rows(src.configs[0], src._split(None), 1)[0],
                               **({"config": src.configs[0]} if len(src.configs) > 1 else {})}


def test_fixture_hub_layout_is_the_hub_cache_layout(dataset_hub):
    home = dataset_hub(["textdetox", "mmlu-redux"], n_rows=2)
    td = home / "hub" / "datasets--textdetox--multilingual_toxicity_dataset"
    sha = (td / "refs" / "main").read_text()
    assert len(sha) == 40 and (td / "snapshots" / sha / "data" / "he-00000-of-00001.parquet").is_file()
    mr = home / "hub" / "datasets--edinburgh-dawg--mmlu-redux"
    conv = (mr / "refs" / "refs" / "convert" / "parquet").read_text()
    assert (mr / "snapshots" / conv / "anatomy" / "test" / "00000-of-00001.parquet").is_file()
    assert len(list((mr / "snapshots" / conv).iterdir())) == 30


def test_concatenated_configs_are_the_sum_of_their_parts(dataset_hub):
    dataset_hub(["math", "multipl-e", "mmmlu"], n_rows=3)
    for name in ("math", "multipl-e", "mmmlu"):                     # parquet and CSV layouts
        src = S.get_source(name)
        whole = src.load()
        per = {c: len(src.load(config=c)) for c in src.configs}
        assert len(whole) == sum(per.values()) == 3 * len(src.configs)
        assert sorted(set(whole["config"])) == sorted(src.configs)
    assert (len(S.cmmlu.SUBJECTS), len(S.ceval.SUBJECTS), len(S.hendrycks_math.SUBJECTS), len(S.include.LANGS)) == \
        (67, 52, 7, 44)


def test_mmlu_redux_is_the_reports_3000_item_v1(dataset_hub):
    from qscope_utils import benchmarks as bm

    src = S.get_source("mmlu-redux")
    assert src.repo_id == "edinburgh-dawg/mmlu-redux" and len(src.configs) == 30 and src.expected_rows == 3000
    dataset_hub(["mmlu-redux"], n_rows=100)                      # the real size: 30 subjects x 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # no "not 3,000" warning
        b = bm.load_hf_benchmark("MMLU-Redux")
    assert len(b) == 3000 and len(set(b.uids)) == 3000 and b.uids[0] == "anatomy/0"
    assert b.prompts[0].endswith("\nA. 100\nB. 90\nC. 80\nD. 120\nAnswer:")


def test_mmlu_redux_with_fewer_items_warns(dataset_hub):
    dataset_hub(["mmlu-redux"], n_rows=4)
    with pytest.warns(UserWarning, match="120 rows .* 3000"):
        S.get_source("mmlu-redux").load()


def test_wildchat_first_user_turns_known_conversation(dataset_hub):
    import datasets

    ds = datasets.Dataset.from_list([
        {"conversation": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hi there"},
                          {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "second"}]},
        {"conversation": [{"role": "assistant", "content": "only the bot"}]},
        {"conversation": [{"role": "user", "content": "   "}]}])
    assert S.wildchat.first_user_turns(ds) == ["Hi there"]
    dataset_hub(["wildchat"], n_rows=6)
    texts = S.load_texts("allenai/WildChat-1M", column="conversation")
    want = [r["conversation"][0]["content"] for r in S.get_source("wildchat").mini_rows("default", "train", 6)]
    assert texts == want and texts[2] == "Как приготовить борщ? (2)"
    from qscope_utils.texts import load_hf_texts

    sub = load_hf_texts("allenai/WildChat-1M", column="conversation", n=3, seed=1)
    assert len(sub) == 3 and set(sub) <= set(want)


def test_gsm8k_answers_and_mgsm_through_hf_problems(dataset_hub):
    from qscope_utils.dapo import hf_problems

    assert S.gsm8k.final_answer("3 + 4 = 7\n#### 1,234") == 1234.0 and S.gsm8k.final_answer("no marker") is None
    dataset_hub(["gsm8k", "mgsm"], n_rows=4)
    g = hf_problems("openai/gsm8k", "main", "test", template="Q: {question}\nA:")
    assert [p.answer for p in g] == [(3 + i) * (12 + 5 * i) + 1000 * (i % 3) for i in range(4)] == [36, 1068, 2110, 162]
    assert g[0].prompt.startswith("Q: Tom has 3 boxes") and g[0].prompt.endswith("\nA:")
    m = hf_problems("juletxara/mgsm", "fr", "test")
    assert [p.answer for p in m] == [9, 13, 17, 21] and "pommes" in m[0].prompt


def _rewrite_textdetox(home, fn):
    """Apply ``fn(table) -> table`` to the 'en' file of the TextDetox miniature in the cache."""
    import pyarrow.parquet as pq

    (f,) = (home / "hub" / "datasets--textdetox--multilingual_toxicity_dataset").rglob("en-*.parquet")
    pq.write_table(fn(pq.read_table(f)), f)


def test_schema_mismatches_name_what_is_wrong(dataset_hub):
    import pyarrow as pa

    src = S.get_source("textdetox")
    home = dataset_hub(["textdetox"], n_rows=4)
    _rewrite_textdetox(home, lambda t: t.rename_columns(["text", "label"]))
    with pytest.raises(SchemaError, match=r"column 'toxic' \(int\) missing.*'label': 'int'.*Fix"):
        src.load(split="en")
    _rewrite_textdetox(home, lambda t: pa.table({"text": t["text"], "toxic": pa.array(["1", "0", "1", "0"])}))
    with pytest.raises(SchemaError, match="column 'toxic' should be int, found string"):
        src.load(split="en")
    for f in home.rglob("he-*.parquet"):
        f.unlink()
    with pytest.raises(SchemaError, match=r"no files for split 'he'.*data/he-\*\.parquet"):
        src.load(split="he")
    with pytest.raises(SchemaError, match="no split 'xx'"):
        src.load(split="xx")


def test_missing_cache_and_user_files_name_the_fix(dataset_hub, tmp_path):
    dataset_hub(["gsm8k"], n_rows=2)
    with pytest.raises(SourceNotAvailable, match="HF_HUB_OFFLINE unset"):
        S.get_source("wikitext").load()
    with pytest.raises(SourceNotAvailable, match=r"benchmark_files\['KOR-Bench'\]"):
        S.get_source("kor-bench").load()
    f = S.get_source("kor-bench").write_miniature(tmp_path / "kor", n_rows=3) / "kor_bench.jsonl"
    assert len(S.get_source("kor-bench").load(path=f)) == 3


def test_type_vocabulary():
    from datasets import ClassLabel, List, Value

    from qscope_utils.sources.base import type_matches, type_name

    assert type_name(Value("int32")) == "int" and type_name(ClassLabel(names=["a", "b"])) == "int"
    turn = {"role": Value("string"), "content": Value("string"), "toxic": Value("bool")}
    assert type_name(List(turn)) == "list<struct<content,role,toxic>>"
    assert type_matches("list<struct<content,role>>", List(turn))
    assert not type_matches("list<struct<content,role,name>>", List(turn))
    assert not type_matches("list<string>", Value("string")) and type_matches("any", Value("float32"))


def test_write_miniature_keeps_formats(tmp_path):
    root = S.get_source("wildjailbreak-train").write_miniature(tmp_path / "wjb", n_rows=4)
    lines = (root / "train" / "train.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["vanilla", "adversarial", "completion", "data_type"]
    assert lines[1].split("\t")[1] == ""                         # vanilla rows: empty adversarial cell
    root = S.get_source("supergpqa").write_miniature(tmp_path / "sg", n_rows=2)
    row = json.loads((root / "SuperGPQA-all.jsonl").read_text().splitlines()[0])
    assert isinstance(row["options"], list) and row["answer_letter"] in "ABCD"


def test_eval_texts_paper_drops_wikitext_headings(dataset_hub):
    from qscope_utils.profiles import get_profile
    from qscope_utils.texts import eval_texts

    dataset_hub(["wikitext"], n_rows=12)
    out = eval_texts(get_profile("paper"), n=4, seed=0)
    assert len(out) == 4 and all(len(t) >= 40 and not t.startswith("=") for t in out)
    assert len(eval_texts(get_profile("paper"), n=100)) == 6         # 12 rows: 3 blank, 3 headings, 6 paragraphs


def test_why_not_load_dataset_repo_id_offline(dataset_hub):
    """datasets 5.2.0 does not read a dataset repo from the hub cache offline: hence snapshot_download."""
    import datasets

    dataset_hub(["gsm8k"], n_rows=2)
    with pytest.raises(Exception, match="(?i)offline|reach|connect"):
        datasets.load_dataset("openai/gsm8k", "main", split="test")
    assert len(S.get_source("gsm8k").load("main", "test")) == 2          # the adapter's route works


def test_sasft_files_local_and_from_a_hub_dataset_repo(dataset_hub, tmp_path):
    from qscope_utils import sasft
    from qscope_utils.sources.fixture_hub import fixture_sha, repo_cache_dir

    home = dataset_hub([], n_rows=1)
    sft, stats = S.get_source("sasft-sft"), S.get_source("sasft-stats")
    repo = repo_cache_dir(home / "hub", "someone/sasft-data")            # a user's own dataset repo, cached
    sha = fixture_sha("someone/sasft-data", "main")
    sft.write_miniature(repo / "snapshots" / sha, n_rows=5)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    ex = sasft.load_sft_jsonl("someone/sasft-data:sft.jsonl")
    assert len(ex) == 5 and ex[1].prompt_lang == "zh" and ex[1].response_lang == "en"
    f = stats.write_miniature(tmp_path / "st", n_rows=10) / "lang_texts.jsonl"
    by = sasft.load_texts_jsonl(f, langs=("en", "ko"), n=1)
    assert by == {"en": [f"{S.sasft_files._TEXT['en']} (0)"], "ko": [f"{S.sasft_files._TEXT['ko']} (3)"]}
    with pytest.raises(SourceNotAvailable, match="someone/nothing"):
        sasft.load_sft_jsonl("someone/nothing:sft.jsonl")
