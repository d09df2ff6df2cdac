"""Training: the train state, optimizer, objectives, the one train step, checkpoints, loops.

Public API::

    optimizer = make_optimizer(OptimConfig(...))
    state = create_train_state(model_config, optimizer, rng, mesh, frozen=None)
    objective = objectives.sft(model_config)          # or distill(...), grpo(...)
    step = make_train_step(model_config, objective, optimizer, mesh, num_microbatches=1)
    state, metrics = step(state, batch)
"""

from r1jax.config import DistillConfig, GRPOConfig, OptimConfig
from r1jax.train import objectives
from r1jax.train.objectives import Objective
from r1jax.train.optim import make_optimizer, make_schedule
from r1jax.train.state import (
    TrainState,
    abstract_train_state,
    create_train_state,
    refresh_frozen,
    train_state_shardings,
)
from r1jax.train.step import batch_sharding, make_logprobs_fn, make_train_step

__all__ = [
    "DistillConfig",
    "GRPOConfig",
    "Objective",
    "OptimConfig",
    "TrainState",
    "abstract_train_state",
    "batch_sharding",
    "create_train_state",
    "make_logprobs_fn",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "objectives",
    "refresh_frozen",
    "train_state_shardings",
]
