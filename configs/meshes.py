"""Mesh presets for common slices (the table and its reasoning: ``r1jax/config/mesh_presets.py``).

| preset   | devices (hosts) | data | fsdp | tensor | why                                        |
| -------- | --------------- | ---- | ---- | ------ | ------------------------------------------ |
| cpu-8    | 8 fake (1)      | 8    | 1    | 1      | tests: pure data parallel                  |
| v5e-8    | 8 chips (1)     | 1    | 8    | 1      | 16 GiB/chip: shard all state 8 ways        |
| v5p-64   | 32 chips (8)    | 2    | 16   | 1      | ICI slice: fsdp=16 fits 8B, data=2         |
| 8xH100   | 8 GPUs (1)      | 1    | 8    | 1      | NVLink: fsdp=8, 16 GiB/GPU of state        |
| 2x8xH100 | 16 GPUs (2)     | 2    | 8    | 1      | fsdp inside a node, data across nodes      |

A preset is one override on any command:
  r1jax train --config=configs/qwen2_5_7b.py --config.mesh.preset=v5p-64

Or look at one on its own (prints the mesh the devices here would get):
  r1jax forward --config=configs/meshes.py:cpu-8
"""

from r1jax.config import presets


def get_config(name: str = "cpu-8"):
    """A tiny-model config whose mesh is preset ``name``."""
    config = presets.tiny("sft")
    config.mesh.preset = name
    return config
