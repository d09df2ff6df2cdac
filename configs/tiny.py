"""A tiny Qwen2-shaped model that runs in seconds on a laptop CPU.

Run:
  r1jax forward --config=configs/tiny.py
  r1jax forward --config=configs/tiny.py --config.model.num_layers=4 --config.mesh.tensor=2
  r1jax forward --config=configs/tiny.py --config.mesh.preset=cpu-8
"""

from r1jax.config import presets


def get_config():
    return presets.tiny("sft")
