"""The Qwen-Scope SAE registry: one source of truth for the 14 released groups (docs/CONVENTIONS.md §2).

A *group* is one Hugging Face repo holding one TopK SAE per decoder layer,
``layer{n}.sae.pt`` for n in 0..n_layers-1. The name encodes width and k:
``Qwen/SAE-Res-<backbone>-W<width>-L0_<k>``. Locally built groups (the mini
profile) follow the same pattern and are registered with :func:`register`.

Tests and dry runs only: ``QSCOPE_REGISTRY_OVERRIDE=<json file>`` replaces the shapes of named
official groups (``{"Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50": {"d_model": 32, "d_sae": 37888}}``;
keys among d_model, d_sae, k, n_layers) at import, so that papermill kernels (separate processes)
read the tiny fixture hub of :mod:`qscope_utils.testing.paper_hub` under the real repo ids. The
table below is the real one and is never edited by the override; :func:`official_group` returns it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from dataclasses import dataclass

__all__ = ["SAEGroup", "REGISTRY", "OVERRIDE_ENV", "official_group", "apply_override", "get_group",
           "find_groups", "register", "parse_repo_name", "layer_filename", "saelens_release", "SAELENS_RELEASES",
           "saelens_layer"]

_NAME_RE = re.compile(r"^(?:(?P<org>[^/]+)/)?SAE-Res-(?P<backbone>.+)-W(?P<width>\d+)K-L0_(?P<k>\d+)$")


@dataclass(frozen=True)
class SAEGroup:
    """One SAE group (a repo of per-layer SAEs).

    repo_id: hub id (``Qwen/SAE-Res-...``) or a local name.
    backbone: the model to pair it with (hub id or local path).
    d_model: residual width; d_sae: dictionary width; k: active latents per token.
    n_layers: number of decoder layers (= number of layer files).
    """

    repo_id: str
    backbone: str
    d_model: int
    d_sae: int
    k: int
    n_layers: int
    moe: bool = False

    @property
    def width_label(self) -> str:
        return f"W{self.d_sae // 1024}K"

    def check_layer(self, layer: int) -> None:
        if not 0 <= layer < self.n_layers:
            raise IndexError(
                f"layer {layer} is out of range for {self.repo_id}: it has layers 0..{self.n_layers - 1} "
                f"(files layer0.sae.pt … layer{self.n_layers - 1}.sae.pt)"
            )

    def check_feature(self, feature: int) -> None:
        if not 0 <= feature < self.d_sae:
            raise IndexError(
                f"feature id {feature} is out of range for {self.repo_id} (d_sae={self.d_sae}); "
                f"ids >= 32768 need a W64K or wider group"
            )


def layer_filename(layer: int) -> str:
    """File name of one layer's SAE inside a group repo."""
    return f"layer{layer}.sae.pt"


def parse_repo_name(repo_id: str) -> dict:
    """Split ``[org/]SAE-Res-<backbone>-W<w>K-L0_<k>`` into its parts (width in latents)."""
    m = _NAME_RE.match(repo_id)
    if not m:
        raise ValueError(f"{repo_id!r} is not a Qwen-Scope group name (expected 'Qwen/SAE-Res-<backbone>-W<w>K-L0_<k>')")
    return {"org": m["org"], "backbone": m["backbone"], "d_sae": int(m["width"]) * 1024, "k": int(m["k"])}


def _g(backbone: str, d_model: int, width_k: int, k: int, n_layers: int, base: bool = True, moe: bool = False) -> SAEGroup:
    name = backbone + ("-Base" if base else "")
    return SAEGroup(f"Qwen/SAE-Res-{name}-W{width_k}K-L0_{k}", f"Qwen/{name}", d_model, width_k * 1024, k, n_layers, moe)


REGISTRY: dict[str, SAEGroup] = {
    g.repo_id: g
    for g in [
        _g("Qwen3-1.7B", 2048, 32, 50, 28), _g("Qwen3-1.7B", 2048, 32, 100, 28),
        _g("Qwen3-8B", 4096, 64, 50, 36), _g("Qwen3-8B", 4096, 64, 100, 36),
        _g("Qwen3.5-2B", 2048, 32, 50, 24), _g("Qwen3.5-2B", 2048, 32, 100, 24),
        _g("Qwen3.5-9B", 4096, 64, 50, 32), _g("Qwen3.5-9B", 4096, 64, 100, 32),
        _g("Qwen3.5-27B", 5120, 80, 50, 64, base=False), _g("Qwen3.5-27B", 5120, 80, 100, 64, base=False),
        _g("Qwen3-30B-A3B", 2048, 32, 50, 48, moe=True), _g("Qwen3-30B-A3B", 2048, 128, 100, 48, moe=True),
        _g("Qwen3.5-35B-A3B", 2048, 32, 50, 40, moe=True), _g("Qwen3.5-35B-A3B", 2048, 128, 100, 40, moe=True),
    ]
}
_OFFICIAL = frozenset(REGISTRY)
_REAL: dict[str, SAEGroup] = dict(REGISTRY)
OVERRIDE_ENV = "QSCOPE_REGISTRY_OVERRIDE"
_OVERRIDABLE = ("d_model", "d_sae", "k", "n_layers")


