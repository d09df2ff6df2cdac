"""Evaluation metrics of the R1 paper: pass@1 averaged over k samples, unbiased pass@k, and
majority vote (cons@k / maj@k) over the task's answers, plus per-run summaries.

Everything here is host-side Python over per-sample verdicts; sampling and scoring happen in
``r1jax.pipeline.evaluate``.

Majority vote (maj@k). An `AnswerKey` says what "the same answer" means for a task: an exact,
cheap key per answer (math: `normalize_answer`; Countdown: the expression's exact value; exact
match: the whitespace-collapsed text; code: the source without formatting or comments) and, for
the pairs of different keys it cannot separate cheaply (math only), an equivalence check. Answers
with equal keys, and key groups linked by a chain of equivalent pairs, are one candidate; the
candidate with the most votes wins, and a None answer casts no vote. Then:

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

import ast
import collections
import dataclasses
import importlib
import math
import pickle
import re
import warnings
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from r1jax.rewards import answers_equivalent, normalize_answer
from r1jax.rewards.code import extract_program
from r1jax.rewards.extract import extract_answer
from r1jax.rewards.pool import Job, RewardPool
from r1jax.rewards.tasks import countdown_answer_value

Comparator = Callable[[Sequence[tuple[str, str]]], Sequence[bool]]
"""Decides a batch of answer pairs: ``[(a, b), ...] -> [same?, ...]``."""


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


class AnswerKey(Protocol):
    """How a task's answers are read and grouped for majority voting."""

    def extract(self, completion: str) -> str | None:
        """The answer in `completion` that votes, or None (no vote)."""
        ...

    def key(self, answer: str, example: Mapping[str, Any]) -> Hashable:
        """An exact, cheap (bounded-time) key: answers with equal keys are the same answer."""
        ...

    def may_match(self, a: Hashable, b: Hashable) -> bool:
        """Whether answers with the different keys `a`, `b` may still be the same answer."""
        ...

    def equivalent(self, a: str, b: str) -> bool:
        """Whether two answers whose keys may match are the same answer (may be slow)."""
        ...

    def warm_up(self) -> None:
        """Prepares a worker process for `equivalent` (imports), once, before its first pair."""
        ...


_ENGINE_MODULES = ("sympy", "math_verify", "latex2sympy2_extended")
_NUMBER_KEY_RE = re.compile(r"^-?\d+(?:/[1-9]\d*)?$")  # `normalize_answer` of a plain number


def _collapse(text: str) -> str:
    return " ".join(text.split())


@dataclasses.dataclass(frozen=True)
class MathAnswers:
    """Math answers (reward ``accuracy``): the final answer keyed by `normalize_answer`.

    Two different keys are the same answer when `equivalence` says so (default
    `answers_equivalent`, math-verify), except that two plain numbers (their keys are exact
    reduced fractions) or an empty answer never need asking. `equivalence` must be picklable to
    run in a pool.
    """

    equivalence: Callable[[str, str], bool] = answers_equivalent

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion)

    def key(self, answer: str, example: Mapping[str, Any]) -> Hashable:
        return normalize_answer(answer)

    def may_match(self, a: Hashable, b: Hashable) -> bool:
        if not a or not b:  # an empty answer is never equivalent to anything
            return False
        return not (_NUMBER_KEY_RE.match(str(a)) and _NUMBER_KEY_RE.match(str(b)))

    def equivalent(self, a: str, b: str) -> bool:
        return bool(self.equivalence(a, b))

    def warm_up(self) -> None:
        """Imports the engine and compares one pair, so that no pair's time limit is spent
        loading sympy (a cold process needs about a second, more on a busy machine)."""
        for module in _ENGINE_MODULES:
            importlib.import_module(module)
        self.equivalence("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2")


class _ExactKeys:
    """Keys that decide alone: different keys are different answers."""

    def extract(self, completion: str) -> str | None:
        return extract_answer(completion)

    def may_match(self, a: Hashable, b: Hashable) -> bool:
        return False

    def equivalent(self, a: str, b: str) -> bool:
        return a == b

    def warm_up(self) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class CountdownAnswers(_ExactKeys):
    """Countdown answers (reward ``countdown``; the example's ``numbers``).

    A valid answer is keyed by its exact value (`countdown_answer_value`): ``3 + 4`` and
    ``4 + 3`` are one answer. An invalid one (other numbers, a false ``= result``, not an
    expression) is keyed by its text, so with numbers [3, 4] a bare ``7`` is not ``3 + 4``.
    """

    def key(self, answer: str, example: Mapping[str, Any]) -> Hashable:
        numbers = example.get("numbers")
        if numbers is None:
            raise ValueError("Countdown answers need the example's `numbers`")
        value = countdown_answer_value(answer, numbers)
        if value is not None:
            return ("value", value)
        return ("text", _collapse(answer.strip().strip("$")))


