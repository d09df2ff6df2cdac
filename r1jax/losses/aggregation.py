"""Masks and the reduction of per-token values to one scalar loss.

Every loss in `r1jax.losses` is `sum_{b,t} w_{b,t} * value_{b,t} / normalizer`, where the weights
`w` depend only on the row they sit in and the normaliser is a scalar. That split is what makes
gradient accumulation exact: the trainer computes the normaliser once over the FULL batch with
`batch_normalizer`, passes it to the loss of every micro-batch, and sums the micro-batch losses
(and gradients). The sum then equals the full-batch loss bit-for-bit up to float reassociation.

Aggregations (B = sequences, T = positions):
  - "seq_mean"   [GRPO paper]: w = mask / count_b (count_b = valid tokens of row b);
                 normaliser = number of rows with at least one valid token. Fully masked rows
                 (e.g. truncated completions masked out) neither contribute nor dilute.
  - "token_mean" [DAPO, SFT, distillation]: w = mask; normaliser = total valid tokens.
  - "constant"   [Dr. GRPO]: w = mask; normaliser = B * max_tokens.

Packed rows: with ``segment_ids_BT`` (1..n per row, 0 padding) each segment of a row is one
sequence: "seq_mean" divides by the segment's valid tokens and counts segments with at least one,
and "constant" counts ``num_sequences`` (default: the segments) instead of the rows B.
"""

from typing import Literal

import jax
import jax.numpy as jnp

Aggregation = Literal["seq_mean", "token_mean", "constant"]
AGGREGATIONS = ("seq_mean", "token_mean", "constant")


def as_mask(mask_BT: jax.Array) -> jax.Array:
    """Bool or float mask [B, T] -> float32 [B, T] (1 = position counts in the loss)."""
    return jnp.asarray(mask_BT).astype(jnp.float32)


def masked_mean(x_BT: jax.Array, mask_BT: jax.Array, empty: float = 0.0) -> jax.Array:
    """Mean of x over positions where mask > 0; `empty` when none are valid. f32 scalar.

    Masked positions are replaced by 0 *before* multiplying, so inf/NaN there cannot leak.
    """
    m = as_mask(mask_BT)
    n = jnp.sum(m)
    total = jnp.sum(jnp.where(m > 0, x_BT.astype(jnp.float32), 0.0) * m)
    return jnp.where(n > 0, total / jnp.maximum(n, 1.0), empty)


def segment_sums(x_BT: jax.Array, segment_ids_BT: jax.Array) -> jax.Array:
    """Per row, the sum of x over each segment id 0..T: f32 [B, T + 1] (row-local, so it shards
    with the rows)."""
    t = x_BT.shape[1]
    one_row = lambda x, s: jax.ops.segment_sum(x, s, num_segments=t + 1)
    return jax.vmap(one_row)(x_BT.astype(jnp.float32), segment_ids_BT.astype(jnp.int32))


def sequence_totals(x_BT: jax.Array, segment_ids_BT: jax.Array | None = None) -> jax.Array:
    """The sum of x over each position's sequence: f32 [B, 1] (the row) without segment ids,
    [B, T] (the position's segment) with them."""
    if segment_ids_BT is None:
        return jnp.sum(x_BT.astype(jnp.float32), axis=-1, keepdims=True)
    seg = segment_ids_BT.astype(jnp.int32)
    return jnp.take_along_axis(segment_sums(x_BT, seg), seg, axis=1)


def _check_aggregation(aggregation: str, max_tokens: int | None, normalizer) -> None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation={aggregation!r}: expected one of {AGGREGATIONS}")
    if aggregation == "constant" and max_tokens is None and normalizer is None:
        raise ValueError('aggregation="constant" (Dr. GRPO) needs max_tokens or a normalizer')


def batch_normalizer(
    mask_BT: jax.Array,
    aggregation: Aggregation = "token_mean",
    *,
    max_tokens: int | None = None,
    segment_ids_BT: jax.Array | None = None,
    num_sequences: jax.Array | int | None = None,
) -> jax.Array:
    """The denominator of `aggregation` over a whole batch: f32 scalar, never 0.

    Call this on the FULL batch's mask [B, T] and pass the result as `normalizer=` to the loss of
    each micro-batch; summing the micro-batch losses then reproduces the full-batch loss.
    Packed rows pass ``segment_ids_BT`` and (for "constant") ``num_sequences``, the sequences
    the batch stands for (module docstring).
    """
    _check_aggregation(aggregation, max_tokens, None)
    m = as_mask(mask_BT)
    if aggregation == "token_mean":
        return jnp.maximum(jnp.sum(m), 1.0)
    if aggregation == "seq_mean":
        if segment_ids_BT is None:
            return jnp.maximum(jnp.sum(jnp.sum(m, axis=-1) > 0), 1).astype(jnp.float32)
        counts = segment_sums(m, segment_ids_BT)[:, 1:]  # segment 0 is padding
        return jnp.maximum(jnp.sum(counts > 0), 1).astype(jnp.float32)
    if num_sequences is None:  # segment ids run 1..n in each row
        segments = None if segment_ids_BT is None else jnp.sum(jnp.max(segment_ids_BT, axis=1))
        num_sequences = m.shape[0] if segments is None else segments
    return jnp.asarray(num_sequences * max_tokens, jnp.float32)


def batch_share(
    own_normalizer, normalizer, mask_BT: jax.Array, aggregation: Aggregation = "token_mean"
) -> jax.Array:
    """f32 []: a micro-batch's part of the full batch: its own ``batch_normalizer`` (the same
    call on the micro-batch, ``mask_BT`` its mask) over the full batch's ``normalizer``. The
    micro-batches' shares sum to 1, and a whole batch's is 1 (an empty micro-batch's is 0: its
    normaliser is clamped to 1, except "constant"'s, which counts its rows). Weights a term that
    is a mean over the micro-batch (a router loss) so that the micro-batches' sum is the
    batch's mean of it."""
    if aggregation != "constant":
        own_normalizer = jnp.where(jnp.sum(as_mask(mask_BT)) > 0, own_normalizer, 0.0)
    return own_normalizer / normalizer


def aggregate(
    x_BT: jax.Array,
    mask_BT: jax.Array,
    aggregation: Aggregation = "token_mean",
    *,
    max_tokens: int | None = None,
    normalizer: jax.Array | float | None = None,
    segment_ids_BT: jax.Array | None = None,
) -> jax.Array:
    """Reduce per-token values x [B, T] to a f32 scalar as described in the module docstring.

    `normalizer=None` uses `batch_normalizer(mask_BT, ...)`, i.e. this (micro-)batch alone.
    `segment_ids_BT` [B, T]: packed rows, one sequence per segment (None: one per row).
    """
    _check_aggregation(aggregation, max_tokens, normalizer)
    m = as_mask(mask_BT)
    x = jnp.where(m > 0, x_BT.astype(jnp.float32), 0.0) * m
    if aggregation == "seq_mean":
        # Per-sequence length normalisation is local to the row, so it is micro-batch invariant.
        x = x / jnp.maximum(sequence_totals(m, segment_ids_BT), 1.0)
    if normalizer is None:
        normalizer = batch_normalizer(
            m, aggregation, max_tokens=max_tokens, segment_ids_BT=segment_ids_BT
        )
    return jnp.sum(x) / normalizer
