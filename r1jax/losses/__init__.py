"""Losses for R1 training: GRPO (and variants), SFT, logit distillation and the reward model's
Bradley–Terry loss, plus advantages and a mixture of experts' router losses.

Pure, jittable functions. Shape letters (the key in ``r1jax/__init__.py``): B = sequences
(completions), T = positions, V = vocab, K = teacher top-k, G = group size. Every loss returns
`(loss_scalar_f32, metrics_dict)`; the loss is minimised (GRPO returns -J). Log-probs and
reductions are float32 whatever the input dtype.

Gradient accumulation: compute `batch_normalizer(full_mask_BT, aggregation, max_tokens=...)` once
over the FULL batch, pass it as `normalizer=` to the loss of each micro-batch, and sum the
micro-batch losses and gradients; that equals the full-batch loss and gradient. Advantages are
computed on the full batch of whole groups before micro-batching.

Memory linear in T: the ``*_positions`` functions give a loss's per-position terms from the
logits of those positions only, and ``chunked_map`` runs them (with the LM head) over chunks of
positions under remat; the ``*_reduce`` functions (and ``grpo_loss``) then take the ``[B, T]``
terms. The ``*_loss`` functions on full ``[B, T, V]`` logits are the two composed.
"""

from r1jax.losses.advantages import group_advantages, group_is_degenerate
from r1jax.losses.aggregation import (
    AGGREGATIONS,
    aggregate,
    batch_normalizer,
    batch_share,
    masked_mean,
)
from r1jax.losses.chunked import chunked_map
from r1jax.losses.distill import distill_loss, distill_positions, distill_reduce, teacher_topk
from r1jax.losses.grpo import grpo_loss, truncated_is_weights
from r1jax.losses.logprobs import token_entropy, token_logprobs
from r1jax.losses.preference import bradley_terry_loss, pair_normalizer
from r1jax.losses.router import add_router_losses
from r1jax.losses.sft import sft_loss, sft_positions, sft_reduce

__all__ = [
    "AGGREGATIONS",
    "add_router_losses",
    "aggregate",
    "batch_normalizer",
    "batch_share",
    "bradley_terry_loss",
    "chunked_map",
    "distill_loss",
    "distill_positions",
    "distill_reduce",
    "grpo_loss",
    "group_advantages",
    "group_is_degenerate",
    "masked_mean",
    "pair_normalizer",
    "sft_loss",
    "sft_positions",
    "sft_reduce",
    "teacher_topk",
    "token_entropy",
    "token_logprobs",
    "truncated_is_weights",
]
