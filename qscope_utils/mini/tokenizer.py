"""Byte-level BPE tokenizer for the mini scope, trained with ``tokenizers`` on the corpus train split.

Like Qwen's: byte-level BPE behind Qwen2's pre-tokenisation regex (single digits, letters runs,
punctuation runs), ``<|endoftext|>`` is the end-of-text and padding token. Unlike Qwen Base, a
``<|bos|>`` token is prepended by the post-processor (``tok(text)`` gives ``[bos] + ids``), and the
pretraining documents are ``bos + text + eos``: position 0 of every sequence is then the same
token, the mini model's attention sink, which the SAE and feature statistics exclude.
``<|im_start|>``/``<|im_end|>`` are reserved for the chat-style fine-tuning sections.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["train_tokenizer", "load_tokenizer", "EOS", "BOS", "SPECIAL_TOKENS", "QWEN2_PATTERN"]

EOS = "<|endoftext|>"
BOS = "<|bos|>"
SPECIAL_TOKENS = [EOS, BOS, "<|im_start|>", "<|im_end|>"]
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def train_tokenizer(texts, vocab_size: int, out_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of ``vocab_size`` on an iterable of strings; optionally save it."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B:1",
                                                       special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                                   additional_special_tokens=SPECIAL_TOKENS[2:], model_max_length=1 << 16,
                                   clean_up_tokenization_spaces=False)
    fast.padding_side = "right"
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a saved mini tokenizer (a model directory or the tokenizer directory)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
