"""Mesh presets for common slices (the table and its reasoning: ``r1jax/mesh_presets.py``).

| preset   | devices (hosts) | data | fsdp | tensor | why                                        |
| -------- | --------------- | ---- | ---- | ------ | ------------------------------------------ |
| cpu-8    | 8 fake (1)      | 8    | 1    | 1      | tests: pure data parallel                  |
| v5e-8    | 8 chips (1)     | 1    | 8    | 1      | 16 GiB/chip: shard all state 8 ways        |
| v5p-64   | 32 chips (8)    | 2    | 16   | 1      | ICI slice: fsdp=16 fits 8B, data=2         |
| 8xH100   | 8 GPUs (1)      | 1    | 8    | 1      | NVLink: fsdp=8, 16 GiB/GPU of state        |
| 2x8xH100 | 16 GPUs (2)     | 2    | 8    | 1      | fsdp inside a node, data across nodes      |

Use a preset's axes as overrides of any training config:
  r1jax train --config=configs/qwen2_5_7b.py \
      --config.mesh.data=2 --config.mesh.fsdp=16 --config.mesh.tensor=1     # v5p-64
  python -c "from r1jax import mesh_presets; print(*mesh_presets.get('v5p-64').flags())"

Or look at one on its own (prints the mesh the devices here would get):
  r1jax forward --config=configs/meshes.py:cpu-8
The tiny variant is ``cpu-8`` (8 fake CPU devices, as in the tests).
"""

import ml_collections


def get_config(name: str = "cpu-8") -> ml_collections.ConfigDict:
    """A tiny-model config whose ``mesh`` section is preset ``name``."""
    from r1jax import mesh_presets
    from r1jax.train import config_presets

    preset = mesh_presets.get(name)
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = config_presets.tiny_model()
    config.mesh = ml_collections.ConfigDict(
        dict(data=preset.data, fsdp=preset.fsdp, tensor=preset.tensor)
    )
    config.mesh_preset = preset.name
    return config
