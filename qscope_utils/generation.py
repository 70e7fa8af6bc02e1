"""Batched sampling with a Hugging Face causal LM (KV cache on), seeded and reproducible."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .atomic import CorruptFileError, safetensors_problem
from .batching import token_budget_batches
from .hub import hf_download_command, hub_offline, hub_snapshot, offline_missing

__all__ = ["generate", "load_backbone"]


def load_backbone(path_or_id: str, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer) from a hub id or local directory; eval mode, left padding for generation.

    Bad caches give one clear error: a hub model missing offline names the ``hf download`` command
    (no network retries under ``HF_HUB_OFFLINE=1``); a truncated or damaged weight shard raises
    :class:`~qscope_utils.atomic.CorruptFileError` naming the shard and how to replace it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(path_or_id).is_dir()
    if not local and hub_offline() and hub_snapshot(path_or_id) is None:
        raise offline_missing(path_or_id, what="backbone")
    _check_shards(path_or_id, local)
    try:
        tok = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=getattr(torch, dtype))
    except OSError as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        fix = (f"build the scope first (notebook 00 or `python -m qscope_utils.mini.build --profile <mini|smoke>`)"
               if local or "/" not in path_or_id or Path(path_or_id).is_absolute()
               else f"run `{hf_download_command(path_or_id)}` once with network access")
        raise OSError(f"cannot load backbone {path_or_id!r}: {first}. Fix: {fix}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model.to(device).eval(), tok


def _check_shards(path_or_id: str, local: bool) -> None:
    """Raise CorruptFileError for the first truncated/damaged ``*.safetensors`` shard of a local
    checkpoint or of the cached hub snapshot (reads headers only)."""
    root = Path(path_or_id) if local else hub_snapshot(path_or_id)
    if root is None:
        return
    for shard in sorted(root.glob("*.safetensors")):
        problem = safetensors_problem(shard)
        if problem:
            fix = (f"delete {root} and rebuild it (`python -m qscope_utils.mini.build --profile <mini|smoke>`)"
                   if local else f"run `{hf_download_command(path_or_id, shard.name)} --force-download`")
            raise CorruptFileError(shard, problem, fix)


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int = 32, do_sample: bool = True,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
             return_ids: bool = False, max_batch_tokens: int | None = None):
    """Continuations of ``prompts`` (list of str, prompt removed). Sampling is seeded per call.

    Consecutive batches of at most ``batch_size`` prompts and, with ``max_batch_tokens``, at most that many
    tokens (rows x (longest prompt + max_new_tokens), what the KV cache grows to;
    :func:`qscope_utils.batching.token_budget_batches`), run one after another from one seeded random
    stream. Greedy results do not depend on the batching; sampled ones do, so keep a profile's sizes.
    With ``return_ids`` also returns the list of generated token-id tensors (without prompt).
    """
    torch.manual_seed(seed)
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts, ids_out = [], []
    try:
        for group in _batches(tokenizer, prompts, max_new_tokens, batch_size, max_batch_tokens):
            enc = tokenizer([prompts[i] for i in group], return_tensors="pt", padding=True).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature if do_sample else None, top_p=top_p if do_sample else None,
                                 pad_token_id=tokenizer.pad_token_id, use_cache=True)
            gen = out[:, enc["input_ids"].shape[1]:]
            for row in gen:
                row = row[row != tokenizer.pad_token_id] if tokenizer.pad_token_id is not None else row
                ids_out.append(row.cpu())
                texts.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = old
    return (texts, ids_out) if return_ids else texts


def _batches(tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             max_batch_tokens: int | None) -> list[list[int]]:
    """Index groups: ``batch_size`` rows each (as before), split further under ``max_batch_tokens``."""
    if max_batch_tokens is None:
        return [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)]
    lens = [len(ids) + max_new_tokens for ids in tokenizer(list(prompts))["input_ids"]]
    return token_budget_batches(lens, max_batch_tokens, max_rows=batch_size)
