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

``shape="real"`` writes instead random-weight backbones and SAEs of the PUBLISHED shapes (the
paper-shape dry run, ``scripts/paper_shape.py``); see :func:`build_paper_hub`.

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

__all__ = ["PaperHub", "build_paper_hub", "write_user_files", "DEFAULT_GROUPS", "FIXTURE_REVISION", "REAL_MODELS"]

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
    shape: str = "tiny"
    aliases: dict[str, str] = field(default_factory=dict)
    """Real-shape hubs: id -> the id whose published shape it serves (the 8B ids at the 1.7B shape)."""
    tokenizer: str = "fixture byte-level BPE (400 tokens)"

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
        blob = repo / "blobs" / _sha256(Path(src))
        if not blob.exists():
            _link_or_copy(Path(src), blob)
        dst = snap / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        os.symlink(os.path.relpath(blob, dst.parent), dst)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


_HASHES: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """Content hash of ``path``, read in 16 MiB chunks (real-shape files are GBs); memoised per file identity."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_mtime_ns, st.st_size)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 24), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no second copy of a GB file); copy across file systems."""
    import shutil

    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def fixture_tokenizer(vocab_size: int = 400):
    """The fixture byte-level BPE tokenizer (ChatML template, ``<|endoftext|>`` as eos and pad)."""
    return _tokenizer(vocab_size)


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


def random_backbone(shape, tok, dtype: torch.dtype = torch.float32, seed: int = 0):
    """A random-weight ``Qwen3ForCausalLM`` of ``shape`` (:class:`qscope_utils.model_shapes.BackboneShape`)
    in ``dtype``, eval mode: built on the meta device, then filled in place (no float32 detour), weights
    N(0, 0.02) as the config's ``initializer_range``, RMSNorm gains 1. Special-token ids from ``tok``."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from ..model_shapes import qwen3_config_dict

    cfg = Qwen3Config(**qwen3_config_dict(shape), bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, dtype=str(dtype).split(".")[-1])
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = Qwen3ForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, cfg.initializer_range, generator=g)
    # the rotary inverse frequencies are a non-persistent buffer that to_empty left uninitialised
    model.model.rotary_emb = type(model.model.rotary_emb)(model.config)
    model.tie_weights()
    return model.eval()


def _write_real_model(cache: Path, repo_ids: list[str], shape, tok, work: Path, seed: int) -> dict:
    """A random-weight ``Qwen3ForCausalLM`` of the published ``shape`` (:mod:`qscope_utils.model_shapes`)
    saved as bf16 safetensors under every id in ``repo_ids`` (one set of blobs, hard-linked). Weights
    are N(0, 0.02) as the config's ``initializer_range``, RMSNorm gains 1. Returns the written config."""
    model = random_backbone(shape, tok, torch.bfloat16, seed)
    cfg = model.config
    d = work / "real-backbone"
    model.save_pretrained(d)
    del model
    tok.save_pretrained(d)
    for repo_id in repo_ids:
        write_snapshot(cache, repo_id, {p.name: p for p in d.iterdir() if p.is_file()})
    return cfg.to_dict()


