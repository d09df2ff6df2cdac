"""Bradley–Terry preference loss of a reward model (InstructGPT; R1's general-RL reward).

Shapes: B = preference pairs. ``chosen_B`` / ``rejected_B`` are the reward model's scalar
scores of the preferred and the other response to the same prompt; under the Bradley–Terry
model P(chosen > rejected) = sigmoid(chosen - rejected), and the loss is its negative
log-likelihood, -log sigmoid(chosen - rejected), summed over the valid pairs and divided by
``normalizer`` (default: this batch's valid pairs; pass the FULL batch's count to every
micro-batch under gradient accumulation, as for the other losses).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pair_normalizer(mask_B: jax.Array) -> jax.Array:
    """The number of valid pairs (at least 1): f32 []."""
    return jnp.maximum(jnp.sum(mask_B.astype(jnp.float32)), 1.0)


def bradley_terry_loss(
    chosen_B: jax.Array,
    rejected_B: jax.Array,
    mask_B: jax.Array,
    *,
    normalizer: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """(loss f32 [], metrics): see the module docstring.

    Metrics (over the valid pairs of this batch): ``accuracy`` (chosen scored higher; ties count
    half), ``margin`` (mean chosen - rejected), ``chosen_score``, ``rejected_score``,
    ``num_pairs``.
    """
    m = mask_B.astype(jnp.float32)
    margin = chosen_B.astype(jnp.float32) - rejected_B.astype(jnp.float32)
    nll = -jax.nn.log_sigmoid(margin)
    if normalizer is None:
        normalizer = pair_normalizer(m)
    loss = jnp.sum(m * nll) / normalizer
    n = pair_normalizer(m)
    won = jnp.where(margin > 0, 1.0, jnp.where(margin == 0, 0.5, 0.0))
    metrics = {
        "loss": loss,
        "accuracy": jnp.sum(m * won) / n,
        "margin": jnp.sum(m * margin) / n,
        "chosen_score": jnp.sum(m * chosen_B) / n,
        "rejected_score": jnp.sum(m * rejected_B) / n,
        "num_pairs": jnp.sum(m),
    }
    return loss, jax.lax.stop_gradient(metrics)
