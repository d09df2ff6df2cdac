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
    config.model.rope_scaling = None if rope_scaling is None else dict(rope_scaling)
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
    return config
