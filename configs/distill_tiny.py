"""Logit distillation (forward KL) of the tiny model from a teacher, on the arithmetic task.

Run (first train a teacher, e.g. with configs/sft_tiny.py, then distil it into a smaller student):
  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/r1jax_teacher \\
      --config.model.num_layers=4
  r1jax train --config=configs/distill_tiny.py --workdir=/tmp/r1jax_distill_tiny \\
      --config.distill.teacher_checkpoint=/tmp/r1jax_teacher/checkpoints \\
      --config.data.tokenizer=/tmp/r1jax_teacher/tokenizer.model

Without a teacher checkpoint (``teacher_checkpoint`` / ``teacher_hf`` empty) a random teacher with
``teacher_seed`` is used: a smoke test of the plumbing, not a useful teacher.
"""

import ml_collections

from r1jax.train import config_presets


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = config_presets.tiny_model()
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.optim = config_presets.optim()
    config.train = config_presets.train(objective="distill")
    config.data = config_presets.task_data("arithmetic")
    config.distill = ml_collections.ConfigDict(
        dict(
            kind="forward_kl",  # "forward_kl" | "reverse_kl" | "jsd"
            beta=0.5,
            temperature=1.0,
            teacher="online",  # "online" (teacher forward each step) | "topk" (precomputed)
            teacher_model=config_presets.tiny_model(num_layers=4),
            teacher_checkpoint="",
            teacher_hf="",
            teacher_seed=1,
        )
    )
    return config
