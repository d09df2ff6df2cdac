"""``r1jax train``: SFT, distillation or GRPO from a config, resumable from its workdir.

  r1jax train --config=configs/sft_tiny.py --workdir=/tmp/sft [--config.train.steps=50]

Dispatches on ``config.train.objective``: "sft" and "distill" run ``r1jax.train.loop.run``;
"grpo" runs ``r1jax.train.grpo.run``.
"""

from __future__ import annotations

from absl import flags

from r1jax import distributed
from r1jax.config_flags import parse_config

OBJECTIVES = ("sft", "distill", "grpo")


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).", flag_values=fv)


def main(argv: list[str]) -> int:
    config, fv = parse_config(argv, default_config="configs/sft_tiny.py", define_flags=_define)
    if not fv.workdir:
        raise ValueError("r1jax train needs --workdir=DIR")
    objective = config.train.objective
    if objective not in OBJECTIVES:
        raise ValueError(f"config.train.objective={objective!r}; one of {OBJECTIVES}")
    # Multi-process (TPU VM pod, SLURM, GKE, launch/local.sh): a no-op for a single process.
    distributed.initialize(config)
    if objective == "grpo":
        from r1jax.train import grpo

        grpo.run(config, fv.workdir)
        return 0
    from r1jax.train import loop

    metrics = loop.run(config, fv.workdir)
    if metrics and distributed.is_main_process():
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
    return 0
