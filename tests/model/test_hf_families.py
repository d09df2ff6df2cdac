"""Qwen3 and Qwen3-MoE: logit parity with transformers on tiny random models (norm weights
randomised so a missing QK norm shows; several experts per token; a dense first layer), and
export -> re-import exact."""

import json

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from r1jax.model import forward, hf  # noqa: E402

TOKENS = np.array([[3, 17, 92, 5, 44, 120, 7, 7, 250, 1], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]])


def _randomise_norms(model, seed):
    """Every RMSNorm weight ~ N(1, 0.3) (HF initialises them to ones, which hides a missing or
    misplaced norm) and the router weights ~ N(0, 0.5) (routing far from ties)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.3 * torch.randn(param.shape, generator=gen))
            if name.endswith("mlp.gate.weight"):
                param.copy_(0.5 * torch.randn(param.shape, generator=gen))


def _qwen3(tmp_path):
    cfg = transformers.Qwen3Config(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=24, tie_word_embeddings=True,
        max_position_embeddings=128, attention_bias=True,
    )  # fmt: skip
    cfg.rope_parameters = {"rope_type": "default", "rope_theta": 1000000.0}
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(cfg).eval()
    _randomise_norms(model, 0)
    with torch.no_grad():  # q, k, v and o biases (attention_bias), random
        for name, param in model.named_parameters():
            if name.endswith("_proj.bias"):
                param.normal_(0.0, 0.5)
    return model


def _qwen3_moe(tmp_path, norm_topk_prob=True, mlp_only_layers=(0,)):
    cfg = transformers.Qwen3MoeConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=6, num_experts_per_tok=3, norm_topk_prob=norm_topk_prob,
        mlp_only_layers=list(mlp_only_layers), tie_word_embeddings=False,
        max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(1)
    model = transformers.Qwen3MoeForCausalLM(cfg).eval()
    _randomise_norms(model, 1)
    return model


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.tensor(tokens)).logits.float().numpy()


@pytest.mark.parametrize(
    "build",
    [
        _qwen3,
        _qwen3_moe,
        pytest.param(
            lambda p: _qwen3_moe(p, norm_topk_prob=False, mlp_only_layers=()),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["qwen3", "qwen3_moe", "qwen3_moe_unnormalised_all_sparse"],
)
def test_logits_match_transformers_and_export_round_trips(build, tmp_path):
    model = build(tmp_path)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    config, params = hf.load(tmp_path / "hf")
    assert config.qk_norm
    expected = _hf_logits(model, TOKENS)
    logits, _ = jax.jit(forward, static_argnums=2)(params, TOKENS, config)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)

    hf.save(tmp_path / "export", config, params, max_shard_bytes=100_000)
    config_again, params_again = hf.load(tmp_path / "export")
    assert config_again == config
    jax.tree.map(np.testing.assert_array_equal, params_again, params)
    reloaded = type(model).from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), expected, atol=1e-5, rtol=0)


def test_qwen3_moe_config_reads_experts_and_dense_layers(tmp_path):
    model = _qwen3_moe(tmp_path)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    config, params = hf.load(tmp_path / "hf")
    moe = config.moe
    assert (moe.num_experts, moe.experts_per_token, moe.expert_mlp_dim) == (6, 3, 32)
    assert moe.router == "softmax" and moe.norm_topk_prob and moe.dense_layers == 1
    assert params["dense_layers"]["gate"].shape == (1, 64, 96)
    assert params["layers"]["expert_gate"].shape == (2, 6, 64, 32)
    assert config.num_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model_type": "deepseek_v2"}, "deepseek_v3 is"),
        ({"decoder_sparse_step": 2}, "decoder_sparse_step"),
        ({"mlp_only_layers": [1]}, "mlp_only_layers"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_unsupported_options_are_refused_by_name(tmp_path, change, message):
    model = _qwen3_moe(tmp_path)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text()) | change
    with pytest.raises(ValueError, match=message):
        hf.config_from_hf(hf_cfg)


def test_deepseek_v3_keys_left_out_take_transformers_defaults():
    fields = dict(model_type="deepseek_v3", vocab_size=8, hidden_size=8, num_hidden_layers=4,
                  num_attention_heads=2, intermediate_size=8, moe_intermediate_size=4,
                  kv_lora_rank=4, qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=4)  # fmt: skip
    moe, mla = hf.config_from_hf(fields).moe, hf.config_from_hf(fields).mla
    want = transformers.DeepseekV3Config(**fields)
    assert (moe.num_experts, moe.experts_per_token) == (
        want.n_routed_experts,
        want.num_experts_per_tok,
    )
    assert (moe.expert_groups, moe.groups_per_token) == (want.n_group, want.topk_group)
    assert (moe.routed_scaling, moe.shared_experts) == (
        want.routed_scaling_factor,
        want.n_shared_experts,
    )
    assert (moe.dense_layers, moe.norm_topk_prob) == (
        want.first_k_dense_replace,
        want.norm_topk_prob,
    )
    assert mla.q_lora_rank == want.q_lora_rank


def _deepseek_v3(tmp_path, q_lora_rank=24):
    cfg = transformers.DeepseekV3Config(
        vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1,
        n_routed_experts=8, num_experts_per_tok=3, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, first_k_dense_replace=1, kv_lora_rank=16,
        q_lora_rank=q_lora_rank, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=12,
        max_position_embeddings=128, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(2)
    model = transformers.DeepseekV3ForCausalLM(cfg).eval()
    _randomise_norms(model, 2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("e_score_correction_bias"):
                param.normal_(0.0, 0.05)
        for layer in model.model.layers[1:]:
            layer.mlp.gate.e_score_correction_bias.normal_(0.0, 0.05)
    return model


@pytest.mark.parametrize(
    "q_lora_rank", [24, pytest.param(None, marks=pytest.mark.slow)], ids=["q_lora", "no_q_lora"]
)
def test_deepseek_v3_logits_match_transformers_and_export_round_trips(tmp_path, q_lora_rank):
    """MLA (interleaved RoPE, latent queries or not), sigmoid group-limited routing with a
    correction bias, routed scaling, a shared expert and a dense first layer."""
    model = _deepseek_v3(tmp_path, q_lora_rank)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    config, params = hf.load(tmp_path / "hf")
    assert config.mla.kv_lora_rank == 16 and config.moe.router == "sigmoid"
    assert config.moe.dense_layers == 1 and config.moe.shared_experts == 1
    # the correction bias is a buffer in transformers, a (never decayed) param here
    assert config.num_params == sum(v.numel() for v in model.state_dict().values())
    expected = _hf_logits(model, TOKENS)
    logits, _ = jax.jit(forward, static_argnums=2)(params, TOKENS, config)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)

    hf.save(tmp_path / "export", config, params)
    config_again, params_again = hf.load(tmp_path / "export")
    assert config_again == config
    jax.tree.map(np.testing.assert_array_equal, params_again, params)
    reloaded = type(model).from_pretrained(tmp_path / "export").eval()
    np.testing.assert_allclose(_hf_logits(reloaded, TOKENS), expected, atol=1e-5, rtol=0)


LONG = np.random.default_rng(3).integers(0, 256, (2, 96))  # past the original 32 positions


@pytest.mark.parametrize(
    "family, rope",
    [
        # DeepSeek-V3/R1's form (their mscale = mscale_all_dim = 1; 0.8 here so that both
        # the cos/sin factor and MLA's softmax mscale^2 differ from 1)
        ("deepseek_v3", dict(factor=4.0, beta_fast=32, beta_slow=1, mscale=1.0,
                             mscale_all_dim=0.8)),
        # Qwen's long-context form: the attention factor inferred from the factor alone
        pytest.param("qwen3", dict(factor=4.0), marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_yarn_rope_scaling_matches_transformers_past_the_original_context(tmp_path, family, rope):
    model = _deepseek_v3(tmp_path) if family == "deepseek_v3" else _qwen3(tmp_path)
    theta = model.config.rope_parameters["rope_theta"]
    params = {"rope_type": "yarn", "rope_theta": theta, "original_max_position_embeddings": 32}
    model.config.rope_parameters = params | rope
    model = type(model)(model.config).eval()  # rebuilt: the rotary tables come from the config
    _randomise_norms(model, 4)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    config, weights = hf.load(tmp_path / "hf")
    assert config.rope_scaling.rope_type == "yarn" and config.rope_scaling.factor == 4.0
    expected = _hf_logits(model, LONG)
    logits, _ = jax.jit(forward, static_argnums=2)(weights, LONG, config)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=2e-4, rtol=0)
    plain = hf.config_from_hf(json.loads((tmp_path / "hf" / "config.json").read_text()))
    without, _ = jax.jit(forward, static_argnums=2)(weights, LONG, plain.replace(rope_scaling=None))
    assert np.abs(np.asarray(without) - expected).max() > 1e-3  # 5x the tolerance: it matters
    hf.save(tmp_path / "export", config, weights)
    assert hf.load(tmp_path / "export")[0] == config
