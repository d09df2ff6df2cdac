"""The optax optimizer and learning-rate schedule, built once from config data.

Default: AdamW with a linear warm-up then cosine decay, weight decay on matrices only (norm scales
and biases are excluded), and global-norm gradient clipping applied before the Adam moments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import jax
import optax

SCHEDULES = ("cosine", "constant", "linear")
# Param-tree leaf names that never get weight decay (norm scales, biases).
_NO_DECAY_MARKERS = ("norm", "bias")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimizer hyper-parameters (the ``config.optim`` section).

    ``schedule``: "cosine" (linear warm-up to ``learning_rate`` then cosine to
    ``learning_rate * end_lr_ratio`` at ``total_steps``), "linear" (warm-up then linear decay to the
    same end value) or "constant" (warm-up then flat). ``grad_clip_norm=None`` or 0 disables
    clipping.
    """

    learning_rate: float = 3e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    total_steps: int = 1000
    end_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"config.optim.schedule={self.schedule!r}; one of {SCHEDULES}")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ValueError(
                f"config.optim: need warmup_steps >= 0 and total_steps >= 1, got "
                f"{self.warmup_steps}, {self.total_steps}"
            )

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> OptimConfig:
        cfg = dict(cfg)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(cfg) - names
        if unknown:
            raise ValueError(
                f"config.optim: unknown fields {sorted(unknown)}; known {sorted(names)}"
            )
        return cls(**cfg)


def make_schedule(cfg: OptimConfig) -> optax.Schedule:
    """Learning rate as a function of the optimizer step count."""
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
