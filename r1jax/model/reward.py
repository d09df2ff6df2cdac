"""A reward model: the decoder with a scalar head on the last token (``ModelConfig.score_head``).

    scores_B = sequence_scores(params, tokens_BT, last_B, config)

Rows are right-padded sequences (prompt + response + EOS) starting at position 0; ``last_B`` is
the index of each row's last real token, whose final hidden state ``[D]`` is dotted with the
``score`` vector (``[D]``, fp32 product). Padding after ``last`` is segment 0 (never attended),
so a row scores the same whatever the batch's width. This is the layout of Hugging Face's
``*ForSequenceClassification`` with one label (``score`` there is ``[1, D]``).

A policy checkpoint becomes a reward model's starting point with ``with_score_head``: the LM
head is dropped and a fresh ``score`` vector added (the trunk and embeddings are kept).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model.transformer import hidden_states


def right_padded_inputs(last_B: jax.Array, width: int) -> tuple[jax.Array, jax.Array]:
    """(positions, segment_ids) int32 [B, T] of right-padded rows ending at ``last_B``."""
    t = jnp.arange(width, dtype=jnp.int32)[None, :]
    segment_ids = (t <= last_B[:, None]).astype(jnp.int32)
    positions = jnp.broadcast_to(t, (last_B.shape[0], width))
    return positions, segment_ids


def sequence_scores(
    params: dict, tokens_BT: jax.Array, last_B: jax.Array, config: ModelConfig
) -> jax.Array:
    """The reward of each row: f32 [B] (see the module docstring)."""
    if not config.score_head:
        raise ValueError("sequence_scores needs a reward model (ModelConfig.score_head=True)")
    last_B = last_B.astype(jnp.int32)
    positions, segment_ids = right_padded_inputs(last_B, tokens_BT.shape[1])
    hidden_BTD, _ = hidden_states(
        params, tokens_BT, config, positions=positions, segment_ids=segment_ids
    )
    last_BD = jnp.take_along_axis(hidden_BTD, last_B[:, None, None], axis=1)[:, 0]
    score_D = params["score"].astype(jnp.float32)
    return jnp.einsum("bd,d->b", last_BD.astype(jnp.float32), score_D)


def with_score_head(params: dict, config: ModelConfig, rng: jax.Array, mesh=None) -> dict:
    """A policy's params as the starting point of the reward model ``config``: the LM head
    (when untied) dropped, ``score`` drawn like ``init_params`` would (sharded on ``mesh``)."""
    from r1jax.model.params import init_params, param_shardings

    if not config.score_head:
        raise ValueError("with_score_head: the target config has no score head")
    fresh = init_params(config.replace(num_layers=1), rng)["score"]
    if mesh is not None:
        fresh = jax.device_put(fresh, param_shardings(config, mesh)["score"])
    out = {k: v for k, v in params.items() if k != "lm_head"}
    out["score"] = fresh
    return out
