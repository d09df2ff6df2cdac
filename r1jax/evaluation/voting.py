"""Majority vote (maj@k) over a task's answers.

An `AnswerKey` (``r1jax.evaluation.answer_keys``) says what "the same answer" means for a
task: an exact, cheap key per answer (math: `normalize_answer`; Countdown: the expression's exact
value; exact match: the whitespace-collapsed text; code: the source without formatting or
comments) and, for the pairs of different keys it cannot separate cheaply (math only), an
equivalence check. Answers with equal keys, and key groups linked by a chain of equivalent pairs,
are one candidate; the candidate with the most votes wins, and a None answer casts no vote. Then:

- a candidate's verdict is a property of the candidate: correct when strictly more than half of
  its members were judged correct. Members agree unless the grouping and the reward disagree (a
  reward time-out, a math equivalence that is not transitive); a split candidate is wrong;
- a tie for the most votes is not broken by sample order: the vote scores the fraction of the
  tied candidates that are correct (the expected correctness of a uniformly random tie-break),
  and maj@k averages that score, so maj@2 over one correct and one wrong answer is 0.5;
- nothing depends on sample order: not the keys, the candidates (connected components), the
  verdicts, nor the answer shown for a candidate (its most frequent spelling, then the shortest,
  then the first in string order);
- the equivalence checks run in worker processes, each pair under a hard time limit
  (`PooledEquivalence`); a pair that overruns or fails counts as two different answers.
"""

from __future__ import annotations

import collections
import dataclasses
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from r1jax.evaluation.answer_keys import MATH_ANSWERS, AnswerKey
from r1jax.rewards.pool import Job, RewardPool

Comparator = Callable[[Sequence[tuple[str, str]]], Sequence[bool]]
"""Decides a batch of answer pairs: ``[(a, b), ...] -> [same?, ...]``."""


