"""Evaluation metrics of the R1 paper: pass@1 averaged over k samples, unbiased pass@k, and
majority vote (cons@k / maj@k, ``r1jax.evaluation.voting``) over the task's answers, plus
per-run summaries.

`is_correct` is the one definition of a correct sample (the correctness reward is full:
``>= CORRECT_REWARD``) and `pass_at_1` the one definition of pass@1; `summarize`, the judged
samples of ``r1jax.evaluation.judge`` and the in-training evaluation all use them.

Everything here is host-side Python over per-sample verdicts; sampling and scoring happen in
``r1jax.evaluation.judge``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from r1jax.evaluation.answer_keys import MATH_ANSWERS, AnswerKey
from r1jax.evaluation.voting import Comparator, compare_pairs, majority_vote, vote_pairs

CORRECT_REWARD = 1.0
"""The correctness reward a sample must reach to count as correct: the full reward. Binary
rewards (math, exact match) pay 1.0 for a correct answer and 0.0 otherwise; partial credit (the
code reward's fraction of tests passed, Countdown's ``format_score``) is not correct."""


def is_correct(reward_values) -> np.ndarray:
    """Per-sample correctness from the correctness reward: ``reward_values >= CORRECT_REWARD``.

    Args:
      reward_values: ``[R]`` (any shape) float rewards, or booleans (already verdicts).
    Returns:
      bool array of the same shape.
    """
    values = np.asarray(reward_values)
    if values.dtype == bool:
        return values
    return values.astype(np.float64) >= CORRECT_REWARD


def pass_at_1(correct) -> float:
    """pass@1: the mean over samples of per-sample correctness.

    Args:
      correct: ``[R]`` booleans, or float correctness rewards (read by `is_correct`), over all
        samples; with the same number of samples per question this equals the mean over
        questions of each question's fraction of correct samples (the R1 paper's pass@1).
    Returns:
      a float in [0, 1].
    """
    verdicts = is_correct(correct)
    if verdicts.size == 0:
        raise ValueError("pass@1 of no samples")
    return float(np.mean(verdicts))


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al., 2021): ``1 - C(n - c, k) / C(n, k)``.

    The probability that at least one of k samples drawn without replacement from the n
    generated ones is correct.
    """
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"need 0 <= num_correct <= num_samples, got {num_correct}/{num_samples}")
    if not 1 <= k <= num_samples:
        raise ValueError(f"need 1 <= k <= num_samples={num_samples}, got k={k}")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - math.comb(num_samples - num_correct, k) / math.comb(num_samples, k)


@dataclasses.dataclass(frozen=True)
class QuestionResult:
    """All k samples of one question, and the question's fields (for the answer key)."""

    correct: tuple[bool, ...]
    answers: tuple[str | None, ...]
    well_formed: tuple[bool, ...]
    lengths: tuple[int, ...]  # completion lengths in tokens
    example: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def summarize(
    results: Sequence[QuestionResult],
    *,
    ks: Sequence[int] = (1,),
    answer_key: AnswerKey = MATH_ANSWERS,
    compare: Comparator | None = None,
) -> dict[str, float]:
    """Aggregates per-question results into the R1 paper's metrics.

    Returns ``pass@1`` (mean correctness over all k samples, averaged over questions),
    ``pass@{k}`` (unbiased) and ``maj@{k}`` (mean `Vote.score` of the majority vote over the
    first k samples, grouped by `answer_key`) for each k in ``ks``, ``format_rate``,
    ``mean_length``/``max_length`` (tokens) and ``num_questions``. Every vote's equivalence
    questions go to `compare` in one batch (default: a `PooledEquivalence` of
    ``answer_key.equivalent``, started only when some pair needs deciding).
    """
    if not results:
        raise ValueError("no results to summarize")
    n = len(results[0].correct)
    if any(len(r.correct) != n for r in results):
        raise ValueError("every question needs the same number of samples")
    summary: dict[str, float] = {"num_questions": len(results), "samples_per_question": n}
    summary["pass@1"] = pass_at_1([c for r in results for c in r.correct])
    if any(k > n for k in ks):
        raise ValueError(f"k={max(ks)} exceeds the {n} samples per question")
    pairs = sorted(
        {
            pair
            for r in results
            for k in ks
            for pair in vote_pairs(r.answers[:k], answer_key=answer_key, example=r.example)
        }
    )
    table = dict(zip(pairs, compare_pairs(pairs, answer_key, compare), strict=True))

    def lookup(batch):
        return [table[pair] for pair in batch]

    for k in ks:
        summary[f"pass@{k}"] = sum(pass_at_k(n, sum(r.correct), k) for r in results) / len(results)
        votes = [
            majority_vote(
                r.answers[:k],
                r.correct[:k],
                answer_key=answer_key,
                example=r.example,
                compare=lookup,
            )
            for r in results
        ]
        summary[f"maj@{k}"] = sum(v.score for v in votes) / len(results)
    all_lengths = [x for r in results for x in r.lengths]
    summary["format_rate"] = sum(sum(r.well_formed) for r in results) / (n * len(results))
    summary["mean_length"] = sum(all_lengths) / len(all_lengths)
    summary["max_length"] = max(all_lengths)
    return summary
