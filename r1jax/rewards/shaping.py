"""Length and repetition shaping rewards.

Lengths are in TOKENS, never characters: the example field ``completion_lengths`` (token counts
from the sampler) is used when present, else the reward's `length_fn` (e.g. a tokenizer's
``lambda s: len(tok.encode(s))``, which must be picklable for the process pool).

- `CosineLengthReward` (Yeo et al. 2025, "Demystifying Long Chain-of-Thought Reasoning"): a
  correct answer earns from `max_value_correct` (short) down to `min_value_correct` (at
  `max_len`); a wrong one from `min_value_wrong` (short) up to `max_value_wrong`, so the
  policy is pushed to be brief when right and to think longer when wrong.
- `OverlongReward` (DAPO's soft overlong punishment): 0 up to ``max_length - cache_length``,
  then linearly down to -1 at `max_length`, and -1 beyond; the arithmetic is
  `overlong_penalty`, a pure function over arrays that the GRPO rollout calls too.
- `RepetitionReward`: ``max_penalty * (1 - distinct n-grams / n-grams)`` over words.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import numpy as np

from r1jax.rewards.accuracy import AccuracyReward


def completion_token_lengths(
    completions: list[str], fields: dict, length_fn: Callable[[str], int] | None
) -> list[int]:
    """Token counts from the ``completion_lengths`` field, else `length_fn`, else an error."""
    lengths = fields.get("completion_lengths")
    if lengths is not None:
        return [int(n) for n in lengths]
    if length_fn is not None:
        return [int(length_fn(c)) for c in completions]
    raise ValueError(
        "length rewards count tokens: pass the `completion_lengths` field (token counts) or "
        "construct the reward with `length_fn=` a tokenizer length function"
    )


@dataclasses.dataclass(frozen=True)
class CosineLengthReward:
    """Cosine-scaled length reward (registry name ``"cosine_length"``); needs ``answer``."""

    min_value_wrong: float = -1.0
    max_value_wrong: float = -0.5
    min_value_correct: float = 0.5
    max_value_correct: float = 1.0
    max_len: int = 1000
    length_fn: Callable[[str], int] | None = None
    accuracy: AccuracyReward = AccuracyReward()

    @property
    def score_range(self) -> tuple[float, float]:
        ends = (self.min_value_wrong, self.max_value_wrong)
        ends += (self.min_value_correct, self.max_value_correct)
        return min(ends), max(ends)

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        lengths = completion_token_lengths(completions, fields, self.length_fn)
        correct = self.accuracy(prompts, completions, **fields)
        out = []
        for length, ok in zip(lengths, correct, strict=True):
            progress = min(length, self.max_len) / self.max_len
            cosine = math.cos(progress * math.pi)
            if ok:
                lo, hi = self.min_value_correct, self.max_value_correct
            else:  # Swapped ends: a longer wrong answer is penalised less.
                lo, hi = self.max_value_wrong, self.min_value_wrong
            out.append(lo + 0.5 * (hi - lo) * (1.0 + cosine))
        return out


@dataclasses.dataclass(frozen=True)
class OverlongReward:
    """Soft overlong punishment in [-1, 0] on token length (registry name ``"overlong"``)."""

    max_length: int = 4096
    cache_length: int = 512
    length_fn: Callable[[str], int] | None = None
    score_range = (-1.0, 0.0)

    def __post_init__(self):
        if not 0 < self.cache_length <= self.max_length:
            raise ValueError(
                f"overlong: need 0 < cache_length <= max_length, got {self.cache_length}, "
                f"{self.max_length}"
            )

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        lengths = completion_token_lengths(completions, fields, self.length_fn)
        return overlong_penalty(lengths, self.max_length, self.cache_length).tolist()


def overlong_penalty(lengths_R, max_length: int, cache_length: int) -> np.ndarray:
    """DAPO soft overlong punishment on token counts ``lengths_R`` [R]: float64 [R] in [-1, 0].

    0 for a length ``n <= max_length - cache_length``, then ``(max_length - cache_length - n) /
    cache_length`` (reaching -1 at ``n = max_length``), -1 beyond ``max_length``; all 0 when
    ``cache_length <= 0`` (no soft zone). Used by ``OverlongReward`` and the GRPO rollout.
    """
    lengths = np.asarray(lengths_R, np.float64)
    if cache_length <= 0:
        return np.zeros(lengths.shape, np.float64)
    start = max_length - cache_length
    penalty = np.clip((start - lengths) / cache_length, -1.0, 0.0)
    return np.where(lengths > max_length, -1.0, penalty)


# Scripts written without spaces: each character is one token of the n-grams (a Chinese loop
# has no spaces to split on). Everything else splits on whitespace.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
_TOKEN_RE = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def repetition_fraction(text: str, ngram_size: int) -> float:
    """1 - distinct/total over the n-grams of `text`'s tokens (whitespace-separated words, and
    each Chinese or Japanese character on its own); 0.0 when there are too few tokens."""
    words = _TOKEN_RE.findall(text.lower())
    total = len(words) - ngram_size + 1
    if total <= 0:
        return 0.0
    distinct = {tuple(words[i : i + ngram_size]) for i in range(total)}
    return 1.0 - len(distinct) / total


@dataclasses.dataclass(frozen=True)
class RepetitionReward:
    """N-gram repetition penalty in [max_penalty, 0] (registry name ``"repetition"``)."""

    ngram_size: int = 3
    max_penalty: float = -1.0

    @property
    def score_range(self) -> tuple[float, float]:
        return self.max_penalty, 0.0

    def __post_init__(self):
        if self.ngram_size < 1 or self.max_penalty > 0:
            raise ValueError("repetition: need ngram_size >= 1 and max_penalty <= 0")

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        return [self.max_penalty * repetition_fraction(c, self.ngram_size) for c in completions]
