"""Published architecture shapes of the backbones the paper profile uses (no download needed).

The values are those of the models' ``config.json`` on the hub (Qwen3 family: GQA with 8 KV heads,
head_dim 128, QK-norm, vocabulary 151,936). They feed the cost plan (:mod:`qscope_utils.plan`) and the
paper-shape dry run, which builds random-weight backbones of exactly these shapes. A checkpoint that is
present locally always wins: :func:`backbone_shape` reads its ``config.json`` when it can.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["BackboneShape", "BACKBONE_SHAPES", "backbone_shape", "qwen3_config_dict"]


@dataclass(frozen=True)
class BackboneShape:
    """One decoder-only Qwen3 backbone's shape.

    hidden_size: residual width d_model (elements).
    intermediate_size: SwiGLU MLP width (elements).
    n_layers: decoder layers.
    n_heads / n_kv_heads / head_dim: attention heads, key-value heads (GQA), per-head width.
    vocab_size: embedding / LM-head rows (151,936 for every Qwen3 model).
    tie_word_embeddings: True when the LM head shares the embedding matrix (1.7B), False for 8B.
    max_position_embeddings: longest context the config allows (tokens).
    """

    hidden_size: int
    intermediate_size: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int = 151_936
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 32_768

    @property
    def n_params(self) -> int:
        """Parameter count (weights only; RMSNorm gains included)."""
        d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
        attn = d * h * (self.n_heads + 2 * self.n_kv_heads) + self.n_heads * h * d + 2 * h   # q,k,v,o + q/k norms
        mlp = 3 * d * f
        per_layer = attn + mlp + 2 * d
        emb = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
        return self.n_layers * per_layer + emb + d

    def kv_bytes_per_token(self, bytes_per_el: int = 2) -> int:
        """KV-cache bytes one token occupies across all layers."""
        return 2 * self.n_layers * self.n_kv_heads * self.head_dim * bytes_per_el


BACKBONE_SHAPES: dict[str, BackboneShape] = {
    "Qwen/Qwen3-1.7B-Base": BackboneShape(2048, 6144, 28, 16, 8, 128, tie_word_embeddings=True),
    "Qwen/Qwen3-8B-Base": BackboneShape(4096, 12288, 36, 32, 8, 128, tie_word_embeddings=False),
}
BACKBONE_SHAPES["Qwen/Qwen3-1.7B"] = BACKBONE_SHAPES["Qwen/Qwen3-1.7B-Base"]
BACKBONE_SHAPES["Qwen/Qwen3-8B"] = BACKBONE_SHAPES["Qwen/Qwen3-8B-Base"]


def backbone_shape(backbone: str) -> BackboneShape:
    """Shape of ``backbone``: its local ``config.json`` if ``backbone`` is a directory, else the table."""
    cfg = Path(backbone) / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        return BackboneShape(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                             c["num_attention_heads"], c["num_key_value_heads"],
                             c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"], c["vocab_size"],
                             bool(c.get("tie_word_embeddings", False)), c.get("max_position_embeddings", 32_768))
    try:
        return BACKBONE_SHAPES[backbone]
    except KeyError:
        raise KeyError(f"no published shape for {backbone!r}; known: {sorted(BACKBONE_SHAPES)} "
                       f"(or pass a local checkpoint directory holding config.json)") from None


def qwen3_config_dict(shape: BackboneShape) -> dict:
    """Keyword arguments for ``transformers.Qwen3Config`` reproducing ``shape``."""
    s = asdict(shape)
    return {"hidden_size": s["hidden_size"], "intermediate_size": s["intermediate_size"],
            "num_hidden_layers": s["n_layers"], "num_attention_heads": s["n_heads"],
            "num_key_value_heads": s["n_kv_heads"], "head_dim": s["head_dim"], "vocab_size": s["vocab_size"],
            "tie_word_embeddings": s["tie_word_embeddings"], "max_position_embeddings": s["max_position_embeddings"],
            "rms_norm_eps": 1e-6, "rope_theta": 1_000_000.0}
