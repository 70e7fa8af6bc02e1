"""Shared fixtures: a tiny Qwen3 saved with save_pretrained, a byte-level BPE tokenizer, and
fixture SAE repos laid out like the real hub repos (same file names, same dict keys)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))

TINY = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
            num_key_value_heads=1, head_dim=16, max_position_embeddings=128, tie_word_embeddings=True)
TINY_GROUP = "Qwen/SAE-Res-TinyQwen3-Base-W1K-L0_8"

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "Sparse autoencoders find features in residual streams.",
    "床前明月光，疑是地上霜。", "Привет, как дела?", "Bonjour tout le monde.", "1 + 2 = 3", "def f(x): return x",
] * 4


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def results_outside_the_repo(tmp_path_factory):
    """Every test writes notebook outputs under a session temporary directory, never into results/
    (unless QSCOPE_RESULTS is set already); a test that needs its own directory monkeypatches it."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("QSCOPE_RESULTS"):
            mp.setenv("QSCOPE_RESULTS", str(tmp_path_factory.mktemp("results")))
        yield


def _tree_state() -> str | None:
    """``git status --porcelain`` (ignored files excluded) plus size and mtime of each listed path,
    so that a further change to an already modified file shows too; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = []
    for line in out.stdout.splitlines():
        p = ROOT / line[3:].split(" -> ")[-1].strip('"')
        st = p.stat() if p.exists() else None
        lines.append(f"{line} {st.st_size if st else '-'} {st.st_mtime_ns if st else '-'}")
    return "\n".join(lines)


@pytest.fixture(scope="session", autouse=True)
def tree_stays_clean(results_outside_the_repo):
    """The suite must leave the checkout as it found it (tests write to temporary directories only).
    Fails at session end listing what changed. QSCOPE_SKIP_CLEAN_CHECK=1 turns it off (e.g. while
    editing files during a run)."""
    before = None if os.environ.get("QSCOPE_SKIP_CLEAN_CHECK") else _tree_state()
    yield
    if before is None:
        return
    after = _tree_state()
    if after != before:
        old, new = set(before.splitlines()), set((after or "").splitlines())
        changed = sorted(new - old) + [f"(was) {x}" for x in sorted(old - new)]
        pytest.fail("the test suite changed the git checkout (tests must write to temporary directories):\n  "
                    + "\n  ".join(changed[:40]), pytrace=False)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=TINY["vocab_size"], special_tokens=["<|endoftext|>"],
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY))
    d = tmp_path_factory.mktemp("tiny_qwen3")
    model.save_pretrained(d)
    tiny_tokenizer.save_pretrained(d)
    return d


@pytest.fixture()
def tiny_model(tiny_model_dir):
    from qscope_utils.generation import load_backbone

    return load_backbone(str(tiny_model_dir))


@pytest.fixture()
def one_thread():
    """Run a test on one torch thread (tiny models generate ~10x faster so on a shared 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_sae_state(d_model: int, d_sae: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_model, d_sae, generator=g)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    return {"W_enc": W_dec.T.contiguous() * 2.0, "W_dec": W_dec, "b_enc": torch.randn(d_sae, generator=g) * 0.1,
            "b_dec": torch.randn(d_model, generator=g) * 0.1}


def write_group(root: Path, n_layers: int, d_model: int, d_sae: int, skip: tuple[int, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for n in range(n_layers):
        if n not in skip:
            torch.save(make_sae_state(d_model, d_sae, seed=n), root / f"layer{n}.sae.pt")
    return root


@pytest.fixture()
def tiny_group():
    """Registers the tiny fixture group (Qwen-Scope naming, tiny shapes) and returns it."""
    from qscope_utils.registry import SAEGroup, register

    return register(SAEGroup(TINY_GROUP, "tiny", TINY["hidden_size"], 1024, 8, TINY["num_hidden_layers"]))


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch, tiny_group):
    """An offline HF hub cache holding the tiny group exactly as hf_hub_download lays it out."""
    cache = tmp_path / "hub"
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + tiny_group.repo_id.replace("/", "--"))
    write_group(repo / "snapshots" / rev, tiny_group.n_layers, tiny_group.d_model, tiny_group.d_sae)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as c
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return cache


try:  # the session-scoped `smoke_scope` fixture (builds the smoke profile once, cached in data/smoke)
    from conftest_mini import *  # noqa: F401,F403
except ImportError:  # pragma: no cover - only while the mini builder is absent
    pass


@pytest.fixture()
def run_notebook_smoke(tmp_path, monkeypatch, smoke_scope):
    """Execute a numbered notebook on the smoke profile with papermill; outputs go to tmp_path.

    Returns (results_dir, executed_notebook_path). Fails if any cell raises.
    """
    from qscope_utils.runner import list_notebooks, run_notebook

    monkeypatch.setenv("QSCOPE_RESULTS", str(tmp_path))

    def run(prefix: str, **params):
        (nb,) = list_notebooks([prefix])
        rec = run_notebook(nb, "smoke", params)
        return tmp_path / "smoke", Path(rec["output"])

    return run
