"""Training-memory arithmetic (qscope_utils.fit): hand-computed parts for the published Qwen3 shapes,
the up-front refusal of an 8B full fine-tune on one 80 GB GPU, and LoRA counts equal to PEFT's."""
from __future__ import annotations

import pytest
import torch

from qscope_utils import fit
from qscope_utils.model_shapes import BACKBONE_SHAPES

S8 = BACKBONE_SHAPES["Qwen/Qwen3-8B-Base"]
S17 = BACKBONE_SHAPES["Qwen/Qwen3-1.7B-Base"]
GPU80 = 80e9


def test_activation_bytes_per_token_hand_computed():
    # 8B: d 4096, q 32 x 128 = 4096, kv 8 x 128 = 1024, f 12288, head_dim 128, 36 layers.
    layer = 26 * 4096 + 10 * 4096 + 10 * 1024 + 8 * 12288 + 8 * 128          # 257,024 B per token and layer
    assert layer == 257_024
    assert fit.activation_bytes_per_token(S8, grad_checkpointing=False) == 36 * layer + 10 * 4096 == 9_293_824
    assert fit.activation_bytes_per_token(S8, grad_checkpointing=True) == 36 * 4 * 4096 + layer + 10 * 4096 == 887_808


def _saved_bytes_per_token(model, ckpt: bool) -> float:
    """Bytes autograd saves per token in a forward under bf16 autocast (float32 weights), by the difference of
    two lengths (weight copies cancel), counted with saved_tensors_hooks (distinct storages, parameters excluded)."""
    if ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def saved(T):
        seen = {}

        def pack(t):
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                model.model(input_ids=torch.randint(0, 64, (1, T)), use_cache=False).last_hidden_state.float().sum()
        return sum(v for k, v in seen.items() if k not in params)

    return (saved(160) - saved(32)) / 128


