"""Llama-3.1-8B (also the shape of DeepSeek-R1-Distill-Llama-8B).

Real shapes for loading the Hugging Face checkpoint meta-llama/Llama-3.1-8B (download it
yourself; r1jax
never fetches weights at run time) and for sizing meshes. Example:
  r1jax convert hf-to-r1jax --input /path/to/Llama-3.1-8B --output /ckpt/llama3_1_8b
  r1jax forward --config=configs/llama3_1_8b.py --config.model.num_layers=2
The tiny branch (``get_config("tiny")``) keeps the family's features with toy sizes.
"""

import ml_collections

from r1jax.train import config_presets

SHAPE = dict(
    vocab_size=128256,
    hidden_size=4096,
    num_layers=32,
    num_heads=32,
    num_kv_heads=8,
    head_dim=128,
    mlp_dim=14336,
    rope_theta=500000.0,
    rms_norm_eps=1e-05,
    qkv_bias=False,
    tie_embeddings=False,
    max_position_embeddings=131072,
)
ROPE_SCALING = dict(
    factor=8.0, high_freq_factor=4.0, low_freq_factor=1.0, original_max_position_embeddings=8192
)
MESH = dict(data=1, fsdp=-1, tensor=1)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    return config_presets.pretrained_family(SHAPE, MESH, variant, rope_scaling=ROPE_SCALING)
