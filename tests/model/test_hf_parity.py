"""Logit parity against Hugging Face transformers on tiny random Qwen2 and Llama models."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from r1jax.model import forward, hf  # noqa: E402

TOKENS = np.array([[3, 17, 92, 5, 44, 120, 7, 7, 250, 1], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])


def _tiny_qwen2(tmp_path):
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


def _tiny_llama(tmp_path):
    cfg = transformers.LlamaConfig(
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
    # max_shard_size forces sharded model-0000x-of-0000y files with an index json.
    model.save_pretrained(tmp_path / "llama", safe_serialization=True, max_shard_size="100KB")
    return model, tmp_path / "llama"


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize("build", [_tiny_qwen2, _tiny_llama], ids=["qwen2", "llama3"])
def test_logits_match_transformers_and_export_round_trips(build, tmp_path):
    model, path = build(tmp_path)
    config, params = hf.load(path)
    assert config.qkv_bias == (build is _tiny_qwen2)
    assert config.tie_embeddings == (build is _tiny_qwen2)
    expected = _hf_logits(model, TOKENS)
    logits, _ = jax.jit(forward, static_argnums=2)(params, TOKENS, config)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)

    hf.save(tmp_path / "export", config, params, max_shard_bytes=50_000)
    assert (tmp_path / "export" / "model.safetensors.index.json").exists()
    reloaded = type(model).from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), expected, atol=1e-5, rtol=0)


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
