"""Hugging Face ``config.json`` <-> ``ModelConfig``, per family.

Families: ``llama`` (Llama 3.x, llama3 RoPE scaling), ``qwen2`` (QKV bias; YaRN for long
context), ``qwen3`` (per-head
QK RMSNorm, explicit ``head_dim``), ``qwen3_moe`` (Qwen3 attention, softmax top-k experts),
``deepseek_v3`` (multi-head latent attention, sigmoid group-limited experts with shared experts
and dense first layers, YaRN RoPE; DeepSeek-V3/R1, Moonlight). A reward model is a
``*ForSequenceClassification`` with one label. Anything else, or an option of these families
r1jax does not implement (e.g. another RoPE scaling type), is refused by name.
"""

from __future__ import annotations

from r1jax.config.model import ROPE_TYPES, MLAConfig, ModelConfig, MoEConfig, RopeScaling

ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
_LATER = {
    "deepseek_v2": "DeepSeek-V2's softmax group routing is not implemented (deepseek_v3 is)",
}


def _refuse(field: str, value, why: str):
    raise ValueError(f"config.json: {field}={value!r}: {why}")


def _rope(hf: dict) -> tuple[float, RopeScaling | None]:
    # transformers >= 5 writes "rope_parameters"; older versions "rope_theta" + "rope_scaling".
    rope = dict(hf.get("rope_parameters") or {})
    rope_theta = rope.get("rope_theta", hf.get("rope_theta", 10000.0))
    scaling_cfg = rope if rope.get("rope_type", "default") != "default" else hf.get("rope_scaling")
    if not scaling_cfg:
        return float(rope_theta), None
    kind = scaling_cfg.get("rope_type", scaling_cfg.get("type"))
    if kind not in ROPE_TYPES:
        _refuse("rope scaling type", kind, f"unsupported (one of {ROPE_TYPES})")
    original = scaling_cfg.get("original_max_position_embeddings")
    if original is None:
        _refuse("rope_scaling.original_max_position_embeddings", None, "required")
    if kind == "llama3":
        scaling = RopeScaling(
            factor=float(scaling_cfg["factor"]),
            low_freq_factor=float(scaling_cfg["low_freq_factor"]),
            high_freq_factor=float(scaling_cfg["high_freq_factor"]),
            original_max_position_embeddings=int(original),
        )
        return float(rope_theta), scaling
    factor = scaling_cfg.get("factor") or hf["max_position_embeddings"] / original
    get = lambda key, default: float(scaling_cfg.get(key) or default)
    scaling = RopeScaling(
        rope_type="yarn", factor=float(factor), original_max_position_embeddings=int(original),
        beta_fast=get("beta_fast", 32.0), beta_slow=get("beta_slow", 1.0),
        mscale=get("mscale", 0.0), mscale_all_dim=get("mscale_all_dim", 0.0),
        attention_factor=get("attention_factor", 0.0),
        truncate=bool(scaling_cfg.get("truncate", True)),
    )  # fmt: skip
    return float(rope_theta), scaling


def _sliding_window(hf: dict, model_type: str) -> int | None:
    """The window of every layer, or None. Qwen2 / Qwen3 window the layers of ``layer_types``
    "sliding_attention" (else those from ``max_window_layers`` on, default 28), only with
    ``use_sliding_window``; Qwen3-MoE every layer. A window on some layers only is refused."""
    if not hf.get("use_sliding_window") or hf.get("sliding_window") is None:
        return None
    if model_type in ("qwen2", "qwen3"):
        layers = hf["num_hidden_layers"]
        types = hf.get("layer_types")
        if types is not None:
            windowed = [t == "sliding_attention" for t in types]
        else:
            windowed = [i >= hf.get("max_window_layers", 28) for i in range(layers)]
        if not any(windowed):
            return None
        if not all(windowed):
            key = "layer_types" if types is not None else "max_window_layers"
            _refuse(key, hf.get(key, 28), "a window on some layers only")
    return int(hf["sliding_window"])


def _moe(hf: dict) -> MoEConfig:
    """Qwen3-MoE's experts: every layer sparse, except a leading run of ``mlp_only_layers``."""
    if hf.get("decoder_sparse_step", 1) != 1:
        _refuse("decoder_sparse_step", hf["decoder_sparse_step"], "only 1 (every layer sparse)")
    dense = sorted(hf.get("mlp_only_layers") or [])
    if dense != list(range(len(dense))):
        _refuse("mlp_only_layers", dense, "only a leading run of layers may be dense")
    return MoEConfig(
        num_experts=int(hf.get("num_experts") or hf["num_local_experts"]),
        experts_per_token=int(hf["num_experts_per_tok"]),
        expert_mlp_dim=int(hf["moe_intermediate_size"]),
        router="softmax",
        norm_topk_prob=bool(hf.get("norm_topk_prob", False)),
        dense_layers=len(dense),
    )