def official_group(repo_id: str) -> SAEGroup:
    """The real (released) entry of an official group, whatever override is active."""
    return _REAL[repo_id]


def apply_override(spec: dict[str, dict]) -> list[str]:
    """TEST / DRY-RUN ONLY: replace shapes of named official groups (see the module docstring).

    Returns the overridden repo ids. Unknown ids or keys raise an error naming the allowed ones.
    """
    for repo_id, fields in spec.items():
        if repo_id not in _OFFICIAL:
            raise KeyError(f"{OVERRIDE_ENV}: {repo_id!r} is not an official group; known: {sorted(_OFFICIAL)}")
        bad = sorted(set(fields) - set(_OVERRIDABLE))
        if bad:
            raise KeyError(f"{OVERRIDE_ENV}: {repo_id}: cannot override {bad}; allowed keys: {list(_OVERRIDABLE)}")
        REGISTRY[repo_id] = replace(_REAL[repo_id], **{k: int(v) for k, v in fields.items()})
    return list(spec)


def _override_from_env() -> None:
    path = os.environ.get(OVERRIDE_ENV)
    if path:
        apply_override(json.loads(open(path, encoding="utf-8").read()))


def register(group: SAEGroup) -> SAEGroup:
    """Add a locally built group (e.g. the mini profile's). Official ids cannot be overridden."""
    if group.repo_id in _OFFICIAL and REGISTRY[group.repo_id] != group:
        raise ValueError(f"{group.repo_id} is an official Qwen-Scope group and cannot be redefined")
    parsed = parse_repo_name(group.repo_id)
    if parsed["k"] != group.k:
        raise ValueError(f"{group.repo_id}: k in the name ({parsed['k']}) differs from k={group.k}")
    REGISTRY[group.repo_id] = group
    return group


# ----------------------------------------------------------------------------- SAELens names
# SAELens (>= 6.43) registers the 14 groups as releases named from the repo id by one rule:
# ``Qwen/SAE-Res-Qwen3-8B-Base-W64K-L0_50`` -> ``qwen-scope-3-8b-base-w64k-l50``, with
# ``sae_id="layer{n}"``. Checked against public uses of the 1.7B, 8B, 3.5-9B and 3.5-27B releases;
# the MoE names follow the same rule (assumed, not seen).

def saelens_release(repo_id: str) -> str:
    """The SAELens release name of a Qwen-Scope group."""
    p = parse_repo_name(repo_id)
    backbone = re.sub(r"^qwen", "", p["backbone"].lower())
    return f"qwen-scope-{backbone}-w{p['d_sae'] // 1024}k-l{p['k']}"


SAELENS_RELEASES: dict[str, str] = {saelens_release(r): r for r in _OFFICIAL}   # release -> repo id


def saelens_layer(sae_id: str) -> int:
    """``"layer12"`` (a SAELens ``sae_id``) -> 12."""
    m = re.fullmatch(r"layer(\d+)", sae_id)
    if not m:
        raise ValueError(f"{sae_id!r} is not a Qwen-Scope SAELens sae_id (expected 'layer<n>', e.g. 'layer12')")
    return int(m[1])


def get_group(repo_id: str) -> SAEGroup:
    """Look a group up by repo id or SAELens release name; unknown ids get the list of known ones."""
    try:
        return REGISTRY[SAELENS_RELEASES.get(repo_id, repo_id)]
    except KeyError:
        known = "\n  ".join(sorted(REGISTRY))
        raise KeyError(f"unknown SAE group {repo_id!r}. Known groups:\n  {known}\n"
                       f"(a locally built group must be registered with qscope_utils.registry.register)") from None


def find_groups(backbone: str | None = None, d_sae: int | None = None, k: int | None = None) -> list[SAEGroup]:
    """All groups matching the given backbone (hub id or its last part), width and k."""
    out = []
    for g in REGISTRY.values():
        if backbone is not None and backbone not in (g.backbone, g.backbone.split("/")[-1]):
            continue
        if d_sae is not None and g.d_sae != d_sae:
            continue
        if k is not None and g.k != k:
            continue
        out.append(g)
    return out


_override_from_env()
