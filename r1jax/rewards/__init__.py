"""Rule-based rewards for R1-style RL: pure, batched, picklable, hack-resistant.

Every reward is ``fn(prompts, completions, **example_fields) -> list[float]``. Build one by
name with `get_reward`, or a weighted, time-limited, pooled sum with `CompositeReward`.
"""

from r1jax.rewards.accuracy import AccuracyReward
from r1jax.rewards.code import CodeReward, extract_program, parse_tests
from r1jax.rewards.compose import CompositeReward, RewardResult, RewardSpec, specs_from_config
from r1jax.rewards.equivalence import answers_equivalent, normalize_answer
from r1jax.rewards.extract import extract_answer, final_region, thinking_region
from r1jax.rewards.format import FormatReward, TagCountReward, is_well_formed, tag_count_score
from r1jax.rewards.language import LanguageReward, language_consistency
from r1jax.rewards.pool import Job, Outcome, RewardPool
from r1jax.rewards.registry import REWARDS, get_reward
from r1jax.rewards.sandbox import SandboxLimits, SandboxResult, SandboxUnavailable, run_python
from r1jax.rewards.shaping import CosineLengthReward, OverlongReward, RepetitionReward
from r1jax.rewards.tasks import CountdownReward, ExactMatchReward, countdown_score

__all__ = [
    "AccuracyReward",
    "CodeReward",
    "CompositeReward",
    "CosineLengthReward",
    "CountdownReward",
    "ExactMatchReward",
    "FormatReward",
    "Job",
    "LanguageReward",
    "Outcome",
    "OverlongReward",
    "REWARDS",
    "RepetitionReward",
    "RewardPool",
    "RewardResult",
    "RewardSpec",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailable",
    "TagCountReward",
    "answers_equivalent",
    "countdown_score",
    "extract_answer",
    "extract_program",
    "final_region",
    "get_reward",
    "is_well_formed",
    "language_consistency",
    "normalize_answer",
    "parse_tests",
    "run_python",
    "specs_from_config",
    "tag_count_score",
    "thinking_region",
]
