"""Published backbone shapes: parameter counts equal a meta-device transformers model of the same config."""
import pytest
import torch
import transformers

from qscope_utils.model_shapes import BACKBONE_SHAPES, backbone_shape, qwen3_config_dict


@pytest.mark.parametrize("repo,billions", [("Qwen/Qwen3-1.7B-Base", 1.720574976), ("Qwen/Qwen3-8B-Base", 8.19073536)])
def test_param_count_matches_transformers(repo, billions):
    shape = BACKBONE_SHAPES[repo]
    with torch.device("meta"):
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**qwen3_config_dict(shape)))
    n = sum(p.numel() for p in model.parameters())
    assert n == shape.n_params == round(billions * 1e9)


def test_kv_bytes_and_local_config(tmp_path):
    # 8B: 36 layers x 8 kv heads x 128 x (k and v) x 2 bytes
    assert backbone_shape("Qwen/Qwen3-8B-Base").kv_bytes_per_token() == 36 * 8 * 128 * 2 * 2
    cfg = transformers.Qwen3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                   num_key_value_heads=2, head_dim=16, vocab_size=100, tie_word_embeddings=True)
    cfg.save_pretrained(tmp_path)
    s = backbone_shape(str(tmp_path))
    assert (s.hidden_size, s.n_layers, s.n_kv_heads, s.vocab_size, s.tie_word_embeddings) == (64, 3, 2, 100, True)
    with pytest.raises(KeyError, match="known"):
        backbone_shape("Qwen/Qwen9-1T")
