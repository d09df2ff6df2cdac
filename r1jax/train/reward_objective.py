"""The reward model's training objective (``objectives.Objective``; its batch is described in
``objectives``' docstring): a Bradley–Terry loss on preference pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax import losses
from r1jax.model import ModelConfig
from r1jax.model.reward import sequence_scores
from r1jax.train.objectives import Objective


def pair_normalizer(batch: dict) -> jax.Array:
    return losses.pair_normalizer(batch["pair_mask"])


def reward_model_objective(params, frozen, batch, model_config, normalizer, options=None):
    """Bradley–Terry loss of the reward model ``params`` on preference pairs
    (``losses.bradley_terry_loss``); both responses of every pair in one forward pass."""
    del frozen, options
    tokens = jnp.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]], axis=0)
    last = jnp.concatenate([batch["chosen_last"], batch["rejected_last"]], axis=0)
    scores = sequence_scores(params, tokens, last, model_config)
    chosen, rejected = jnp.split(scores, 2)
    return losses.bradley_terry_loss(chosen, rejected, batch["pair_mask"], normalizer=normalizer)


def reward_model(model_config: ModelConfig) -> Objective:
    """The reward model's objective (``model_config.score_head`` must be set)."""
    if not model_config.score_head:
        raise ValueError("the reward_model objective needs config.model.score_head=True")

    def loss(params, frozen, batch, normalizer):
        return reward_model_objective(params, frozen, batch, model_config, normalizer)

    return Objective("reward_model", loss, pair_normalizer)