def _sae_state(d_model: int, d_sae: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(d_model, d_sae, generator=g)
    W_dec /= W_dec.norm(dim=0, keepdim=True)
    return {"W_enc": W_dec.T.contiguous() * 2.0, "W_dec": W_dec.contiguous(),
            "b_enc": torch.randn(d_sae, generator=g) * 0.1, "b_dec": torch.randn(d_model, generator=g) * 0.1}


def _write_sae_repo(cache: Path, repo_id: str, d_model: int, d_sae: int, n_layers: int, work: Path,
                    n_distinct: int, layers: list[int] | None = None) -> None:
    from ..registry import layer_filename

    d = work / repo_id.replace("/", "--")
    d.mkdir(parents=True, exist_ok=True)
    states = []
    for s in range(min(n_distinct, n_layers)):
        p = d / f"state{s}.pt"
        torch.save(_sae_state(d_model, d_sae, seed=s), p)
        states.append(p)
    # layer n holds state n % n_distinct: identical files share one blob, as on the real hub cache
    written = range(n_layers) if layers is None else layers
    write_snapshot(cache, repo_id, {layer_filename(n): states[n % len(states)] for n in written})


REAL_MODELS: dict[str, tuple[str, str]] = {
    "1.7B": ("Qwen/Qwen3-1.7B-Base", "Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_50"),
    "8B": ("Qwen/Qwen3-8B-Base", "Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50"),
}
"""``models`` of a real-shape hub -> (backbone id, SAE group id) the paper profile reads."""


def _build_real(cache: Path, work: Path, models: tuple[str, ...], n_distinct: int, layers: list[int] | None,
                seed: int) -> tuple[dict, list[str], dict[str, str]]:
    """Write real-shape backbones and SAE repos; returns (registry override, repos, aliases).

    Without "8B" in ``models``, the 8B ids (notebooks 01, 02, 03 and 05 read only those on the paper
    profile) serve the first model's weights and SAE shapes, declared through the registry override."""
    from ..model_shapes import BACKBONE_SHAPES
    from ..registry import official_group

    bad = sorted(set(models) - set(REAL_MODELS))
    if bad or not models:
        raise ValueError(f"models={models!r}: choose among {sorted(REAL_MODELS)}")
    tok = _tokenizer()
    serve = {m: [REAL_MODELS[m][0]] for m in models}
    groups = {m: [REAL_MODELS[m][1]] for m in models}
    override, aliases = {}, {}
    if "8B" not in models:
        base = models[0]
        serve[base].append(REAL_MODELS["8B"][0])
        groups[base].append(REAL_MODELS["8B"][1])
        g = official_group(REAL_MODELS[base][1])
        override[REAL_MODELS["8B"][1]] = {"d_model": g.d_model, "d_sae": g.d_sae, "k": g.k, "n_layers": g.n_layers}
        aliases = {REAL_MODELS["8B"][0]: REAL_MODELS[base][0], REAL_MODELS["8B"][1]: REAL_MODELS[base][1]}
    for i, m in enumerate(models):
        _write_real_model(cache, serve[m], BACKBONE_SHAPES[REAL_MODELS[m][0]], tok, work, seed + i)
        g = official_group(REAL_MODELS[m][1])
        for repo_id in groups[m]:
            _write_sae_repo(cache, repo_id, g.d_model, g.d_sae, g.n_layers, work, n_distinct, layers)
        _rmtree(work)
    repos = sorted(r for m in models for r in serve[m] + groups[m])
    return override, repos, aliases


def build_paper_hub(hf_home: Path, groups: dict[str, dict] | None = None, datasets: bool | list[str] = True,
                    n_distinct_layers: int = 4, seed: int = 0, shape: str = "tiny",
                    models: tuple[str, ...] = ("1.7B",), layers: list[int] | None = None) -> PaperHub:
    """Write the fixture hub under ``hf_home`` (see the module docstring) and return it.

    shape: "tiny" (``groups``' shapes) or "real": random-weight backbones of the PUBLISHED configurations
        (:data:`qscope_utils.model_shapes.BACKBONE_SHAPES`; vocabulary 151,936) in bf16 safetensors and
        random SAEs of the registry's real shapes, for ``models`` (keys of :data:`REAL_MODELS`). The
        tokenizer is always the fixture one (no Qwen tokenizer ships offline): ids beyond its 400 tokens
        decode to nothing. Disk: 1.7B about 4.1 GB + 0.54 GB per distinct SAE layer file per group;
        8B about 16.4 GB + 2.15 GB per distinct file.
    models: real shape only; without "8B" the 8B ids serve the first model's shapes (see :func:`_build_real`).
    layers: SAE layer files to write (None: every layer; others then raise the loader's missing-file error).

    groups: official SAE repo id -> tiny shapes (``d_model``, ``d_sae``; ``n_layers`` defaults to
        the real depth); each group's backbone is written once with ``hidden_size = d_model``.
    datasets: True for every dataset miniature of :mod:`qscope_utils.sources`, a list for some,
        False for none.
    n_distinct_layers: number of different SAE states cycled over the layers (keeps wide groups small).
    """
    from ..registry import official_group

    hf_home = Path(hf_home)
    cache, work = hf_home / "hub", hf_home / "_work"
    if shape == "real":
        override, repos, aliases = _build_real(cache, work, tuple(models), n_distinct_layers, layers, seed)
        return _finish(PaperHub(hf_home, hf_home / "registry_override.json", repos=repos, shape="real",
                                aliases=aliases), override, datasets)
    if shape != "tiny":
        raise ValueError(f"shape={shape!r}: choose 'tiny' (test fixtures) or 'real' (published shapes)")
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
        _write_sae_repo(cache, repo_id, o["d_model"], o["d_sae"], o["n_layers"], work, n_distinct_layers, layers)
    _rmtree(work)
    return _finish(PaperHub(hf_home, hf_home / "registry_override.json", repos=sorted(backbones) + sorted(override)),
                   override, datasets)


def _finish(hub: PaperHub, override: dict, datasets: bool | list[str]) -> PaperHub:
    """Write the registry override file and the dataset miniatures of ``hub``."""
    hub.override.write_text(json.dumps(override, indent=2))
    if datasets:
        hub.datasets = _write_datasets(hub.hf_home, None if datasets is True else list(datasets))
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
