"""The accuracy reward [R1]: 1.0 when the final answer is equivalent to the reference.

Each check is hard-limited (see `r1jax.rewards.equivalence` and `r1jax.rewards.hard_limit`):
called in the trainer's own process, the sympy part runs in a persistent worker that is killed
past `timeout`; inside a `RewardPool` worker (a daemonic process, which may start no children) it
runs in-process under the soft limit, and the pool's per-job kill is the hard limit.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from r1jax.rewards.equivalence import DEFAULT_TIMEOUT, PercentMode, answers_equivalent
from r1jax.rewards.extract import ExtractMode, extract_answer


@dataclasses.dataclass(frozen=True)
class AccuracyReward:
    """Math accuracy of the extracted final answer vs the ``answer`` field (name ``"accuracy"``).

    Attributes:
      mode: where the final answer is read from (see `extract_answer`).
      percent: how ``\\%`` answers compare with plain numbers (see `answers_equivalent`).
      timeout: time limit in seconds per item for the equivalence engine (hard where a worker
        process can be started, see the module doc).
    """

    mode: ExtractMode = "auto"
    percent: PercentMode = "both"
    timeout: float = DEFAULT_TIMEOUT
    preload: ClassVar[tuple[str, ...]] = ("sympy", "math_verify", "latex2sympy2_extended")

    score_range = (0.0, 1.0)  # every score it gives lies here

    def warm_up(self) -> None:
        """Loads the math engine (imports, LaTeX grammar) with one check under no time limit, so
        that no item's limit is spent on it (`RewardPool` calls this in each new worker)."""
        answers_equivalent("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", timeout=None, isolate=False)

    def score(self, completion: str, reference: str) -> float:
        """1.0 or 0.0 for one completion."""
        candidate = extract_answer(completion, self.mode)
        if candidate is None:
            return 0.0
        same = answers_equivalent(
            str(reference), candidate, timeout=self.timeout, percent=self.percent
        )
        return float(same)

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        answers = fields.get("answer")
        if answers is None:
            raise ValueError("accuracy reward needs the `answer` field (reference answers)")
        return [self.score(c, a) for c, a in zip(completions, answers, strict=True)]
