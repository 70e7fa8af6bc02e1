"""Will a fine-tuning run fit? Training-memory arithmetic from a backbone's published shape (docs/CONVENTIONS.md §7, §8).

Both fine-tuning paths (SASFT on TRL's ``SFTTrainer``, DAPO on ``GRPOTrainer``) train float32 master
weights under bf16 autocast (``bf16=True``); a LoRA run trains float32 adapters over a frozen base kept in
its loaded dtype (bf16 on a GPU). Per GPU, at the peak of a step (the second micro-batch of a gradient-
accumulation window, when gradients from the first are already held):

* ``weights``: trainable parameters in float32 (4 B each); LoRA: the frozen base (``base_bytes`` B each,
  2 for bf16) plus the float32 adapters;
* ``grads``: float32 gradients of the trainable parameters (4 B each);
* ``optimizer``: AdamW's two float32 moments (8 B per trainable parameter);
* ``autocast``: the bf16 copies autocast makes of float32 weights for the forward (2 B per float32
  parameter; kept by autograd until the backward has used them; 0 without autocast or for a bf16 base);
* ``activations``: tensors saved for the backward, ``tokens_per_micro_batch`` x
  :func:`activation_bytes_per_token` (counted on a real Qwen3 layer, see there);
* ``workspace``: one tile of TRL's fused LM head (4,096 tokens x 32,768 vocabulary entries in float32):
  the trainers never materialise (tokens x vocabulary) logits.

Sharding (``sharded=True``: DeepSpeed ZeRO-3, ``configs/accelerate/zero3_8b.yaml``, or FSDP full sharding,
``fsdp_8b.yaml``) divides weights, gradients, optimizer states and autocast copies by ``n_gpus`` and adds
the largest module gathered whole for its forward (the embedding matrix, float32). Data parallelism
without sharding (DDP) holds a full replica per GPU. Activations are per GPU either way (each GPU runs its
own micro-batch). A CUDA allocator's fragmentation and the CUDA context (~0.5-1 GB) come on top:
:func:`check_training_fits` keeps ``headroom`` of the device free for them.
"""
from __future__ import annotations

from typing import NamedTuple

from .model_shapes import BackboneShape, backbone_shape

__all__ = ["TrainingMemory", "TrainingDoesNotFit", "lora_params", "activation_bytes_per_token",
           "training_peak_bytes", "check_training_fits", "fits_for", "shape_from_config", "MULTI_GPU_CONFIGS", "GB"]

GB = 1e9
FP32, BF16 = 4, 2
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB = 4096, 32768     # TRL's fused LM head tile (trl.kernels.chunked_logprob)
MULTI_GPU_CONFIGS = ("configs/accelerate/zero3_8b.yaml", "configs/accelerate/fsdp_8b.yaml")
"""Sharded multi-GPU launch configurations (8 processes each) named by the refusal."""
CONFIG_GPUS = 8


class TrainingMemory(NamedTuple):
    """Peak training memory per GPU, in bytes, by part (module docstring); ``total`` is their sum."""

    weights: int
    grads: int
    optimizer: int
    autocast: int
    activations: int
    workspace: int
    total: int
    trainable_params: int

    def describe(self) -> str:
        """One line in GB: total (weights, grads, AdamW, autocast copies, activations, workspace)."""
        g = lambda b: f"{b / GB:.1f}"
        return (f"{g(self.total)} GB (weights {g(self.weights)}, grads {g(self.grads)}, AdamW {g(self.optimizer)}, "
                f"bf16 autocast copies {g(self.autocast)}, activations {g(self.activations)}, "
                f"LM-head tile {g(self.workspace)})")


class TrainingDoesNotFit(ValueError):
    """A fine-tuning configuration whose peak memory exceeds the GPU (raised before any step)."""


