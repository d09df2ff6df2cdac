"""Llama-3.1-8B (also the shape of DeepSeek-R1-Distill-Llama-8B).

Real shapes for loading the Hugging Face checkpoint meta-llama/Llama-3.1-8B (download it
yourself; r1jax
never fetches weights at run time) and for sizing meshes. Example:
  r1jax convert --config.convert.direction=hf-to-r1jax \\
      --config.convert.input=/path/to/Llama-3.1-8B --config.convert.output=/ckpt/llama3_1_8b
  r1jax forward --config=configs/llama3_1_8b.py --config.model.num_layers=2
The tiny branch (``get_config("tiny")``) keeps the family's features with toy sizes.
"""

from r1jax.config import presets

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


def get_config(variant: str = ""):
    config = presets.pretrained_family(SHAPE, variant, rope_scaling=ROPE_SCALING)
    if variant != "tiny":
        config.mesh.update(data=1, fsdp=-1, tensor=1)
    return config
