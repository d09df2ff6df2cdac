"""A tiny Qwen2-shaped model that runs in seconds on a laptop CPU.

Run:
  r1jax forward --config=configs/tiny.py
  r1jax forward --config=configs/tiny.py --config.model.num_layers=4 --config.mesh.tensor=2
"""

import ml_collections

from r1jax.train import config_presets


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = config_presets.tiny_model()
    # Mesh axis sizes; -1 = all remaining devices.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    return config
