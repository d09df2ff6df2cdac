"""The GRPO policy loss and its post-R1 variants (DAPO, Dr. GRPO, GSPO, TIS, entropy bonus).

Shapes: B = completions (rows), T = completion positions. All log-probs are per-token log-probs of
the sampled tokens, float32 [B, T], at the same sampling temperature.

Sign: the function returns loss = -J, to be MINIMISED, where per valid token
    J_t = min(rho_t * A, clip(rho_t, 1 - eps_low, 1 + eps_high) * A) * w_t
          - beta * KL_t + entropy_coef * H_t
with rho_t = exp(logp_t - old_logp_t) (or GSPO's sequence ratio), w_t the optional truncated
importance-sampling weight, KL_t = exp(ref_t - logp_t) - (ref_t - logp_t) - 1 (the k3 estimator),
and J_t aggregated over tokens as in `aggregation.py` ("seq_mean" / "token_mean" / "constant").

Gradient accumulation: compute `batch_normalizer(full_mask_BT, aggregation, max_tokens=...)` once
over the full batch, pass it as `normalizer=` to every micro-batch call and SUM the micro-batch
losses and gradients. Metrics are local to each call (means over its own valid tokens).

Packed rows (``segment_ids_BT``): each segment of a row is one completion, the advantages come
per token [B, T], and every per-sequence reduction (GSPO's ratio, "seq_mean") is per segment.
"""

import jax
import jax.numpy as jnp

from r1jax.losses.aggregation import (
    Aggregation,
    aggregate,
    as_mask,
    masked_mean,
    sequence_totals,
)


def truncated_is_weights(
    trainer_logp_BT: jax.Array, sampler_logp_BT: jax.Array, mask_BT: jax.Array, cap: float = 2.0
) -> jax.Array:
    """Truncated importance-sampling weights min(exp(trainer - sampler), cap): f32 [B, T].

    Corrects for the sampler's numerics (e.g. bf16 decode) differing from the trainer's: pass the
    trainer's recomputed pi_old log-probs and the sampler's reported ones. Gradient-stopped, and 0
    at masked positions (where the sampler's numbers may be garbage).
    """
    m = as_mask(mask_BT)
    log_w = jnp.where(m > 0, trainer_logp_BT - sampler_logp_BT, 0.0).astype(jnp.float32)
    return jax.lax.stop_gradient(jnp.minimum(jnp.exp(log_w), cap) * m)


MAX_LOG_RATIO = 20.0  # |log ratio| bound before exp (e^20 = 4.9e8; verl bounds it the same)


def _importance_ratio(logp, old_logp, m, importance: str, segment_ids=None) -> jax.Array:
    """rho [B, T]. "token": per-token ratio. "sequence" (GSPO): exp of the sequence's mean
    log-ratio (the row's, or the segment's when packed), broadcast to every token of it, so
    clipping acts on whole sequences."""
    # Zero the log-ratio at masked positions first so exp() never sees garbage (inf -> NaN grads),
    # and bound it: one token the old policy gave e^-90 would overflow exp() and skip the update.
    log_ratio = jnp.clip(jnp.where(m > 0, logp - old_logp, 0.0), -MAX_LOG_RATIO, MAX_LOG_RATIO)
    if importance == "token":
        return jnp.exp(log_ratio)
    if importance == "sequence":
        mean_lr = sequence_totals(log_ratio * m, segment_ids) / jnp.maximum(
            sequence_totals(m, segment_ids), 1.0
        )
        return jnp.broadcast_to(jnp.exp(mean_lr), logp.shape)
    raise ValueError(f"importance={importance!r}: expected 'token' or 'sequence'")


def _k3_kl(logp, ref_logp, m) -> jax.Array:
    """Per-token k3 estimator of KL(pi || pi_ref): exp(d) - d - 1 with d = ref - logp; >= 0."""
    d = jnp.clip(jnp.where(m > 0, ref_logp - logp, 0.0), -MAX_LOG_RATIO, MAX_LOG_RATIO)
    return jnp.exp(d) - d - 1.0


def _clip_metrics(ratio, adv_B1, m, eps_low, eps_high) -> dict:
    # Clipping "binds" (gradient cut) only where the clipped branch is the min.
    low = ((ratio < 1.0 - eps_low) & (adv_B1 < 0)).astype(jnp.float32)
    high = ((ratio > 1.0 + eps_high) & (adv_B1 > 0)).astype(jnp.float32)
    valid = m > 0
    return {
        "clip_frac": masked_mean(low + high, m),
        "clip_frac_low": masked_mean(low, m),
        "clip_frac_high": masked_mean(high, m),
        "ratio_mean": masked_mean(ratio, m, empty=1.0),
        "ratio_min": jnp.where(jnp.any(valid), jnp.min(jnp.where(valid, ratio, jnp.inf)), 1.0),
        "ratio_max": jnp.where(jnp.any(valid), jnp.max(jnp.where(valid, ratio, -jnp.inf)), 1.0),
        "num_tokens": jnp.sum(m),
    }


