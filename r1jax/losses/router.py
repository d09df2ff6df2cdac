"""A mixture of experts' auxiliary losses: load balance (Switch Transformer) and router z-loss
(ST-MoE), computed per MoE layer by ``r1jax.model.moe.router_stats`` and weighted here."""

from __future__ import annotations

import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model.moe import RouterStats


def add_router_losses(
    loss, metrics: dict, router: RouterStats | None, config: ModelConfig, share=1.0
):
    """Adds a mixture of experts' auxiliary losses (mean over its MoE layers, weighted by
    ``moe.balance_loss_weight`` and ``moe.z_loss_weight``) to ``loss``, and the routers'
    figures to ``metrics``. ``share``: a micro-batch's part of the batch (``batch_share``);
    the losses are means over the micro-batch's tokens, so the micro-batches' weighted sum is
    their average (the z-loss of one big batch when their tokens are in proportion to the
    shares; the balance loss, not linear in the batch, is the micro-batches' mean of it).
    Metrics: ``moe/balance_loss``, ``moe/z_loss``, ``moe/replay_mismatch`` (the
    fraction of tokens whose own experts differ from the replayed ones), ``moe/dropped`` (the
    (token, choice) pairs over an expert-parallel capacity) and per layer
    ``moe/max_load/<i>`` (the busiest expert's share times E: 1 is perfect balance)."""
    if router is None:
        return loss, metrics
    moe, first = config.moe, config.moe.dense_layers
    balance, z = jnp.mean(router.balance_loss), jnp.mean(router.z_loss)
    loss = loss + share * (moe.balance_loss_weight * balance + moe.z_loss_weight * z)
    max_load = jnp.max(router.load, axis=-1) * moe.num_experts  # [L']
    metrics = metrics | {"loss": loss, "moe/balance_loss": balance, "moe/z_loss": z}
    metrics["moe/replay_mismatch"] = jnp.mean(router.replay_mismatch)
    metrics["moe/dropped"] = jnp.mean(router.dropped)
    return loss, metrics | {f"moe/max_load/{first + i}": max_load[i] for i in range(len(max_load))}
