"""Group-relative advantages for GRPO and its variants, plus the DAPO degenerate-group test.

Layout: rewards are group-contiguous. With group size G, rows i*G .. i*G+G-1 of `rewards_B` are the
G completions of prompt i, so B = Q * G for Q prompts. Compute advantages on the WHOLE batch of
rollouts, before any micro-batching: a micro-batch smaller than G must never regroup rewards.
"""

from typing import Literal

import jax
import jax.numpy as jnp

Scale = Literal["group", "batch", "none"]
Baseline = Literal["mean", "leave_one_out"]


def _grouped(rewards_B: jax.Array, group_size: int) -> jax.Array:
    """[B] -> float32 [Q, G]; B must be a multiple of G (shapes are static)."""
    (b,) = rewards_B.shape
    if group_size < 1 or b % group_size:
        raise ValueError(f"rewards_B has {b} rows, not a multiple of group_size={group_size}")
    return rewards_B.astype(jnp.float32).reshape(b // group_size, group_size)


def _unbiased_std(x: jax.Array, axis=None) -> jax.Array:
    """Sample std (ddof=1, as torch.std in TRL/verl); 0 when fewer than 2 values."""
    n = x.size if axis is None else x.shape[axis]
    mean = jnp.mean(x, axis=axis, keepdims=True)
    var = jnp.sum((x - mean) ** 2, axis=axis, keepdims=True) / max(n - 1, 1)
    return jnp.sqrt(var)


def group_is_degenerate(rewards_B: jax.Array, group_size: int) -> jax.Array:
    """bool [num_groups]: True where all G rewards of the group are equal (zero advantage).

    DAPO dynamic sampling drops these groups and refills the batch: they carry no gradient.
    """
    r_QG = _grouped(rewards_B, group_size)
    return jnp.max(r_QG, axis=-1) == jnp.min(r_QG, axis=-1)


def group_advantages(
    rewards_B: jax.Array,
    group_size: int,
    *,
    scale: Scale = "group",
    baseline: Baseline = "mean",
    eps: float = 1e-6,
) -> jax.Array:
    """Advantage of each completion relative to its group: float32 [B].

    adv_i = (r_i - b_i) / (s + eps), with
      baseline "mean":          b_i = mean of the group's G rewards            [GRPO]
      baseline "leave_one_out": b_i = mean of the other G-1 rewards            [RLOO]
      scale "group": s = std of the group's rewards (ddof=1)                   [GRPO]
      scale "batch": s = std of all B rewards (ddof=1)                         [batch-level std]
      scale "none":  no division at all                                       [Dr. GRPO]

    A group whose rewards are all equal (including any group when G = 1) gets advantages of
    exactly 0: float rounding of the mean could otherwise leave a tiny residual that the
    near-zero std would blow up, or a NaN.

    Args:
      rewards_B: [B] rewards, group-contiguous (see the module docstring).
      group_size: G, a Python int dividing B.
    """
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"scale={scale!r}: expected 'group', 'batch' or 'none'")
    if baseline not in ("mean", "leave_one_out"):
        raise ValueError(f"baseline={baseline!r}: expected 'mean' or 'leave_one_out'")
    r_QG = _grouped(rewards_B, group_size)
    if baseline == "mean":
        b_QG = jnp.mean(r_QG, axis=-1, keepdims=True)
    else:
        others = jnp.sum(r_QG, axis=-1, keepdims=True) - r_QG
        b_QG = others / max(group_size - 1, 1) if group_size > 1 else r_QG
    adv_QG = r_QG - b_QG
    if scale == "group":
        adv_QG = adv_QG / (_unbiased_std(r_QG, axis=-1) + eps)
    elif scale == "batch":
        adv_QG = adv_QG / (_unbiased_std(r_QG) + eps)
    degenerate_Q1 = group_is_degenerate(rewards_B, group_size)[:, None]
    return jnp.where(degenerate_Q1, 0.0, adv_QG).reshape(-1)
