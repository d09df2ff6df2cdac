"""SFT of the tiny model on the built-in arithmetic task (gold chains of thought), on CPU.

Run:
  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/r1jax_sft_tiny
  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/r1jax_sft_tiny --config.train.steps=50

Re-running with the same --workdir resumes from the latest checkpoint (data position included).
Every other field, and its default, is in ``r1jax/config/schema.py`` (or ``r1jax train --help``).
"""

from r1jax.config import presets


def get_config():
    config = presets.tiny("sft")
    config.optim.update(learning_rate=1e-3, warmup_steps=20, weight_decay=0.01)
    return config