@dataclasses.dataclass(frozen=True)
class ExactMatchAnswers(_ExactKeys):
    """Exact-match answers (reward ``exact_match``): the text with whitespace collapsed (and
    case folded with `ignore_case`), as the reward compares it."""

    ignore_case: bool = False

    def key(self, answer: str, example: Mapping[str, Any]) -> Hashable:
        text = _collapse(answer)
        return text.casefold() if self.ignore_case else text


MAX_PROGRAM_CHARS = 20_000


def normalize_program(source: str) -> str:
    """Python source without formatting or comments: ``ast.unparse(ast.parse(source))`` when it
    parses and has at most `MAX_PROGRAM_CHARS` characters, else its non-blank lines with
    whitespace collapsed. Linear in the length; never raises."""
    if len(source) <= MAX_PROGRAM_CHARS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SyntaxWarnings of the model's code.
                return ast.unparse(ast.parse(source))
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            pass
    return "\n".join(_collapse(line) for line in source.splitlines() if line.strip())


@dataclasses.dataclass(frozen=True)
class CodeAnswers(_ExactKeys):
    """Code answers (reward ``code``): the program (`extract_program`) keyed by its normalized
    source (`normalize_program`). Programs that behave alike but read differently are different
    answers: judging behaviour would mean running every program on inputs the tests don't give."""

    def extract(self, completion: str) -> str | None:
        return extract_program(completion)

    def key(self, answer: str, example: Mapping[str, Any]) -> Hashable:
        return normalize_program(answer)


MATH_ANSWERS = MathAnswers()
ANSWER_KEYS: dict[str, AnswerKey] = {
    "accuracy": MATH_ANSWERS,
    "countdown": CountdownAnswers(),
    "exact_match": ExactMatchAnswers(),
    "code": CodeAnswers(),
}


def answer_key_for(reward: str) -> AnswerKey:
    """The answer key of the task that correctness reward `reward` (registry name) scores;
    any other reward votes over exact text (`ExactMatchAnswers`)."""
    return ANSWER_KEYS.get(reward, ANSWER_KEYS["exact_match"])


_warmed_up = False  # per process: whether this pool worker ran its warm-up


@dataclasses.dataclass(frozen=True)
class _PairEquivalence:
    """A pool component: 1.0 when ``equivalent(prompt, completion)``; a worker's first job runs
    `warm_up` first (and a job without a pair only that)."""

    equivalent: Callable[[str, str], bool]
    warm_up: Callable[[], None] | None = None

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        global _warmed_up
        if not _warmed_up and self.warm_up is not None:
            _warmed_up = True
            self.warm_up()
        if fields.get("warm_up_only"):
            return [0.0]
        return [
            float(bool(self.equivalent(a, b))) for a, b in zip(prompts, completions, strict=True)
        ]


WARM_UP_TIMEOUT = 60.0


class PooledEquivalence:
    """A `Comparator` that runs each pair in a worker process under a hard time limit.

    A pair past `timeout` seconds (its worker is killed, see `RewardPool`) or failing counts as
    two different answers; `timeouts` and `errors` count them. `equivalent` and `warm_up` must
    be picklable (else `TypeError` here). Workers start on the first non-empty batch, and each
    runs `warm_up` once first: at the start under `WARM_UP_TIMEOUT`, a replacement for a killed
    worker within its first pair's limit. ``num_workers=0`` runs inline (no hard limit).
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
        self._warm = warm_up is None or num_workers <= 0
        self._num_workers = num_workers
        # One job per chunk: the warm-up batch reaches every worker, and a killed worker's
        # replacement is fed one pair at a time.
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
        if not self._warm:
            self._warm = True
            warm = Job(0, "", "", {"warm_up_only": True}, WARM_UP_TIMEOUT)
            self._pool.run([warm] * self._num_workers)
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
        if answer is not None:
            groups.setdefault(answer_key.key(answer, example), []).append(i)
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


def _compare(pairs, answer_key: AnswerKey, compare: Comparator | None) -> list[bool]:
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
    same = dict(zip(texts, _compare(texts, answer_key, compare), strict=True))
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
    summary["pass@1"] = sum(sum(r.correct) / n for r in results) / len(results)
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
    table = dict(zip(pairs, _compare(pairs, answer_key, compare), strict=True))

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
