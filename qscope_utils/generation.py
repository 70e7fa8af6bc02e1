"""Batched sampling with a Hugging Face causal LM (KV cache on), seeded and reproducible."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["generate", "load_backbone"]


def load_backbone(path_or_id: str, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer) from a hub id or local directory; eval mode, left padding for generation.

    Offline without a cache gives an error naming the fix.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path_or_id)
        model = AutoModelForCausalLM.from_pretrained(path_or_id, dtype=getattr(torch, dtype))
    except OSError as e:
        raise OSError(f"cannot load backbone {path_or_id!r}: {e}\nFix: for the mini/smoke profiles build the scope "
                      f"first (notebook 00 or `python -m qscope_utils.mini.build --profile <name>`); for the paper "
                      f"profile download the model once with network access (HF_HUB_OFFLINE unset).") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return model.to(device).eval(), tok


@torch.no_grad()
def generate(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int = 32, do_sample: bool = True,
             temperature: float = 1.0, top_p: float = 1.0, seed: int = 0, batch_size: int = 16,
             return_ids: bool = False):
    """Continuations of ``prompts`` (list of str, prompt removed). Sampling is seeded per call.

    With ``return_ids`` also returns the list of generated token-id tensors (without prompt).
    """
    torch.manual_seed(seed)
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    texts, ids_out = [], []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True).to(model.device)
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
