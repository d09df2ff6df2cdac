"""`EvalSettings`: how evaluation and rejection sampling sample and judge (defined here only, so
that a config-schema dataclass can replace it in one place)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How to sample and judge. Defaults follow the R1 paper (T = 0.6, top-p = 0.95)."""

    num_samples: int = 8
    temperature: float = 0.6  # 0: greedy decoding
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 256
    ks: tuple[int, ...] = ()  # extra pass@k / maj@k values; k = num_samples is always reported
    prompts_per_batch: int = 32
    template: str = "r1_zero"
    correctness_reward: str = "accuracy"  # "countdown" for Countdown, "exact_match", ...
    reward_timeout: float = 5.0
    seed: int = 0

    @property
    def all_ks(self) -> tuple[int, ...]:
        return tuple(sorted({1, *self.ks, self.num_samples}))
