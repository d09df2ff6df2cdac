"""SFT loss: masked token cross-entropy (B = sequences, T = positions, V = vocab).

Used for cold-start SFT, SFT on rejection-sampled data and distillation on teacher traces.
"""

import jax
import jax.numpy as jnp

from r1jax.losses.aggregation import aggregate, as_mask, masked_mean
from r1jax.losses.logprobs import token_logprobs


def sft_positions(logits_BTV: jax.Array, targets_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-position terms of ``sft_loss``: (nll f32 [B, T], correct f32 [B, T] = argmax == target).

    Needs only the logits of the positions it returns, so ``r1jax.losses.chunked`` can run it
    over chunks of positions.
    """
    nll_BT = -token_logprobs(logits_BTV, targets_BT)
    correct_BT = (jnp.argmax(logits_BTV, axis=-1) == targets_BT).astype(jnp.float32)
    return nll_BT, correct_BT


def sft_reduce(
    nll_BT: jax.Array,
    correct_BT: jax.Array,
    loss_mask_BT: jax.Array,
    *,
    normalizer: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """``sft_loss`` from its per-position terms (``sft_positions``), all [B, T]."""
    m = as_mask(loss_mask_BT)
    loss = aggregate(nll_BT, m, "token_mean", normalizer=normalizer)
    metrics = {
        "loss": loss,
        "nll": masked_mean(nll_BT, m),
        "token_accuracy": masked_mean(correct_BT, m),
        "num_tokens": jnp.sum(m),
    }
    return loss, jax.lax.stop_gradient(metrics)


def sft_loss(
    logits_BTV: jax.Array,
    targets_BT: jax.Array,
    loss_mask_BT: jax.Array,
    *,
    normalizer: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """Token-mean cross-entropy over the masked (completion) tokens: (f32 scalar, metrics).

    loss = sum_{b,t} mask * -log softmax(logits)[target] / normalizer.

    Args:
      logits_BTV: [B, T, V] logits; position t predicts targets_BT[:, t] (already shifted).
      targets_BT: [B, T] int token ids.
      loss_mask_BT: [B, T] bool/float, 1 on completion tokens (prompt and padding are 0).
      normalizer: None = this batch's valid-token count. For gradient accumulation pass
        `batch_normalizer(full_mask_BT)` (the full batch's token count) to every micro-batch and
        sum the micro-batch losses.

    Returns: (loss, {"loss", "nll" (local token mean), "token_accuracy", "num_tokens"}).
    """
    nll_BT, correct_BT = sft_positions(logits_BTV, targets_BT)
    return sft_reduce(nll_BT, correct_BT, loss_mask_BT, normalizer=normalizer)
