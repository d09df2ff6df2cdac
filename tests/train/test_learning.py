"""The step learns: a tiny model overfits a fixed SFT batch; distillation drives the KL to ~0."""

import jax
from train_common import TINY, mesh_of, sft_batch

from r1jax.config import DistillConfig, OptimConfig
from r1jax.model import init_params
from r1jax.train import objectives
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state
from r1jax.train.step import make_train_step

OPTIMIZER = make_optimizer(OptimConfig(learning_rate=1e-2, schedule="constant"))


def _train(objective, batch, steps, *, frozen=None, frozen_config=None):
    mesh = mesh_of((1, 1, 1))
    state = create_train_state(
        TINY, OPTIMIZER, jax.random.key(0), mesh, frozen=frozen, frozen_config=frozen_config
    )
    step = make_train_step(TINY, objective, OPTIMIZER, mesh, frozen_config=frozen_config)
    history = []
    for _ in range(steps):
        state, metrics = step(state, batch)
        history.append(metrics)
    return jax.device_get(history)


def test_tiny_model_overfits_a_fixed_sft_batch():
    history = _train(objectives.sft(TINY), sft_batch(0, 4, 16), 150)
    assert history[0]["loss"] > 3.5  # ~log(64) at init
    assert history[-1]["loss"] < 0.05
    assert history[-1]["token_accuracy"] == 1.0


def test_distillation_drives_the_kl_to_zero():
    teacher_config = TINY.replace(
        num_layers=1, hidden_size=48, head_dim=12, mlp_dim=96, init_std=0.5
    )
    teacher = init_params(teacher_config, jax.random.key(7), mesh=mesh_of((1, 1, 1)))
    options = DistillConfig(kind="forward_kl")
    history = _train(
        objectives.distill(TINY, options, teacher_config),
        sft_batch(1, 4, 16),
        150,
        frozen=teacher,
        frozen_config=teacher_config,
    )
    first, last = history[0]["divergence"], history[-1]["divergence"]
    assert first > 0.5
    assert last < 0.02 * first
