"""Logit distillation (forward KL) of the tiny model from a teacher, on the arithmetic task.

Run (first train a teacher, e.g. with configs/sft_tiny.py, then distil it into a smaller student):
  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/r1jax_teacher \\
      --config.model.num_layers=4
  r1jax train --config=configs/distill_tiny.py --workdir=/tmp/r1jax_distill_tiny \\
      --config.distill.teacher_from=/tmp/r1jax_teacher \\
      --config.data.tokenizer=/tmp/r1jax_teacher/tokenizer.model

``distill.teacher_from`` is an r1jax run (or its checkpoints) or a Hugging Face directory; empty,
a random teacher with ``teacher_seed`` is used: a smoke test of the plumbing, not a useful teacher.
"""

import ml_collections

from r1jax.config import model_dict, presets


def get_config():
    config = presets.tiny("distill")
    config.optim.update(learning_rate=1e-3, warmup_steps=20, weight_decay=0.01)
    config.distill.teacher_model = ml_collections.ConfigDict(
        model_dict(**(presets.TINY_MODEL | dict(num_layers=4))).to_dict()
    )
    return config