def grpo_loss(
    logp_BT: jax.Array,
    old_logp_BT: jax.Array,
    adv_B: jax.Array,
    mask_BT: jax.Array,
    *,
    ref_logp_BT: jax.Array | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    aggregation: Aggregation = "seq_mean",
    max_tokens: int | None = None,
    importance: str = "token",
    tis_weights_BT: jax.Array | None = None,
    entropy_BT: jax.Array | None = None,
    entropy_coef: float = 0.0,
    normalizer: jax.Array | float | None = None,
    segment_ids_BT: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
    """Clipped-surrogate GRPO loss (formula in the module docstring): (f32 scalar, metrics).

    Long because the whole objective (ratio, clip, KL, entropy, TIS, aggregation) reads in one
    place, line for line against the formula; most of the length is this docstring.

    Args:
      logp_BT: [B, T] log-probs of the sampled tokens under the current policy (differentiated).
      old_logp_BT: [B, T] pi_old log-probs (from the sampler, or recomputed when mu > 1).
      adv_B: [B] advantages from `group_advantages`, one per completion, shared by its tokens;
        or [B, T], one per token (packed rows: each token carries its segment's advantage).
      mask_BT: [B, T] bool/float, 1 on completion tokens in the loss. Fully masked rows add 0.
      ref_logp_BT: [B, T] reference-policy log-probs; required when beta > 0. When given with
        beta = 0 the KL is still reported in the metrics but not in the loss.
      beta: KL coefficient (a Python float, static).
      eps_low, eps_high: clip range [1 - eps_low, 1 + eps_high]; eps_high=None means eps_low.
      aggregation: "seq_mean" (GRPO), "token_mean" (DAPO) or "constant" (Dr. GRPO).
      max_tokens: the constant of "constant": normaliser = B * max_tokens.
      importance: "token" (PPO/GRPO) or "sequence" (GSPO: exp(mean_t log-ratio) per row, clipped
        per row; use GSPO's much smaller eps, e.g. 3e-4 / 4e-4).
      tis_weights_BT: optional [B, T] weights (see `truncated_is_weights`) multiplying the
        policy-gradient term only; treated as constants.
      entropy_BT: optional [B, T] per-token entropy (e.g. `token_entropy`); reported, and
        `entropy_coef * H` is added to J (subtracted from the loss) when entropy_coef != 0.
      normalizer: the aggregation's denominator; pass `batch_normalizer(full_mask, ...)` for
        gradient accumulation. None = this batch's own.
      segment_ids_BT: [B, T] int, packed rows: each segment (1..n; 0 padding) is one
        completion for GSPO's ratio and "seq_mean" (``aggregation.py``). None: one per row.

    Returns: (loss, metrics) with metrics loss, pg_loss, clip_frac(_low/_high), ratio_mean/min/max,
      num_tokens, and kl, entropy, tis_weight_mean when the inputs are given. All f32 scalars.
    """
    if beta > 0 and ref_logp_BT is None:
        raise ValueError("grpo_loss: beta > 0 needs ref_logp_BT (the reference policy log-probs)")
    eps_high = eps_low if eps_high is None else eps_high
    m = as_mask(mask_BT)
    # pi_old, the advantages and the reference are constants of the objective, whatever the
    # caller passes (old_logp=logp must give the policy gradient, not cancel it).
    old_logp_BT, adv_B = jax.lax.stop_gradient((old_logp_BT, adv_B))
    ref_logp_BT = None if ref_logp_BT is None else jax.lax.stop_gradient(ref_logp_BT)
    logp, old_logp = logp_BT.astype(jnp.float32), old_logp_BT.astype(jnp.float32)
    adv_B1 = adv_B.astype(jnp.float32)
    adv_B1 = adv_B1[:, None] if adv_B1.ndim == 1 else adv_B1  # [B, 1] or per token [B, T]
    agg = dict(
        aggregation=aggregation,
        max_tokens=max_tokens,
        normalizer=normalizer,
        segment_ids_BT=segment_ids_BT,
    )

    ratio = _importance_ratio(logp, old_logp, m, importance, segment_ids_BT)
    clipped = jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    pg_obj = jnp.minimum(ratio * adv_B1, clipped * adv_B1)
    if tis_weights_BT is not None:
        pg_obj = pg_obj * jax.lax.stop_gradient(tis_weights_BT.astype(jnp.float32))
    pg_loss = aggregate(-pg_obj, m, **agg)
    loss = pg_loss

    metrics = {"pg_loss": pg_loss, **_clip_metrics(ratio, adv_B1, m, eps_low, eps_high)}
    if ref_logp_BT is not None:
        kl = _k3_kl(logp, ref_logp_BT.astype(jnp.float32), m)
        metrics["kl"] = masked_mean(kl, m)
        if beta > 0:
            loss = loss + beta * aggregate(kl, m, **agg)
    if entropy_BT is not None:
        metrics["entropy"] = masked_mean(entropy_BT, m)
        if entropy_coef != 0:
            loss = loss - entropy_coef * aggregate(entropy_BT, m, **agg)
    if tis_weights_BT is not None:
        metrics["tis_weight_mean"] = masked_mean(tis_weights_BT, m)
    metrics["loss"] = loss
    return loss, jax.lax.stop_gradient(metrics)
