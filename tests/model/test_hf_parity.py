"""Logit parity against Hugging Face transformers on tiny random Qwen2 and Llama models."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from r1jax.model import forward, hf  # noqa: E402

TOKENS = np.array([[3, 17, 92, 5, 44, 120, 7, 7, 250, 1], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])


def _tiny_qwen2(tmp_path, window=None):
    """``window``: every layer's sliding window (Qwen2 windows layers >= max_window_layers)."""
    cfg = transformers.Qwen2Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        max_position_embeddings=128,
        use_sliding_window=window is not None,
        sliding_window=window,
        max_window_layers=0 if window else 28,
    )
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # random non-zero QKV biases (HF initialises them to zero)
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, 0.5)
    model.save_pretrained(tmp_path / "qwen2", safe_serialization=True)
    return model, tmp_path / "qwen2"


def _tiny_llama(tmp_path, attention_bias=False):
    cfg = transformers.LlamaConfig(
        attention_bias=attention_bias,
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        max_position_embeddings=256,
    )
    cfg.rope_parameters = {
        "rope_type": "llama3",
        "rope_theta": 500000.0,
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16,
    }
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # q, k, v and o biases, random (HF initialises them to zero)
        for name, param in model.named_parameters():
            if name.endswith("_proj.bias"):
                param.normal_(0.0, 0.5)
    # max_shard_size forces sharded model-0000x-of-0000y files with an index json.
    model.save_pretrained(tmp_path / "llama", safe_serialization=True, max_shard_size="100KB")
    return model, tmp_path / "llama"


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize(
    "build, biases, window",
    [
        (_tiny_qwen2, "qkv", None),
        (lambda p: _tiny_qwen2(p, window=4), "qkv", 4),
        (_tiny_llama, "", None),
        (lambda p: _tiny_llama(p, attention_bias=True), "qkvo", None),
    ],
    ids=["qwen2", "qwen2_sliding_window", "llama3", "llama3_attention_bias"],
)
def test_logits_match_transformers_and_export_round_trips(build, biases, window, tmp_path):
    model, path = build(tmp_path)
    config, params = hf.load(path)
    assert (config.qkv_bias, config.o_bias) == ("qkv" in biases, "o" in biases)
    assert config.sliding_window == window
    assert config.tie_embeddings == isinstance(model, transformers.Qwen2ForCausalLM)
    expected = _hf_logits(model, TOKENS)
    logits, _ = jax.jit(forward, static_argnums=2)(params, TOKENS, config)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)

    hf.save(tmp_path / "export", config, params, max_shard_bytes=50_000)
    assert (tmp_path / "export" / "model.safetensors.index.json").exists()
    assert hf.load(tmp_path / "export")[0] == config
    reloaded = type(model).from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "keys, window",
    [
        ({}, None),  # max_window_layers' default, 28 >= the 2 layers: no layer windowed
        ({"max_window_layers": 0}, 4),
        ({"max_window_layers": 2}, None),
        ({"layer_types": ["sliding_attention"] * 2, "max_window_layers": 2}, 4),
        ({"layer_types": ["full_attention"] * 2, "max_window_layers": 0}, None),
        ({"max_window_layers": 1}, "max_window_layers"),
        ({"layer_types": ["full_attention", "sliding_attention"]}, "layer_types"),
    ],
)
def test_qwen2_sliding_window_layers_are_read_as_transformers_reads_them(keys, window):
    fields = dict(model_type="qwen2", vocab_size=8, hidden_size=8, num_hidden_layers=2,
                  num_attention_heads=2, intermediate_size=8, use_sliding_window=True,
                  sliding_window=4)  # fmt: skip
    if isinstance(window, str):
        with pytest.raises(ValueError, match=window):
            hf.config_from_hf(fields | keys)
        return
    assert hf.config_from_hf(fields | keys).sliding_window == window
    layer_types = transformers.Qwen2Config(**(fields | keys)).layer_types
    assert all(t == ("sliding_attention" if window else "full_attention") for t in layer_types)


def test_llama3_rope_scaling_is_read(tmp_path):
    _, path = _tiny_llama(tmp_path)
    config, _ = hf.load(path)
    assert config.rope_scaling is not None
    assert config.rope_scaling.original_max_position_embeddings == 16
    assert config.num_kv_heads == 1


def test_load_reports_missing_tensor(tmp_path):
    _, path = _tiny_qwen2(tmp_path)
    hf_cfg = json.loads((path / "config.json").read_text())
    hf_cfg["num_hidden_layers"] = 3  # the checkpoint only has 2 layers
    (path / "config.json").write_text(json.dumps(hf_cfg))
    with pytest.raises(KeyError, match=r"model\.layers\.2\."):
        hf.load(path)


def test_reward_model_scores_match_transformers_sequence_classifier_and_round_trip(tmp_path):
    """``Qwen2ForSequenceClassification`` with one label (HF's reward-model layout, the score
    read at each row's last non-pad token) loads as a score-head model with the same scores,
    and exports back to the same tensors."""
    cfg = transformers.Qwen2Config(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
        max_position_embeddings=128, num_labels=1, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(2)
    model = transformers.Qwen2ForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0.0, 0.5)
            layer.input_layernorm.weight.normal_(1.0, 0.3)
    model.save_pretrained(tmp_path / "rm", safe_serialization=True)
    config, params = hf.load(tmp_path / "rm")
    assert config.score_head and "lm_head" not in params
    tokens = np.array([[3, 17, 92, 5, 44, 120, 7, 0, 0, 0], [9, 8, 7, 6, 5, 4, 3, 2, 1, 11]])
    last = np.array([6, 9])  # row 0 is right-padded with pad id 0
    with torch.no_grad():
        expected = model(torch.tensor(tokens)).logits[:, 0].float().numpy()
    from r1jax.model.reward import sequence_scores

    scores = jax.jit(sequence_scores, static_argnums=3)(params, tokens, last, config)
    np.testing.assert_allclose(np.asarray(scores), expected, atol=1e-4, rtol=0)
    hf.save(tmp_path / "out", config, params)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["architectures"] == ["Qwen2ForSequenceClassification"]
    out = tmp_path / "out"  # the pad id is the tokenizer's, not in the model config
    again = transformers.Qwen2ForSequenceClassification.from_pretrained(out, pad_token_id=0)
    again = again.eval()
    with torch.no_grad():
        expected_again = again(torch.tensor(tokens)).logits[:, 0].float().numpy()
    np.testing.assert_allclose(expected_again, expected, atol=1e-6)
