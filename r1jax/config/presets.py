"""Named model shapes config files start from (a preset is data, not a default)."""

from __future__ import annotations

import ml_collections

from r1jax.config.typed import defaults

# The tiny Qwen2-shaped model of ``configs/tiny.py``: seconds per step on a laptop CPU.
TINY_MODEL = dict(
    vocab_size=512,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=16,
    mlp_dim=128,
    qkv_bias=True,
    max_position_embeddings=1024,
)


# Real checkpoints' shapes (Hugging Face config.json fields in r1jax names).
QWEN2_5_0_5B = dict(
    vocab_size=151936, hidden_size=896, num_layers=24, num_heads=14, num_kv_heads=2, head_dim=64,
    mlp_dim=4864, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
    max_position_embeddings=32768,
)  # fmt: skip
QWEN2_5_1_5B = dict(
    vocab_size=151936, hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2,
    head_dim=128, mlp_dim=8960, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
    tie_embeddings=True, max_position_embeddings=131072,
)  # fmt: skip
QWEN2_5_7B = dict(
    vocab_size=152064, hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4,
    head_dim=128, mlp_dim=18944, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
    tie_embeddings=False, max_position_embeddings=131072,
)  # fmt: skip
QWEN2_5_32B = dict(
    vocab_size=152064, hidden_size=5120, num_layers=64, num_heads=40, num_kv_heads=8,
    head_dim=128, mlp_dim=27648, rope_theta=1e6, rms_norm_eps=1e-5, qkv_bias=True,
    tie_embeddings=False, max_position_embeddings=131072,
)  # fmt: skip
LLAMA3_1_8B = dict(
    vocab_size=128256, hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=8,
    head_dim=128, mlp_dim=14336, rope_theta=500000.0, rms_norm_eps=1e-5, qkv_bias=False,
    tie_embeddings=False, max_position_embeddings=131072,
)  # fmt: skip
QWEN3_1_7B = dict(
    vocab_size=151936, hidden_size=2048, num_layers=28, num_heads=16, num_kv_heads=8,
    head_dim=128, mlp_dim=6144, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=False, qk_norm=True,
    tie_embeddings=True, max_position_embeddings=40960,
)  # fmt: skip
QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, num_layers=36, num_heads=32, num_kv_heads=8,
    head_dim=128, mlp_dim=12288, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=False, qk_norm=True,
    tie_embeddings=False, max_position_embeddings=40960,
)  # fmt: skip
QWEN3_30B_A3B = dict(
    vocab_size=151936, hidden_size=2048, num_layers=48, num_heads=32, num_kv_heads=4,
    head_dim=128, mlp_dim=6144, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=False, qk_norm=True,
    tie_embeddings=False, max_position_embeddings=40960,
    moe=dict(num_experts=128, experts_per_token=8, expert_mlp_dim=768, norm_topk_prob=True),
)  # fmt: skip
# DeepSeek-V3 architecture (MLA + sigmoid-routed experts with shared experts).
MOONLIGHT_16B_A3B = dict(
    vocab_size=163840, hidden_size=2048, num_layers=27, num_heads=16, num_kv_heads=16,
    head_dim=192, mlp_dim=11264, rope_theta=50000.0, rms_norm_eps=1e-5, tie_embeddings=False,
    max_position_embeddings=8192,
    mla=dict(kv_lora_rank=512, q_lora_rank=0, qk_nope_head_dim=128, qk_rope_head_dim=64,
             v_head_dim=128),
    moe=dict(num_experts=64, experts_per_token=6, expert_mlp_dim=1408, router="sigmoid",
             norm_topk_prob=True, routed_scaling=2.446, shared_experts=2, dense_layers=1),
)  # fmt: skip
DEEPSEEK_V3 = dict(
    vocab_size=129280, hidden_size=7168, num_layers=61, num_heads=128, num_kv_heads=128,
    head_dim=192, mlp_dim=18432, rope_theta=10000.0, rms_norm_eps=1e-6, tie_embeddings=False,
    max_position_embeddings=163840,
    mla=dict(kv_lora_rank=512, q_lora_rank=1536, qk_nope_head_dim=128, qk_rope_head_dim=64,
             v_head_dim=128),
    moe=dict(num_experts=256, experts_per_token=8, expert_mlp_dim=2048, router="sigmoid",
             norm_topk_prob=True, expert_groups=8, groups_per_token=4, routed_scaling=2.5,
             shared_experts=1, dense_layers=3),
    rope_scaling=dict(rope_type="yarn", factor=40.0, original_max_position_embeddings=4096,
                      beta_fast=32.0, beta_slow=1.0, mscale=1.0, mscale_all_dim=1.0),
)  # fmt: skip
LLAMA3_ROPE_SCALING = dict(
    factor=8.0, high_freq_factor=4.0, low_freq_factor=1.0, original_max_position_embeddings=8192
)


