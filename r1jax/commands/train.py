"""``r1jax train``: SFT, distillation or GRPO from a config, resumable from its workdir.

  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/sft [--config.train.steps=50]
  r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/grpo --config.grpo.variant=dapo

``config.kind`` ("sft", "distill", "grpo") is the objective; ``r1jax.train.loop.run`` runs it.
"""

from __future__ import annotations

from absl import flags

from r1jax import distributed
from r1jax.config import TRAINING_KINDS, typed
from r1jax.config.flags import parse_config


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).", flag_values=fv)


def main(argv: list[str]) -> int:
    config, fv = parse_config(
        argv,
        command="r1jax train",
        default="configs/sft_tiny.py",
        define_flags=_define,
        doc=__doc__,
    )
    if not fv.workdir:
        raise ValueError("r1jax train needs --workdir=DIR")
    stage = typed(config)
    if stage.kind not in TRAINING_KINDS:
        raise ValueError(f"config.kind={stage.kind!r}: r1jax train runs one of {TRAINING_KINDS}")
    # Multi-process (TPU VM pod, SLURM, GKE, launch/local.sh): a no-op for a single process.
    distributed.initialize(config)
    from r1jax.train import loop

    metrics = loop.run(stage, fv.workdir)
    if metrics and distributed.is_main_process():
        shown = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(shown.items())))
    return 0