def shape_from_config(config) -> BackboneShape:
    """The :class:`BackboneShape` of a loaded model's ``config`` (a Qwen3-style decoder)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return BackboneShape(config.hidden_size, config.intermediate_size, config.num_hidden_layers,
                         config.num_attention_heads, config.num_key_value_heads, head_dim, config.vocab_size,
                         bool(getattr(config, "tie_word_embeddings", False)),
                         getattr(config, "max_position_embeddings", 32_768))


def lora_params(shape: BackboneShape, r: int) -> int:
    """Trainable parameters of rank-``r`` LoRA on every linear layer of the decoder (PEFT ``all-linear``:
    q, k, v, o, gate, up, down; not the LM head): r x (in + out) per projection."""
    d, f = shape.hidden_size, shape.intermediate_size
    q, kv = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    per_layer = (d + q) + 2 * (d + kv) + (q + d) + 2 * (d + f) + (f + d)
    return r * per_layer * shape.n_layers


def activation_bytes_per_token(shape: BackboneShape, grad_checkpointing: bool = True) -> int:
    """Bytes saved for the backward per token under bf16 autocast over float32 weights (SDPA attention).

    Per decoder layer, d = hidden, q = heads x head_dim, kv = KV heads x head_dim, f = MLP width, as the
    tensors autograd saves in a Qwen3 layer (counted with ``torch.autograd.graph.saved_tensors_hooks``,
    ``tests/test_fit.py``): two RMSNorms, each a float32 input and normalised output (2 x 8d); the bf16
    input autocast makes for each of q, k, v, gate and up (5 x 2d); QK-norms in float32 in and bf16 out
    (6q + 6kv); SDPA's bf16 q, k, v (2q + 4kv) and the o-projection input (2q); RoPE cos / sin (8 x
    head_dim); gate, up, SiLU and product in bf16 (8f): ``26d + 10q + 10kv + 8f + 8 head_dim``. Final norm
    and LM-head input: 10d. With gradient checkpointing per decoder layer the forward keeps each layer's
    float32 input (4d), plus one layer's full set while that layer is recomputed.
    """
    d, f = shape.hidden_size, shape.intermediate_size
    q, kv = shape.n_heads * shape.head_dim, shape.n_kv_heads * shape.head_dim
    layer = 26 * d + 10 * q + 10 * kv + 8 * f + 8 * shape.head_dim
    head = 10 * d
    if grad_checkpointing:
        return shape.n_layers * 4 * d + layer + head
    return shape.n_layers * layer + head


def training_peak_bytes(shape: BackboneShape | str, *, lora_r: int = 0, n_gpus: int = 1, sharded: bool = False,
                        tokens_per_micro_batch: int = 2048, grad_checkpointing: bool = True,
                        bf16_autocast: bool = True, base_bytes: int = BF16) -> TrainingMemory:
    """Peak memory per GPU of one fine-tuning step (parts: module docstring).

    shape: a :class:`BackboneShape` or a backbone name / local checkpoint (:func:`backbone_shape`).
    lora_r: 0 = full fine-tuning; > 0 = LoRA of that rank over a frozen base of ``base_bytes`` per parameter.
    n_gpus / sharded: data-parallel processes; ``sharded`` = ZeRO-3 / FSDP (states divided by n_gpus).
    tokens_per_micro_batch: rows x padded length of one forward / backward pass (per GPU).
    """
    shape = backbone_shape(shape) if isinstance(shape, str) else shape
    if n_gpus < 1 or tokens_per_micro_batch < 1 or lora_r < 0:
        raise ValueError(f"need n_gpus >= 1, tokens_per_micro_batch >= 1, lora_r >= 0; got {n_gpus}, "
                         f"{tokens_per_micro_batch}, {lora_r}")
    N = shape.n_params
    if lora_r:
        trainable = lora_params(shape, lora_r)
        frozen = N * base_bytes
        copies = N * BF16 if (bf16_autocast and base_bytes == FP32) else 0
    else:
        trainable, frozen = N, 0
        copies = N * BF16 if bf16_autocast else 0
    weights, grads, opt = trainable * FP32 + frozen, trainable * FP32, trainable * 2 * FP32
    if sharded and n_gpus > 1:
        gathered = shape.vocab_size * shape.hidden_size * FP32          # largest module, gathered whole
        weights, grads, opt, copies = (-(-x // n_gpus) for x in (weights, grads, opt, copies))
        weights += gathered
    act = tokens_per_micro_batch * activation_bytes_per_token(shape, grad_checkpointing)
    work = HEAD_TILE_TOKENS * HEAD_TILE_VOCAB * FP32
    total = weights + grads + opt + copies + act + work
    return TrainingMemory(weights, grads, opt, copies, act, work, total, trainable)


def fits_for(shape: BackboneShape | str, gpu_bytes: float, headroom: float = 0.9, **kw) -> bool:
    """True when :func:`training_peak_bytes` (same keywords) is within ``headroom`` x ``gpu_bytes``."""
    return training_peak_bytes(shape, **kw).total <= headroom * gpu_bytes


def check_training_fits(shape: BackboneShape | str, gpu_bytes: float, *, headroom: float = 0.9,
                        what: str = "fine-tuning", **kw) -> TrainingMemory:
    """The run's :class:`TrainingMemory`, or :class:`TrainingDoesNotFit` naming what would fit.

    Call before building the trainer. ``gpu_bytes``: one GPU's memory (``torch.cuda.get_device_properties
    (i).total_memory``); keywords as :func:`training_peak_bytes`. The error names LoRA (``lora_r=16``)
    and the sharded multi-GPU configurations (:data:`MULTI_GPU_CONFIGS`), each with its per-GPU figure.
    """
    shape = backbone_shape(shape) if isinstance(shape, str) else shape
    mem = training_peak_bytes(shape, **kw)
    if mem.total <= headroom * gpu_bytes:
        return mem
    base = {k: v for k, v in kw.items() if k not in ("lora_r", "n_gpus", "sharded")}
    lora = training_peak_bytes(shape, lora_r=16, **base)
    shard = training_peak_bytes(shape, lora_r=kw.get("lora_r", 0), n_gpus=CONFIG_GPUS, sharded=True, **base)
    mode = f"LoRA r={kw['lora_r']}" if kw.get("lora_r") else "full fine-tuning"
    ngpu = kw.get("n_gpus", 1)
    setup = f"{ngpu} GPU{'s' if ngpu > 1 else ''}{', sharded' if kw.get('sharded') and ngpu > 1 else ''}"
    hint = [f"  - LoRA: lora_r=16 -> {lora.describe()} per GPU"
            + ("" if lora.total <= headroom * gpu_bytes else " (does not fit either: shorten the micro-batch)"),
            f"  - {CONFIG_GPUS} GPUs, sharded: accelerate launch --config_file {MULTI_GPU_CONFIGS[0]} "
            f"(or {MULTI_GPU_CONFIGS[1]}) -> {shard.describe()} per GPU"]
    if mem.total - mem.activations <= headroom * gpu_bytes:     # only the activations push it over
        hint.append("  - fewer tokens per micro-batch (batch_size / micro_batch; gradient accumulation keeps the "
                    "effective batch) or gradient checkpointing on")
    raise TrainingDoesNotFit(
        f"{what} of this backbone ({shape.n_params / 1e9:.2f}B parameters, {mode}, {setup}) needs about "
        f"{mem.describe()} per GPU, more than {headroom:.0%} of the {gpu_bytes / GB:.0f} GB available. "
        f"Refused before any step. Alternatives:\n" + "\n".join(hint))