def tiny(kind: str, **model_overrides) -> ml_collections.ConfigDict:
    """``defaults(kind)`` with the tiny model (and ``model_overrides``)."""
    return defaults(kind, **(TINY_MODEL | model_overrides))


def pretrained_family(
    shape: dict, variant: str = "", rope_scaling: dict | None = None, kind: str = "sft"
) -> ml_collections.ConfigDict:
    """A ``kind`` config for a real checkpoint's ``shape`` (HF config.json fields in r1jax
    names): bf16 compute, fp32 master params, remat of non-batch dots. ``variant="tiny"`` keeps
    the family's features (QKV bias, tying, RoPE scaling) at toy sizes."""
    config = defaults(kind, **shape, compute_dtype="bfloat16", remat_policy="dots_no_batch")
    if rope_scaling is not None:
        config.model.rope_scaling = dict(rope_scaling)
    if variant == "tiny":
        config.model.update(
            vocab_size=512,
            hidden_size=64,
            num_layers=2,
            mlp_dim=128,
            num_heads=4,
            num_kv_heads=2,
            head_dim=16,
            compute_dtype="float32",
            remat_policy="none",
        )
        if config.model.moe is not None:
            config.model.moe.update(num_experts=8, experts_per_token=2, expert_mlp_dim=32)
            dense = min(config.model.moe.get("dense_layers", 0), 1)  # of the tiny 2 layers
            config.model.moe.update(dense_layers=dense)
            if config.model.moe.get("expert_groups", 1) > 1:
                config.model.moe.update(expert_groups=4, groups_per_token=2)
        if config.model.mla is not None:
            config.model.mla.update(
                kv_lora_rank=16, q_lora_rank=min(config.model.mla.get("q_lora_rank", 0), 24),
                qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=16,
            )  # fmt: skip
            config.model.update(head_dim=16, num_kv_heads=4)
    return config


def moe_r1_zero(
    shape: dict,
    total: int,
    *,
    num_prompts: int,
    expert: int,
    replay: bool = True,
    prompt: int = 512,
    capacity_factor: float = 0.0,
):
    """R1-Zero GRPO of a mixture-of-experts ``shape`` at ``total`` tokens per sequence: R1's
    settings (G = 16), full remat, 512-position logit chunks, experts over an ``expert`` axis
    of that size and FSDP over the rest, routing replay (``replay``); ``capacity_factor`` > 0:
    expert parallelism by all-to-all (else dropless, each layer's experts gathered); data and
    checkpoint come from flags."""
    config = pretrained_family(shape, kind="grpo")
    config.model.moe.capacity_factor = capacity_factor
    config.model.update(remat_policy="full", logits_chunk=512)
    config.mesh.update(data=1, fsdp=-1, expert=expert, tensor=1)
    config.grpo.update(
        num_prompts=num_prompts, num_samples=16, max_new_tokens=total - prompt,
        routing_replay=replay,
    )  # fmt: skip
    config.data.buckets = (prompt,)
    config.data.task = ""
    config.optim.update(learning_rate=1e-6, schedule="constant", weight_decay=0.1)
    config.train.update(steps=1000, log_every=1, checkpoint_every=50)
    config.eval.update(num_prompts=32, num_samples=4, max_new_tokens=total - prompt)
    return config


def lora_grpo(
    shape: dict, variant: str, total: int, *, rank: int, base_quant: str = "", prompt: int = 256
):
    """GRPO over LoRA adapters (``base_quant``: QLoRA) for one accelerator: GSM8K-style data
    (``data.path``) or the built-in arithmetic task, G = 8 samples of ``total`` tokens per
    sequence, one row per micro-batch, full remat, 512-position logit chunks, adapters of
    ``rank`` on every attention and MLP projection. ``variant="tiny"``: the same recipe at toy
    sizes (CI, a laptop)."""
    config = pretrained_family(shape, variant, kind="grpo")
    config.lora.update(rank=rank, alpha=2.0 * rank, base_quant=base_quant)
    config.mesh.update(data=1, fsdp=-1, tensor=1)
    config.grpo.update(num_prompts=1, num_samples=8, max_new_tokens=total - prompt)
    config.data.buckets = (prompt,)
    config.optim.update(learning_rate=1e-5, schedule="constant")
    config.train.update(steps=500, num_microbatches=8, log_every=1, checkpoint_every=50)
    config.eval.update(num_prompts=8, num_samples=4, max_new_tokens=total - prompt)
    if variant == "tiny":
        config.lora.update(rank=8, alpha=16.0, quant_block=16)
        config.grpo.update(num_prompts=2, num_samples=4, max_new_tokens=24)
        config.data.buckets = (128,)
        config.optim.learning_rate = 1e-3
        config.train.update(steps=4, num_microbatches=1, checkpoint_every=2)
        config.eval.update(num_prompts=2, num_samples=2, max_new_tokens=24)
    else:
        config.model.update(remat_policy="full", logits_chunk=512)
    return config
