"""What "the same answer" means for each task, for majority voting (``r1jax.evaluation.voting``).

An `AnswerKey` gives an exact, cheap key per answer (math: `normalize_answer`; Countdown: the
expression's exact value over the given numbers; exact match: the whitespace-collapsed text;
code: the source without formatting or comments) and, for the pairs of different keys it cannot
separate cheaply (math only), an equivalence check. `answer_key_for(reward)` picks the key of a
correctness reward.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Protocol

from r1jax.rewards import answers_equivalent, normalize_answer
from r1jax.rewards.code import extract_program
from r1jax.rewards.extract import extract_answer
from r1jax.rewards.tasks import countdown_answer_value


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


def same_math_answer(a: str, b: str) -> bool:
    """`answers_equivalent` with a percentage read as its fraction only (``50\\%`` is 0.5): the
    reward's "both" reading (0.5 or 50) would chain 50 and 0.5 into one vote candidate."""
    return answers_equivalent(a, b, percent="fraction")


@dataclasses.dataclass(frozen=True)
class MathAnswers:
    """Math answers (reward ``accuracy``): the final answer keyed by `normalize_answer`.

    Two different keys are the same answer when `equivalence` says so (default
    `same_math_answer`, math-verify), except that two plain numbers (their keys are exact
    reduced fractions) or an empty answer never need asking. `equivalence` must be picklable to
    run in a pool.
    """

    equivalence: Callable[[str, str], bool] = same_math_answer

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
