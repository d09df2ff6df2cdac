"""Qwen3-8B (Qwen3: per-head QK RMSNorm, no QKV bias).

Real shapes for loading the HF checkpoint Qwen/Qwen3-8B (download it yourself; r1jax never
fetches weights at run time) and for sizing meshes. Example:
  r1jax convert --config.convert.direction=hf-to-r1jax \\
      --config.convert.input=/path/to/Qwen3-8B --config.convert.output=/ckpt/qwen3_8b
  r1jax forward --config=configs/qwen3_8b.py --config.model.num_layers=2
The tiny branch (``get_config("tiny")``) keeps the family's features with toy sizes.
"""

from r1jax.config import presets


def get_config(variant: str = ""):
    config = presets.pretrained_family(presets.QWEN3_8B, variant)
    if variant != "tiny":
        config.mesh.update(data=1, fsdp=-1, tensor=1)
    return config