# ``transformers.DeepseekV3Config``'s defaults of the keys read here, for a config.json that
# leaves them out (transformers reads such a file with these).
_DEEPSEEK_DEFAULTS = dict(
    q_lora_rank=1536, n_routed_experts=256, num_experts_per_tok=8, n_shared_experts=1,
    routed_scaling_factor=2.5, n_group=8, topk_group=4, first_k_dense_replace=3,
    norm_topk_prob=True,
)  # fmt: skip


def _deepseek(hf: dict) -> dict:
    """DeepSeek-V3's ``ModelConfig`` fields: MLA and its experts (keys left out take
    ``transformers``' defaults)."""
    hf = _DEEPSEEK_DEFAULTS | hf
    if hf.get("scoring_func", "sigmoid") != "sigmoid":
        _refuse("scoring_func", hf["scoring_func"], "only sigmoid (DeepSeek-V3) routing")
    if hf.get("topk_method", "noaux_tc") != "noaux_tc":
        _refuse("topk_method", hf["topk_method"], "only noaux_tc (DeepSeek-V3) routing")
    if hf.get("attention_bias"):
        _refuse("attention_bias", True, "not supported with multi-head latent attention")
    mla = MLAConfig(
        kv_lora_rank=int(hf["kv_lora_rank"]),
        q_lora_rank=int(hf.get("q_lora_rank") or 0),
        qk_nope_head_dim=int(hf["qk_nope_head_dim"]),
        qk_rope_head_dim=int(hf["qk_rope_head_dim"]),
        v_head_dim=int(hf["v_head_dim"]),
    )
    layers = hf["num_hidden_layers"]
    dense = min(int(hf["first_k_dense_replace"] or 0), layers)
    moe = None
    if dense < layers and hf.get("n_routed_experts"):
        moe = MoEConfig(
            num_experts=int(hf["n_routed_experts"]),
            experts_per_token=int(hf["num_experts_per_tok"]),
            expert_mlp_dim=int(hf["moe_intermediate_size"]),
            router="sigmoid",
            norm_topk_prob=bool(hf["norm_topk_prob"]),
            expert_groups=int(hf["n_group"] or 1),
            groups_per_token=int(hf["topk_group"] or 1),
            routed_scaling=float(hf["routed_scaling_factor"]),
            shared_experts=int(hf["n_shared_experts"] or 0),
            dense_layers=dense,
        )
    heads = hf["num_attention_heads"]
    return dict(mla=mla, moe=moe, head_dim=mla.qk_head_dim, num_kv_heads=heads, qkv_bias=False)


def config_from_hf(hf: dict, **overrides) -> ModelConfig:
    """``ModelConfig`` from a Hugging Face ``config.json`` dict (``overrides`` win)."""
    model_type = hf.get("model_type")
    if model_type in _LATER:
        _refuse("model_type", model_type, _LATER[model_type])
    if model_type not in ARCHITECTURES:
        _refuse("model_type", model_type, f"unsupported; supported: {sorted(ARCHITECTURES)}")
    if hf.get("mlp_bias"):
        _refuse("mlp_bias", True, "not supported")
    if hf.get("hidden_act", "silu") != "silu":
        _refuse("hidden_act", hf["hidden_act"], "only silu (SwiGLU)")
    rope_theta, scaling = _rope(hf)
    num_heads = hf["num_attention_heads"]
    fields = dict(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        mlp_dim=hf["intermediate_size"],
        rope_theta=rope_theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias")),
        o_bias=model_type != "qwen2" and bool(hf.get("attention_bias")),  # Qwen2: q, k, v only
        qk_norm=model_type in ("qwen3", "qwen3_moe"),
        moe=_moe(hf) if model_type == "qwen3_moe" else None,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        sliding_window=_sliding_window(hf, model_type),
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        score_head=_is_reward_model(hf),
    )
    if model_type == "deepseek_v3":
        fields.update(_deepseek(hf))
    fields.update(overrides)
    return ModelConfig(**fields)


def _is_reward_model(hf: dict) -> bool:
    """A ``*ForSequenceClassification`` checkpoint with one label: a reward model (its
    ``score.weight`` [1, D] is our ``score``); other label counts are refused."""
    if not any(a.endswith("ForSequenceClassification") for a in hf.get("architectures") or ()):
        return False
    labels = hf.get("num_labels", len(hf.get("id2label") or {}) or 2)
    if labels != 1:
        raise ValueError(f"config.json: a sequence classifier with {labels} labels; 1 (a reward)")
    return True


