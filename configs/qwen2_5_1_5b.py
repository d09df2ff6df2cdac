"""Qwen2.5-1.5B (also the shape of DeepSeek-R1-Distill-Qwen-1.5B).

Real shapes for loading the Hugging Face checkpoint Qwen/Qwen2.5-1.5B (download it yourself; r1jax
never fetches weights at run time) and for sizing meshes. Example:
  r1jax convert --config.convert.direction=hf-to-r1jax \\
      --config.convert.input=/path/to/Qwen2.5-1.5B --config.convert.output=/ckpt/qwen2_5_1_5b
  r1jax forward --config=configs/qwen2_5_1_5b.py --config.model.num_layers=2
The tiny branch (``get_config("tiny")``) keeps the family's features with toy sizes.
"""

from r1jax.config import presets


def get_config(variant: str = ""):
    config = presets.pretrained_family(presets.QWEN2_5_1_5B, variant)
    return config
