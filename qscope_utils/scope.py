"""Open a profile's backbone, tokenizer and SAE group in one call (every notebook starts here)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .generation import load_backbone
from .hooks import decoder_layers
from .hub import hub_offline, missing_lines
from .profiles import Profile, get_profile, require_device
from .registry import REGISTRY, SAEGroup, get_group, register
from .sae import SAELoader

__all__ = ["Scope", "open_scope", "group_for"]


def group_for(profile: Profile) -> SAEGroup:
    """The registry entry of a profile's SAE group (built profiles are registered on first use)."""
    if profile.scope is not None and profile.sae_repo not in REGISTRY:
        s = profile.scope
        register(SAEGroup(profile.sae_repo, profile.backbone, s.hidden_size, s.sae_expansion * s.hidden_size,
                          s.sae_k, s.n_layers))
    return get_group(profile.sae_repo)


@dataclass
class Scope:
    """A backbone with its SAE group. ``saes[n]`` loads layer n lazily (LRU cache)."""

    profile: Profile
    model: torch.nn.Module
    tokenizer: object
    saes: SAELoader

    @property
    def group(self) -> SAEGroup:
        return self.saes.group

    @property
    def n_layers(self) -> int:
        return self.group.n_layers

    def layers(self) -> list[int]:
        """The profile's default analysis layers (all layers when unset)."""
        return list(self.profile.layers) if self.profile.layers is not None else list(range(self.n_layers))


def open_scope(profile: str | Profile = "mini", cache_size: int = 2, **overrides) -> Scope:
    """Load the backbone (eval mode) and a lazy SAE loader for ``profile``.

    Built profiles (mini, smoke) need their scope built first (notebook 00); the error says so.
    """
    prof = get_profile(profile, **overrides) if isinstance(profile, str) else profile
    if prof.is_built and not Path(prof.backbone).is_dir():
        raise FileNotFoundError(f"the {prof.name} scope is not built yet ({prof.backbone} is missing). Fix: run "
                                f"notebook 00 or `python -m qscope_utils.mini.build --profile {prof.name}`")
    require_device(prof)
    group = group_for(prof)
    if not prof.is_built and not Path(prof.backbone).is_dir() and hub_offline():
        missing = missing_lines(prof.backbone)       # offline preflight: one line per artefact, no retries
        if missing:
            raise FileNotFoundError("\n".join(missing))
    model, tok = load_backbone(prof.backbone, device=prof.device, dtype=prof.dtype)
    saes = SAELoader(group.repo_id, source=prof.sae_source, device=prof.device, cache_size=cache_size,
                     hidden_size=model.config.hidden_size)
    if len(decoder_layers(model)) != group.n_layers:
        raise ValueError(f"{group.repo_id} has {group.n_layers} layers but {prof.backbone} has a different depth: "
                         f"pair the group with {group.backbone}")
    return Scope(prof, model, tok, saes)
