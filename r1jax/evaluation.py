"""Evaluation metrics of the R1 paper: pass@1 averaged over k samples, unbiased pass@k, and
majority vote (cons@k / maj@k) over extracted answers, plus per-run summaries.

Everything here is host-side Python over per-sample verdicts; sampling and scoring happen in
``r1jax.pipeline.evaluate``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from r1jax.rewards import answers_equivalent, normalize_answer


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
class Vote:
    """Outcome of a majority vote: the winning answer, its votes, and whether it is correct."""

    answer: str | None
    votes: int
    correct: bool


def majority_vote(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    *,
    equivalent: Callable[[str, str], bool] = answers_equivalent,
) -> Vote:
    """Majority vote over extracted answers; equivalent answers count as one candidate.

    Args:
      answers: extracted final answer per sample (None = unparseable: casts no vote).
      correct: verdict per sample (the winning group's verdict is that of its first member).
      equivalent: ``(a, b) -> bool`` deciding that two answers are the same (default: math
        equivalence). Answers with the same cheap ``normalize_answer`` key are merged first.

    Ties are broken by the earliest first appearance among the tied groups; with no parseable
    answer the vote is wrong.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} verdicts")
    groups: list[list[int]] = []  # sample indices per distinct answer, in first-seen order
    keys: list[str] = []
    for i, answer in enumerate(answers):
        if answer is None:
            continue
        key = normalize_answer(answer)
        for g, group in enumerate(groups):
            rep = answers[group[0]]
            if key == keys[g] or equivalent(rep, answer):
                group.append(i)
                break
        else:
            groups.append([i])
            keys.append(key)
    if not groups:
        return Vote(answer=None, votes=0, correct=False)
    best = max(groups, key=len)  # max keeps the first of equal-length groups: earliest wins
    return Vote(answer=answers[best[0]], votes=len(best), correct=bool(correct[best[0]]))


@dataclasses.dataclass(frozen=True)
class QuestionResult:
    """All k samples of one question."""

    correct: tuple[bool, ...]
    answers: tuple[str | None, ...]
    well_formed: tuple[bool, ...]
    lengths: tuple[int, ...]  # completion lengths in tokens


def summarize(
    results: Sequence[QuestionResult],
    *,
    ks: Sequence[int] = (1,),
    equivalent: Callable[[str, str], bool] = answers_equivalent,
) -> dict[str, float]:
    """Aggregates per-question results into the R1 paper's metrics.

    Returns ``pass@1`` (mean correctness over all k samples, averaged over questions),
    ``pass@{k}`` (unbiased) and ``maj@{k}`` (majority vote over the first k samples) for each k in
    ``ks``, ``format_rate``, ``mean_length``/``max_length`` (tokens) and ``num_questions``.
    """
    if not results:
        raise ValueError("no results to summarize")
    n = len(results[0].correct)
    if any(len(r.correct) != n for r in results):
        raise ValueError("every question needs the same number of samples")
    summary: dict[str, float] = {"num_questions": len(results), "samples_per_question": n}
    summary["pass@1"] = sum(sum(r.correct) / n for r in results) / len(results)
    for k in ks:
        if k > n:
            raise ValueError(f"k={k} exceeds the {n} samples per question")
        summary[f"pass@{k}"] = sum(pass_at_k(n, sum(r.correct), k) for r in results) / len(results)
        summary[f"maj@{k}"] = sum(
            majority_vote(r.answers[:k], r.correct[:k], equivalent=equivalent).correct
            for r in results
        ) / len(results)
    all_lengths = [x for r in results for x in r.lengths]
    summary["format_rate"] = sum(sum(r.well_formed) for r in results) / (n * len(results))
    summary["mean_length"] = sum(all_lengths) / len(all_lengths)
    summary["max_length"] = max(all_lengths)
    return summary
