"""The optax optimizer and learning-rate schedule, built once from config data.

Default: AdamW with a linear warm-up then cosine decay, weight decay on matrices only (norm scales
and biases are excluded), and global-norm gradient clipping applied before the Adam moments.
"""

from __future__ import annotations

import jax
import optax

from r1jax.config.schema import OptimConfig

# Param-tree leaf names that never get weight decay (norm scales, biases).
_NO_DECAY_MARKERS = ("norm", "bias")


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Learning rate as a function of the optimizer step count."""
    if cfg.schedule != "constant" and cfg.total_steps < 1:
        raise ValueError(
            f"config.optim.total_steps must be >= 1 for a {cfg.schedule} schedule (0 means "
            "the stage's train.steps and is filled in by r1jax.config.typed)"
        )
    peak, warmup = cfg.learning_rate, cfg.warmup_steps
    end = peak * cfg.end_lr_ratio
    decay_steps = max(cfg.total_steps - warmup, 1)
    if cfg.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif cfg.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=cfg.end_lr_ratio)
    else:
        after = optax.linear_schedule(peak, end, decay_steps)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def decay_mask(params) -> dict:
    """True on leaves that get weight decay: every leaf except norm scales and biases."""

    def wants_decay(path, _):
        name = jax.tree_util.keystr(path).lower()
        return not any(marker in name for marker in _NO_DECAY_MARKERS)

    return jax.tree_util.tree_map_with_path(wants_decay, params)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(schedule, decay mask). Moments are kept in the params' dtype
    (fp32 master params give fp32 optimizer state)."""
    parts = []
    if cfg.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip_norm))
    parts.append(
        optax.adamw(
            make_schedule(cfg),
            b1=cfg.b1,
            b2=cfg.b2,
            eps=cfg.eps,
            weight_decay=cfg.weight_decay,
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)