def model_type(config: ModelConfig) -> str:
    """The HF family ``config`` is written as: DeepSeek-V3 with MLA, Qwen3(-MoE) with QK norm,
    else Qwen2 with QKV bias (and no output bias), else Llama. Qwen3's and Llama's
    ``attention_bias`` covers q, k, v and o: their ``qkv_bias`` and ``o_bias`` must agree."""
    qwen2 = config.qkv_bias and not config.o_bias and not config.qk_norm and config.moe is None
    if config.mla is None and config.qkv_bias != config.o_bias and not qwen2:
        raise ValueError(
            f"HF export: model.qkv_bias={config.qkv_bias}, o_bias={config.o_bias}: Qwen3's and "
            "Llama's attention_bias covers q, k, v and o together (Qwen2: q, k, v only)"
        )
    if config.mla is not None:
        if config.moe is not None and config.moe.router != "sigmoid":
            raise ValueError("HF export of MLA: only DeepSeek-V3's experts (sigmoid router)")
        return "deepseek_v3"
    if config.moe is not None:
        if config.moe.router != "softmax" or config.moe.shared_experts or not config.qk_norm:
            raise ValueError(
                "HF export of a mixture of experts: only the Qwen3-MoE form (qk_norm, softmax "
                "router, no shared experts)"
            )
        return "qwen3_moe"
    if config.qk_norm:
        return "qwen3"
    return "qwen2" if qwen2 else "llama"


def _deepseek_to_hf(config: ModelConfig) -> dict:
    m, moe = config.mla, config.moe
    hf = dict(
        kv_lora_rank=m.kv_lora_rank,
        q_lora_rank=m.q_lora_rank or None,
        qk_nope_head_dim=m.qk_nope_head_dim,
        qk_rope_head_dim=m.qk_rope_head_dim,
        v_head_dim=m.v_head_dim,
        head_dim=m.qk_rope_head_dim,
        rope_interleave=True,  # the published layout; ``hf`` permutes the RoPE dims to it
        attention_bias=False,
        first_k_dense_replace=config.num_layers if moe is None else moe.dense_layers,
    )
    if moe is None:
        return hf | dict(n_routed_experts=1, num_experts_per_tok=1, moe_intermediate_size=1)
    return hf | dict(
        n_routed_experts=moe.num_experts,
        num_experts_per_tok=moe.experts_per_token,
        moe_intermediate_size=moe.expert_mlp_dim,
        norm_topk_prob=moe.norm_topk_prob,
        n_group=moe.expert_groups,
        topk_group=moe.groups_per_token,
        routed_scaling_factor=moe.routed_scaling,
        n_shared_experts=moe.shared_experts,
        scoring_func="sigmoid",
        topk_method="noaux_tc",
    )


def _rope_to_hf(scaling: RopeScaling) -> dict:
    """``rope_scaling`` as transformers writes it for ``scaling.rope_type``."""
    keys = ("factor", "original_max_position_embeddings")
    if scaling.rope_type == "llama3":
        keys += ("low_freq_factor", "high_freq_factor")
    else:
        keys += ("beta_fast", "beta_slow", "truncate")
        keys += tuple(k for k in ("mscale", "mscale_all_dim", "attention_factor")
                      if getattr(scaling, k))  # fmt: skip
    return {"rope_type": scaling.rope_type, **{k: getattr(scaling, k) for k in keys}}


def config_to_hf(config: ModelConfig, dtype: str) -> dict:
    """A Hugging Face ``config.json`` dict for ``config`` (family by ``model_type``; a reward
    model as ``*ForSequenceClassification`` with one label)."""
    family = model_type(config)
    rope_scaling = None if config.rope_scaling is None else _rope_to_hf(config.rope_scaling)
    architecture = ARCHITECTURES[family]
    if config.score_head:
        architecture = architecture.replace("ForCausalLM", "ForSequenceClassification")
    hf = dict(
        architectures=[architecture],
        model_type=family,
        vocab_size=config.vocab_size,
        hidden_size=config.hidden_size,
        intermediate_size=config.mlp_dim,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_kv_heads,
        head_dim=config.head_dim,
        hidden_act="silu",
        rms_norm_eps=config.rms_norm_eps,
        rope_theta=config.rope_theta,
        rope_scaling=rope_scaling,
        tie_word_embeddings=config.tie_embeddings,
        max_position_embeddings=config.max_position_embeddings,
        torch_dtype=dtype,
        use_cache=True,
    )
    if config.score_head:
        hf.update(num_labels=1, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0})
    if family == "llama":
        hf.update(attention_bias=config.qkv_bias, mlp_bias=False)
        return hf
    if family == "deepseek_v3":
        return hf | _deepseek_to_hf(config)
    hf.update(
        use_sliding_window=config.sliding_window is not None,
        sliding_window=config.sliding_window,
        max_window_layers=0 if config.sliding_window is not None else config.num_layers,
    )
    if family in ("qwen3", "qwen3_moe"):
        hf.update(attention_bias=config.qkv_bias)
    if family == "qwen3_moe":
        moe = config.moe
        hf.update(
            num_experts=moe.num_experts,
            num_experts_per_tok=moe.experts_per_token,
            moe_intermediate_size=moe.expert_mlp_dim,
            norm_topk_prob=moe.norm_topk_prob,
            decoder_sparse_step=1,
            mlp_only_layers=list(range(moe.dense_layers)),
        )
    return hf
