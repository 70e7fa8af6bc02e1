"""Run profiles: ``paper`` (real Qwen3 + Qwen-Scope on a GPU), ``mini`` (built offline on a CPU,
the default) and ``smoke`` (micro sizes for tests/CI). A profile changes sizes and sources,
never the code path: every notebook takes ``profile`` as a papermill parameter and calls
:func:`get_profile`.

Section notebooks keep their own typed config dataclasses (``<Section>Config.for_profile(name)``);
this module holds what all sections share: the backbone, the SAE group, the device and the
mini-scope build sizes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from .paths import build_seed, data_dir

__all__ = ["MiniScopeConfig", "Profile", "get_profile", "require_device", "PROFILES", "PAPER_NORM_RATIO",
           "massive_norm_ratio"]


@dataclass(frozen=True)
class MiniScopeConfig:
    """Sizes of the offline-built mini scope (corpus, tokenizer, tiny Qwen3, TopK SAEs)."""

    max_chars_per_source: int = 400_000     # cap per corpus source (characters)
    vocab_size: int = 2048                  # 2048: the lm_head dominates CPU step time at this width
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    seq_len: int = 128
    batch_size: int = 32
    train_steps: int = 1000                 # trunk; with the branch ~10 min on 2 CPU cores (pretrain docstring)
    lr: float = 3e-3
    # checkpoints saved per mixture (the branch saves those after branch_step): 17 balanced + 10
    # code_math_heavy = 27 zoo checkpoints, at least the report's 26 (§4); saving does not change training
    zoo_steps: tuple[int, ...] = (100, 200, 300, 350, 400, 450, 500, 550, 600, 650, 700, 750, 800, 850, 900, 950,
                                  1000)
    mixtures: tuple[str, ...] = ("balanced", "code_math_heavy")
    branch_step: int = 500                  # non-balanced mixtures branch off the balanced run here
    sae_expansion: int = 16                 # d_sae = expansion * hidden_size
    sae_k: int = 32
    sae_train_tokens: int = 1_000_000
    sae_batch_tokens: int = 1024
    sae_lr: float = 1e-3
    seed: int = 0                           # build seed (corpus split, init, batches, SAEs); $QSCOPE_SEED sets it


SMOKE_SCOPE = MiniScopeConfig(
    max_chars_per_source=20_000, vocab_size=512, hidden_size=64, n_layers=2, n_heads=2, n_kv_heads=1,
    head_dim=32, intermediate_size=128, seq_len=32, batch_size=8, train_steps=40, lr=3e-3,
    zoo_steps=(20, 40), mixtures=("balanced", "code_math_heavy"), branch_step=20, sae_expansion=16, sae_k=8,
    sae_train_tokens=8_000, sae_batch_tokens=256,
)


@dataclass(frozen=True)
class Profile:
    """Everything a section needs to know about where models and SAEs come from.

    backbone: HF hub id or local directory of a ``Qwen3ForCausalLM`` checkpoint.
    sae_repo: registry id of the SAE group (``Qwen/SAE-Res-...`` or the mini group's name).
    sae_source: ``"hub"`` (huggingface_hub, honours HF_HUB_OFFLINE) or a local directory with the
        same layout as the hub repo (``layer{n}.sae.pt`` files).
    layers: layers the sections analyse by default (None = every layer of the group).
    device / dtype: where the backbone runs; the SAE always encodes in float32.
    scope: build sizes for mini/smoke (None for paper).
    norm_ratio: massive-norm token exclusion (docs/CONVENTIONS.md §2): token-pooled statistics (FVU, contrast
        means, firing) drop tokens whose residual L2 norm exceeds ``norm_ratio`` x the median norm
        of the batch's valid tokens. Paper: 10.0 (Qwen3 attention sinks are 100x+ the median);
        None on mini/smoke, whose numbers are pinned without it. Position 0 is always excluded.
    """

    name: str
    backbone: str
    sae_repo: str
    sae_source: str
    layers: tuple[int, ...] | None = None
    device: str = "cpu"
    dtype: str = "float32"
    seed: int = 0
    scope: MiniScopeConfig | None = None
    norm_ratio: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def is_built(self) -> bool:
        """True for profiles whose model and SAEs this project builds itself (mini, smoke)."""
        return self.scope is not None

    @property
    def data_dir(self) -> Path:
        return data_dir(self.name)


def mini_group_name(scope: MiniScopeConfig) -> str:
    """Registry id of a built scope's SAE group, in the Qwen-Scope naming pattern."""
    width = scope.sae_expansion * scope.hidden_size
    width_label = f"{width // 1024}K" if width % 1024 == 0 else None
    if width_label is None:
        raise ValueError(f"mini SAE width {width} must be a multiple of 1024 to follow the W<n>K naming")
    return f"local/SAE-Res-MiniQwen3-Base-W{width_label}-L0_{scope.sae_k}"


def _built(name: str, scope: MiniScopeConfig) -> Profile:
    root = data_dir(name)
    return Profile(
        name=name,
        backbone=str(root / "models" / "main"),
        sae_repo=mini_group_name(scope),
        sae_source=str(root / "sae" / mini_group_name(scope).split("/")[-1]),
        scope=scope,
    )


PAPER_NORM_RATIO = 10.0
"""Default massive-norm threshold of the paper profile (multiple of the median token norm)."""


def massive_norm_ratio(profile: Profile, value="profile") -> float | None:
    """A notebook's ``norm_ratio`` parameter resolved: ``"profile"`` gives the profile's default
    (paper 10.0, mini/smoke None); None disables the exclusion; a number is used as given."""
    if value == "profile":
        return profile.norm_ratio
    if value is None:
        return None
    ratio = float(value)
    if ratio <= 1:
        raise ValueError(f"norm_ratio={value} would drop typical tokens: use a multiple of the median norm > 1 "
                         f"(e.g. 10), None to disable, or 'profile' for the profile default")
    return ratio


def _paper() -> Profile:
    return Profile(
        name="paper",
        backbone="Qwen/Qwen3-8B-Base",
        sae_repo="Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50",
        sae_source="hub",
        device="cuda",
        dtype="bfloat16",
        norm_ratio=PAPER_NORM_RATIO,
    )


PROFILES = ("mini", "smoke", "paper")


def get_profile(name: str = "mini", **overrides) -> Profile:
    """Resolve a profile by name; keyword overrides replace fields (e.g. ``device="cuda"``).

    ``QSCOPE_DEVICE`` in the environment overrides the device for every profile, ``QSCOPE_DTYPE``
    the backbone dtype (``float32`` | ``bfloat16`` | ``float16``; e.g. float32 for the paper profile
    on a CPU without bf16 matrix units, where bf16 matmuls run about 100x slower). ``QSCOPE_SEED``
    selects the build seed of mini/smoke (its scope lives in ``data/<profile>-seedN``, see
    :func:`qscope_utils.paths.seeded`; seed 0 is the default build in ``data/<profile>``).
    """
    if name == "mini":
        prof = _built("mini", replace(MiniScopeConfig(), seed=build_seed()))
    elif name == "smoke":
        prof = _built("smoke", replace(SMOKE_SCOPE, seed=build_seed()))
    elif name == "paper":
        prof = _paper()
    else:
        raise ValueError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}")
    if os.environ.get("QSCOPE_DEVICE"):
        prof = replace(prof, device=os.environ["QSCOPE_DEVICE"])
    if os.environ.get("QSCOPE_DTYPE"):
        prof = replace(prof, dtype=_dtype_name(os.environ["QSCOPE_DTYPE"]))
    return replace(prof, **overrides) if overrides else prof


DTYPES = ("float32", "bfloat16", "float16")


def _dtype_name(value: str) -> str:
    if value not in DTYPES:
        raise ValueError(f"QSCOPE_DTYPE={value!r} is not a backbone dtype: choose one of {', '.join(DTYPES)}")
    return value


def require_device(prof: Profile) -> None:
    """Fail early, naming the fix, when ``prof.device`` is CUDA but this torch build has no CUDA."""
    import torch

    if str(prof.device).startswith("cuda") and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA device is visible")
        raise RuntimeError(
            f"the {prof.name} profile runs on device {prof.device!r} but {why} (torch {torch.__version__}). "
            f"Fix: install the CUDA build with `QSCOPE_TORCH=cuda ./run_all.sh --profile {prof.name}` on a GPU "
            f"machine, or run on the CPU with `QSCOPE_DEVICE=cpu ./run_all.sh --profile {prof.name}`")