@dataclasses.dataclass(frozen=True)
class _PairEquivalence:
    """A pool component: 1.0 when ``equivalent(prompt, completion)``. Its `warm_up` (the
    answer key's, e.g. loading the math engine) runs once in each new worker, before the pool
    starts any pair's deadline (`RewardPool`)."""

    equivalent: Callable[[str, str], bool]
    prepare: Callable[[], None] | None = None

    def warm_up(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        return [
            float(bool(self.equivalent(a, b))) for a, b in zip(prompts, completions, strict=True)
        ]


class PooledEquivalence:
    """A `Comparator` that runs each pair in a worker process under a hard time limit.

    A pair past `timeout` seconds (its worker is killed, see `RewardPool`) or failing counts as
    two different answers; `timeouts` and `errors` count them. `equivalent` and `warm_up` must
    be picklable (else `TypeError` here). Workers start on the first non-empty batch; each new
    one (a killed worker's replacement too) runs `warm_up` before the pool starts its first
    pair's deadline. ``num_workers=0`` runs inline (no hard limit).
    """

    def __init__(
        self,
        equivalent: Callable[[str, str], bool],
        *,
        timeout: float = 5.0,
        warm_up: Callable[[], None] | None = None,
        num_workers: int = 2,
        start_method: str = "forkserver",
    ):
        component = _PairEquivalence(equivalent, warm_up)
        if num_workers > 0:
            try:
                pickle.dumps(component)
            except Exception as e:  # noqa: BLE001 - pickling raises many types.
                raise TypeError(
                    f"the equivalence must be picklable to run in worker processes (a module-"
                    f"level function, not a lambda); or use compare_in_process: {e}"
                ) from None
        self.timeout = timeout
        self.timeouts = 0
        self.errors = 0
        # One pair per chunk: a killed worker loses only its own pair.
        self._pool = RewardPool(
            [component], num_workers=num_workers, chunk_size=1, start_method=start_method
        )

    @classmethod
    def for_key(cls, answer_key: AnswerKey, **options) -> PooledEquivalence:
        """Compares with ``answer_key.equivalent`` after ``answer_key.warm_up``."""
        return cls(answer_key.equivalent, warm_up=answer_key.warm_up, **options)

    def __call__(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        if not pairs:
            return []
        outcomes = self._pool.run([Job(0, a, b, {}, self.timeout) for a, b in pairs])
        self.timeouts += sum(o.status == "timeout" for o in outcomes)
        self.errors += sum(o.status == "error" for o in outcomes)
        return [o.status == "ok" and o.score == 1.0 for o in outcomes]

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> PooledEquivalence:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def compare_in_process(equivalent: Callable[[str, str], bool]) -> Comparator:
    """A `Comparator` calling `equivalent` here, with no hard limit (cheap or trusted checks)."""
    return lambda pairs: [bool(equivalent(a, b)) for a, b in pairs]


@dataclasses.dataclass(frozen=True)
class Vote:
    """Outcome of a majority vote.

    Attributes:
      answer: the winning candidate's answer (most frequent spelling, then shortest, then first
        in string order); with a tie, that of the tied candidate whose answer sorts first by
        (length, text). None when no answer voted.
      votes: the winning candidates' vote count.
      correct: whether the vote is correct however a tie is broken (every tied candidate is).
      score: the fraction of the tied candidates that are correct (1 or 0 without a tie): what
        maj@k averages.
      tied: how many candidates share the most votes (0 when no answer voted).
    """

    answer: str | None
    votes: int
    correct: bool
    score: float
    tied: int


def _representative(texts: Sequence[str]) -> str:
    counts = collections.Counter(texts)
    return min(counts, key=lambda t: (-counts[t], len(t), t))


def _key_groups(answers, answer_key: AnswerKey, example) -> dict[Hashable, list[int]]:
    groups: dict[Hashable, list[int]] = {}
    for i, answer in enumerate(answers):
        key = None if answer is None else answer_key.key(answer, example)
        if key is not None and key != "":  # an answer that normalises to nothing: no vote
            groups.setdefault(key, []).append(i)
    return groups


def _key_pairs(answers, groups, answer_key: AnswerKey) -> dict[tuple, tuple[str, str]]:
    """``{(key_a, key_b): (text_a, text_b)}`` for the key groups that may match: each group
    stands for its representative answer, the shorter (then smaller) text first."""
    reps = {k: _representative([answers[i] for i in members]) for k, members in groups.items()}
    keys = list(groups)
    pairs = {}
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            if answer_key.may_match(a, b):
                ta, tb = sorted((reps[a], reps[b]), key=lambda t: (len(t), t))
                pairs[(a, b)] = (ta, tb)
    return pairs


def vote_pairs(
    answers: Sequence[str | None],
    *,
    answer_key: AnswerKey = MATH_ANSWERS,
    example: Mapping[str, Any] | None = None,
) -> list[tuple[str, str]]:
    """The answer pairs (sorted, distinct) whose equivalence a vote over `answers` asks about."""
    groups = _key_groups(answers, answer_key, example or {})
    return sorted(set(_key_pairs(answers, groups, answer_key).values()))


def compare_pairs(pairs, answer_key: AnswerKey, compare: Comparator | None) -> list[bool]:
    if not pairs:
        return []
    if compare is not None:
        same = list(compare(pairs))
    else:
        with PooledEquivalence.for_key(answer_key) as pooled:
            same = pooled(pairs)
    if len(same) != len(pairs):
        raise ValueError(f"comparator answered {len(same)} of {len(pairs)} pairs")
    return same


def majority_vote(
    answers: Sequence[str | None],
    correct: Sequence[bool],
    *,
    answer_key: AnswerKey = MATH_ANSWERS,
    example: Mapping[str, Any] | None = None,
    compare: Comparator | None = None,
) -> Vote:
    """Majority vote over the answers of one question (see the module docstring for the rules).

    Args:
      answers: extracted answer per sample (None = unparseable: casts no vote).
      correct: the reward's verdict per sample.
      answer_key: the task's notion of "the same answer" (default: math).
      example: the question's fields the key reads (Countdown: ``numbers``).
      compare: decides the pairs of `vote_pairs` (default: a `PooledEquivalence` of
        ``answer_key.equivalent`` started for this call, only when some pair needs deciding).

    The result does not depend on the order of the samples.
    """
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} verdicts")
    groups = _key_groups(answers, answer_key, example or {})
    pairs = _key_pairs(answers, groups, answer_key)
    texts = sorted(set(pairs.values()))
    same = dict(zip(texts, compare_pairs(texts, answer_key, compare), strict=True))
    parent = {k: k for k in groups}  # union-find over keys: candidates are components

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for (a, b), pair in pairs.items():
        if same[pair]:
            parent[root(a)] = root(b)
    candidates: dict[Hashable, list[int]] = {}
    for k, members in groups.items():
        candidates.setdefault(root(k), []).extend(members)
    if not candidates:
        return Vote(answer=None, votes=0, correct=False, score=0.0, tied=0)
    votes = max(len(members) for members in candidates.values())
    tied = [members for members in candidates.values() if len(members) == votes]
    verdicts = [2 * sum(bool(correct[i]) for i in members) > len(members) for members in tied]
    shown = (_representative([answers[i] for i in members]) for members in tied)
    return Vote(
        answer=min(shown, key=lambda t: (len(t), t)),
        votes=votes,
        correct=all(verdicts),
        score=sum(verdicts) / len(tied),
        tied=len(tied),
    )
