"""SFT of the tiny model on the built-in arithmetic task (gold chains of thought), on CPU.

Run:
  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/r1jax_sft_tiny
  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/r1jax_sft_tiny --config.train.steps=50

Re-running with the same --workdir resumes from the latest checkpoint (data position included).
"""

import ml_collections

from r1jax.train import config_presets


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = config_presets.tiny_model()
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.optim = config_presets.optim()
    config.train = config_presets.train(objective="sft")
    config.data = config_presets.task_data("arithmetic")
    return config
