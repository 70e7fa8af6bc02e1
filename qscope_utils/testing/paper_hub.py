"""An offline Hugging Face hub cache for dry runs of the paper profile (tests, GPU checks).

:func:`build_paper_hub` writes, under ``hf_home/hub``, exactly what ``huggingface_hub`` lays out
after a download (``models--Qwen--Qwen3-8B-Base/{blobs,snapshots/<sha>,refs/main}``, snapshot
files as relative symlinks to content-addressed blobs):

* tiny ``Qwen3ForCausalLM`` models under the REAL backbone ids (``save_pretrained``), with the real
  number of decoder layers, a byte-level BPE tokenizer and a ChatML chat template;
* SAE repos under the REAL ``Qwen/SAE-Res-*`` ids with the real file names (``layer{n}.sae.pt``,
  dict of float32 ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``) at tiny shapes, declared to the
  registry through the test-only ``QSCOPE_REGISTRY_OVERRIDE`` JSON file this function writes;
* the dataset miniatures of :mod:`qscope_utils.sources` (``write_fixture_hub``), when present.

The real code paths then read it through ``from_pretrained``, ``hf_hub_download`` and
``load_dataset`` with ``HF_HUB_OFFLINE=1``: set :meth:`PaperHub.env` in the environment (it also
reaches papermill kernels, which are separate processes).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = ["PaperHub", "build_paper_hub", "write_user_files", "DEFAULT_GROUPS", "FIXTURE_REVISION"]

FIXTURE_REVISION = "0123456789abcdef0123456789abcdef0f107e00"
"""Commit sha of every fixture snapshot (40 hex digits)."""

DEFAULT_GROUPS: dict[str, dict] = {
    # 8B: d_sae above the report's feature id 36398 so the §3 ids index a real column
    "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50": {"d_model": 32, "d_sae": 37 * 1024},
    "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50": {"d_model": 32, "d_sae": 1024},
}
"""Groups the paper profile and the section paper configs read, with their tiny shapes."""

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "Sparse autoencoders find features in residual streams.",
    "床前明月光，疑是地上霜。举头望明月，低头思故乡。", "从前有一个小村庄，村里住着一位老人。", "Привет, как дела?",
    "Bonjour tout le monde.", "Hallo Welt, wie geht es dir?", "안녕하세요 세계", "1 + 2 = 3", "def f(x): return x",
    "Question: what is 12 * 7? Answer: 84", "I cannot help with that request.",
]
_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@dataclass
class PaperHub:
    """A built fixture hub: ``hf_home`` (set as HF_HOME) and the registry override file."""

    hf_home: Path
    override: Path
    repos: list[str] = field(default_factory=list)
    datasets: bool = False

    @property
    def cache(self) -> Path:
        return self.hf_home / "hub"

    def env(self) -> dict[str, str]:
        """Environment a process needs to read this hub offline (tests: ``monkeypatch.setenv`` each)."""
        return {"HF_HOME": str(self.hf_home), "HF_HUB_CACHE": str(self.cache), "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "QSCOPE_REGISTRY_OVERRIDE": str(self.override)}


def _repo_dir(cache: Path, repo_id: str, kind: str = "model") -> Path:
    return cache / f"{kind}s--{repo_id.replace('/', '--')}"


def write_snapshot(cache: Path, repo_id: str, files: dict[str, Path], kind: str = "model",
                   revision: str = FIXTURE_REVISION) -> Path:
    """Place local files into the cache as huggingface_hub does: blobs by content hash,
    ``snapshots/<revision>/<name>`` relative symlinks, ``refs/main``. Returns the snapshot dir."""
    repo = _repo_dir(cache, repo_id, kind)
    snap = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        if not blob.exists():
            blob.write_bytes(data)
        dst = snap / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.symlink(os.path.relpath(blob, dst.parent), dst)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


def _tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk.train_from_iterator(_SENTENCES * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:])
    tok.chat_template = _CHATML
    return tok


def _write_model(cache: Path, repo_id: str, n_layers: int, hidden: int, tok, work: Path, seed: int) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=n_layers, num_attention_heads=2, num_key_value_heads=1,
                      head_dim=hidden // 2, max_position_embeddings=4096, tie_word_embeddings=True,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    d = work / repo_id.replace("/", "--")
    Qwen3ForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    write_snapshot(cache, repo_id, {p.name: p for p in d.iterdir() if p.is_file()})


def _sae_state(d_model: int, d_sae: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_model, d_sae, generator=g)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    return {"W_enc": W_dec.T.contiguous() * 2.0, "W_dec": W_dec.contiguous(),
            "b_enc": torch.randn(d_sae, generator=g) * 0.1, "b_dec": torch.randn(d_model, generator=g) * 0.1}


def _write_sae_repo(cache: Path, repo_id: str, d_model: int, d_sae: int, n_layers: int, work: Path,
                    n_distinct: int) -> None:
    from ..registry import layer_filename

    d = work / repo_id.replace("/", "--")
    d.mkdir(parents=True, exist_ok=True)
    states = []
    for s in range(min(n_distinct, n_layers)):
        p = d / f"state{s}.pt"
        torch.save(_sae_state(d_model, d_sae, seed=s), p)
        states.append(p)
    # layer n holds state n % n_distinct: identical files share one blob, as on the real hub cache
    write_snapshot(cache, repo_id, {layer_filename(n): states[n % len(states)] for n in range(n_layers)})


def build_paper_hub(hf_home: Path, groups: dict[str, dict] | None = None, datasets: bool | list[str] = True,
                    n_distinct_layers: int = 4, seed: int = 0) -> PaperHub:
    """Write the fixture hub under ``hf_home`` (see the module docstring) and return it.

    groups: official SAE repo id -> tiny shapes (``d_model``, ``d_sae``; ``n_layers`` defaults to
        the real depth); each group's backbone is written once with ``hidden_size = d_model``.
    datasets: True for every dataset miniature of :mod:`qscope_utils.sources`, a list for some,
        False for none.
    n_distinct_layers: number of different SAE states cycled over the layers (keeps wide groups small).
    """
    from ..registry import official_group

    hf_home = Path(hf_home)
    cache, work = hf_home / "hub", hf_home / "_work"
    groups = dict(DEFAULT_GROUPS if groups is None else groups)
    override = {}
    for repo_id, shape in groups.items():
        real = official_group(repo_id)
        override[repo_id] = {"n_layers": real.n_layers, **shape}
    backbones: dict[str, tuple[int, int]] = {}
    for repo_id, o in override.items():
        bb = official_group(repo_id).backbone
        if backbones.setdefault(bb, (o["n_layers"], o["d_model"])) != (o["n_layers"], o["d_model"]):
            raise ValueError(f"groups of backbone {bb} need one (n_layers, d_model); got {backbones[bb]} and "
                             f"{(o['n_layers'], o['d_model'])}")
    tok = _tokenizer()
    for i, (bb, (n_layers, hidden)) in enumerate(sorted(backbones.items())):
        _write_model(cache, bb, n_layers, hidden, tok, work, seed + i)
    for repo_id, o in override.items():
        _write_sae_repo(cache, repo_id, o["d_model"], o["d_sae"], o["n_layers"], work, n_distinct_layers)
    path = hf_home / "registry_override.json"
    path.write_text(json.dumps(override, indent=2))
    hub = PaperHub(hf_home, path, repos=sorted(backbones) + sorted(override))
    if datasets:
        hub.datasets = _write_datasets(hf_home, None if datasets is True else list(datasets))
    _rmtree(work)
    return hub


def _write_datasets(hf_home: Path, names: list[str] | None) -> bool:
    """The dataset miniatures (helper module ``qscope_utils.sources``); False when it is absent."""
    try:
        from ..sources import write_fixture_hub
    except ImportError:
        return False
    write_fixture_hub(hf_home, names=names)
    return True


def write_user_files(root: Path, n_rows: int = 240) -> dict[str, Path]:
    """Schema-exact miniatures of the USER-SUPPLIED sources (classical / modern Chinese, SASFT files,
    the benchmarks without a hub id) under ``root``; returns parameter name -> file. 240 rows: notebook
    06 holds out the first 200 SFT examples and needs two evaluation prompts per language."""
    from ..sources import SOURCES

    out = {}
    for src in SOURCES.values():
        if src.is_user_supplied:
            src.write_miniature(root, n_rows)
            out[src.user_param] = Path(root) / src.mini_path(src.configs[0], src.splits[0])
    return out


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)
