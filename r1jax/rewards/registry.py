"""Reward functions by name, as configs refer to them."""

from __future__ import annotations

from r1jax.rewards.accuracy import AccuracyReward
from r1jax.rewards.code import CodeReward
from r1jax.rewards.format import FormatReward, TagCountReward
from r1jax.rewards.language import LanguageReward
from r1jax.rewards.shaping import CosineLengthReward, OverlongReward, RepetitionReward
from r1jax.rewards.tasks import CountdownReward, ExactMatchReward

REWARDS: dict[str, type] = {
    "accuracy": AccuracyReward,
    "format": FormatReward,
    "tag_count": TagCountReward,
    "language": LanguageReward,
    "code": CodeReward,
    "countdown": CountdownReward,
    "exact_match": ExactMatchReward,
    "cosine_length": CosineLengthReward,
    "overlong": OverlongReward,
    "repetition": RepetitionReward,
}


def get_reward(name: str, **options):
    """The reward called `name`, built with `options` (its dataclass fields)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; known rewards: {sorted(REWARDS)}")
    try:
        return REWARDS[name](**options)
    except TypeError as e:
        raise ValueError(f"reward {name!r}: bad options {sorted(options)}: {e}") from None
