"""Qwen2.5-7B (also the shape of DeepSeek-R1-Distill-Qwen-7B).

Real shapes for loading the Hugging Face checkpoint Qwen/Qwen2.5-7B (download it yourself; r1jax
never fetches weights at run time) and for sizing meshes. Example:
  r1jax convert --config.convert.direction=hf-to-r1jax \\
      --config.convert.input=/path/to/Qwen2.5-7B --config.convert.output=/ckpt/qwen2_5_7b
  r1jax forward --config=configs/qwen2_5_7b.py --config.model.num_layers=2
The tiny branch (``get_config("tiny")``) keeps the family's features with toy sizes.
"""

from r1jax.config import presets

SHAPE = dict(
    vocab_size=152064,
    hidden_size=3584,
    num_layers=28,
    num_heads=28,
    num_kv_heads=4,
    head_dim=128,
    mlp_dim=18944,
    rope_theta=1000000.0,
    rms_norm_eps=1e-06,
    qkv_bias=True,
    tie_embeddings=False,
    max_position_embeddings=131072,
)
ROPE_SCALING = None


def get_config(variant: str = ""):
    config = presets.pretrained_family(SHAPE, variant, rope_scaling=ROPE_SCALING)
    if variant != "tiny":
        config.mesh.update(data=1, fsdp=-1, tensor=1)
    return config
