"""The GRPO variants (``config.grpo.variant``): the settings each one stands for.

Imported by ``schema.GRPOConfig``, which fills the fields a config leaves unset from here.
"""

from __future__ import annotations

from typing import Any

# The settings a GRPO variant stands for; explicit config keys override them. "r1" is the
# baseline every other variant starts from. A callable value is computed from the section.
VARIANTS: dict[str, dict[str, Any]] = {
    # R1's own settings (DeepSeek-R1, 2025; ../shared/SPEC.md section 6): G = 16 outputs per
    # question sampled at temperature 1.0, KL coefficient beta = 0.001, learning rate 3e-6
    # (an optimizer setting: ``configs/r1_zero_*.py``), chains of thought up to 32,768 tokens.
    # The clip range 0.2 is the GRPO/PPO default.
    "r1": dict(
        num_samples=16,
        beta=0.001,
        eps_low=0.2,
        eps_high=None,  # = eps_low
        aggregation="seq_mean",
        importance="token",
        advantage_scale="group",
        dynamic_sampling=False,
        mask_truncated=False,
        overlong_cache=0,
    ),
    # DAPO (Yu et al., 2025): clip-higher, dynamic sampling, token-level loss, soft overlong
    # punishment over the last fifth of the budget, no KL.
    "dapo": dict(
        beta=0.0,
        eps_high=0.28,
        dynamic_sampling=True,
        aggregation="token_mean",
        overlong_cache=lambda grpo: grpo.max_new_tokens // 5,
    ),
    # Dr. GRPO (Liu et al., 2025): no std scaling, a constant divisor, no KL.
    "dr_grpo": dict(beta=0.0, advantage_scale="none", aggregation="constant"),
    # GSPO (Zheng et al., 2025): sequence-level ratio with its small clip range, no KL.
    "gspo": dict(beta=0.0, importance="sequence", eps_low=3e-4, eps_high=4e-4),
}