def test_activation_formula_matches_autograd_saved_tensors():
    """The per-token formula against what autograd actually saves in a real (random) Qwen3 forward."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    c = Qwen3Config(hidden_size=256, intermediate_size=768, num_hidden_layers=3, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=64, vocab_size=64, tie_word_embeddings=True,
                    attn_implementation="sdpa")
    model = Qwen3ForCausalLM(c).float().train()
    shape = fit.shape_from_config(c)
    want = fit.activation_bytes_per_token(shape, grad_checkpointing=False)
    assert _saved_bytes_per_token(model, ckpt=False) == pytest.approx(want, rel=0.05)
    # checkpointed: the forward keeps ~4d per layer + the head; the formula adds one layer's recompute
    d = c.hidden_size
    one_layer = (want - 10 * d) // 3
    fwd = fit.activation_bytes_per_token(shape, grad_checkpointing=True) - one_layer
    assert _saved_bytes_per_token(model, ckpt=True) == pytest.approx(fwd, rel=0.15)


def test_full_finetune_8b_parts_and_total():
    mem = fit.training_peak_bytes(S8, tokens_per_micro_batch=2048)
    N = 8_190_735_360
    assert S8.n_params == N
    assert mem.weights + mem.grads + mem.optimizer == N * (4 + 4 + 8)     # fp32 master + grads + 2 AdamW moments
    assert (mem.weights, mem.grads, mem.optimizer, mem.autocast) == (4 * N, 4 * N, 8 * N, 2 * N)
    assert mem.activations == 2048 * 887_808
    assert mem.workspace == 4096 * 32768 * 4
    assert mem.total == 18 * N + 2048 * 887_808 + 4096 * 32768 * 4 == sum(mem[:6])
    assert mem.trainable_params == N
    # no autocast: no bf16 weight copies
    assert fit.training_peak_bytes(S8, bf16_autocast=False).autocast == 0


def test_sharding_and_ddp():
    N = S8.n_params
    sh = fit.training_peak_bytes(S8, n_gpus=8, sharded=True, tokens_per_micro_batch=1024)
    assert sh.grads == -(-4 * N // 8) and sh.optimizer == -(-8 * N // 8) and sh.autocast == -(-2 * N // 8)
    assert sh.weights == -(-4 * N // 8) + 151_936 * 4096 * 4               # + the embedding gathered whole
    assert sh.activations == 1024 * 887_808                               # activations are not sharded
    ddp = fit.training_peak_bytes(S8, n_gpus=8, sharded=False)
    assert ddp.total == fit.training_peak_bytes(S8).total                  # a full replica per GPU


def test_lora_parts_hand_computed():
    # 1.7B, r = 16: per layer (d+q) + 2(d+kv) + (q+d) + 2(d+f) + (f+d) = 4096 + 6144 + 4096 + 16384 + 8192
    assert fit.lora_params(S17, 16) == 16 * 38_912 * 28
    mem = fit.training_peak_bytes(S17, lora_r=16, tokens_per_micro_batch=512)
    P = 16 * 38_912 * 28
    assert mem.weights == S17.n_params * 2 + P * 4                          # frozen bf16 base + fp32 adapters
    assert (mem.grads, mem.optimizer, mem.autocast) == (4 * P, 8 * P, 0)
    # a float32 base under autocast gets its bf16 copies
    assert fit.training_peak_bytes(S17, lora_r=16, base_bytes=4).autocast == 2 * S17.n_params


def test_lora_params_equal_peft_count(tiny_model):
    from peft import LoraConfig, get_peft_model

    model, _ = tiny_model
    shape = fit.shape_from_config(model.config)
    assert shape.n_params == sum(p.numel() for p in model.parameters())
    pm = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    assert fit.lora_params(shape, 4) == sum(p.numel() for p in pm.parameters() if p.requires_grad)


def test_refuses_8b_full_on_one_80gb_gpu_and_names_alternatives():
    with pytest.raises(fit.TrainingDoesNotFit) as e:
        fit.check_training_fits(S8, GPU80, tokens_per_micro_batch=2048, what="SASFT")
    msg = str(e.value)
    assert "8.19B parameters" in msg and "full fine-tuning" in msg and "80 GB" in msg
    assert "lora_r=16" in msg
    assert "configs/accelerate/zero3_8b.yaml" in msg and "configs/accelerate/fsdp_8b.yaml" in msg
    lora = fit.training_peak_bytes(S8, lora_r=16, tokens_per_micro_batch=2048)
    shard = fit.training_peak_bytes(S8, n_gpus=8, sharded=True, tokens_per_micro_batch=2048)
    assert f"{lora.total / 1e9:.1f} GB" in msg and f"{shard.total / 1e9:.1f} GB" in msg
    assert "fewer tokens per micro-batch" not in msg                       # would not help: the states alone
    assert shard.total < 0.9 * GPU80 and lora.total < 0.9 * GPU80


def test_accepts_17b_full_and_8b_lora_and_names_micro_batch_when_activations_overflow():
    assert fit.check_training_fits(S17, GPU80, tokens_per_micro_batch=2048).total < 72e9
    assert fit.check_training_fits(S8, GPU80, lora_r=16, tokens_per_micro_batch=2048).trainable_params \
        == fit.lora_params(S8, 16)
    assert fit.check_training_fits(S8, GPU80, n_gpus=8, sharded=True)
    # 1.7B without checkpointing at 32 x 4,096 tokens: only the activations (~340 GB) overflow
    with pytest.raises(fit.TrainingDoesNotFit, match="fewer tokens per micro-batch"):
        fit.check_training_fits(S17, GPU80, tokens_per_micro_batch=32 * 4096, grad_checkpointing=False)


def test_backbone_name_and_bad_input():
    assert fit.training_peak_bytes("Qwen/Qwen3-8B").total == fit.training_peak_bytes(S8).total
    with pytest.raises(ValueError, match="n_gpus"):
        fit.training_peak_bytes(S8, n_gpus=0)
