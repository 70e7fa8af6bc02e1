"""The embedded default: an offline-built mini Qwen-Scope (corpus -> tokenizer -> tiny Qwen3 -> TopK SAEs).

Entry point: :func:`qscope_utils.mini.build.build_scope` (CLI ``python -m qscope_utils.mini.build``).
Submodules are imported lazily so that ``import qscope_utils.mini`` stays cheap.
"""
from __future__ import annotations

import importlib

__all__ = ["build_scope", "build_corpus", "load_corpus", "Doc", "make_problems", "score_answer",
           "load_tokenizer", "load_checkpoint", "register_mini_group"]

_LAZY = {
    "build_scope": "build", "build_corpus": "corpus", "load_corpus": "corpus", "Doc": "corpus",
    "make_problems": "tasks", "score_answer": "tasks", "load_tokenizer": "tokenizer",
    "load_checkpoint": "pretrain", "register_mini_group": "sae_train",
}


def __getattr__(name: str):
    if name in _LAZY:
        mod = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(mod, name)
    raise AttributeError(name)
