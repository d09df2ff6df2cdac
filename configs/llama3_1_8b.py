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


def get_config(variant: str = ""):
    config = presets.pretrained_family(
        presets.LLAMA3_1_8B, variant, rope_scaling=presets.LLAMA3_ROPE_SCALING
    )
    if variant != "tiny":
        config.mesh.update(data=1, fsdp=-1, tensor=1)
    return config
