"""Task rewards: Countdown (TinyZero) and exact match.

Countdown: the final answer is an arithmetic expression that uses each given number exactly
once with ``+ - * /`` (``×``, ``÷``, ``−``, ``\\times``, ``\\div``, ``\\cdot`` also read) and
parentheses, optionally followed by ``= target``. It is parsed with `ast` into a whitelist of
nodes and evaluated exactly with fractions: nothing is ``eval``-ed, so ``2**10``, ``//``,
``%``, unary minus, names and calls are all refused, and a division by zero scores 0.
"""

from __future__ import annotations

import ast
import dataclasses
import operator
import re
from fractions import Fraction

from r1jax.rewards.extract import extract_answer

MAX_EXPRESSION_CHARS = 256
_SYMBOLS = {"×": "*", "÷": "/", "−": "-", "\\times": "*", "\\div": "/", "\\cdot": "*"}
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}
_INT_RE = re.compile(r"^\s*-?\d{1,12}\s*$")


class _Refused(ValueError):
    pass


def _evaluate(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, used), _evaluate(node.right, used)
        if isinstance(node.op, ast.Div) and right == 0:
            raise _Refused("division by zero")
        return _OPS[type(node.op)](left, right)
    if isinstance(node, ast.Constant) and type(node.value) is int:
        used.append(node.value)
        return Fraction(node.value)
    raise _Refused(f"not allowed in a Countdown expression: {type(node).__name__}")


def countdown_value(expression: str, numbers: list[int]) -> Fraction | None:
    """Exact value of a valid Countdown `expression` over `numbers`, else None."""
    for symbol, replacement in _SYMBOLS.items():
        expression = expression.replace(symbol, replacement)
    if len(expression) > MAX_EXPRESSION_CHARS or "**" in expression or "//" in expression:
        return None
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        used: list[int] = []
        value = _evaluate(tree.body, used)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if sorted(used) != sorted(int(n) for n in numbers):
        return None  # Each given number exactly once, and nothing else.
    return value


def countdown_answer_value(answer: str, numbers: list[int]) -> Fraction | None:
    """Exact value of a Countdown final answer, else None: the answer key maj@k votes over.

    The answer is read as `countdown_score` reads it (``$`` stripped, an optional ``= result``),
    and is valid when its expression is valid over `numbers` and any stated result is an integer
    equal to the expression's value. Two valid answers with the same value are the same answer
    (``3 + 4`` and ``4 + 3``); `countdown_score` pays 1.0 exactly when this equals the target.
    """
    answer = answer.strip().strip("$")
    if answer.count("=") == 1:
        answer, stated = answer.split("=")
        value = countdown_value(answer, numbers)
        if value is None or not _INT_RE.match(stated) or value != int(stated):
            return None
        return value
    return countdown_value(answer, numbers)


def countdown_score(completion: str, numbers: list[int], target: int, format_score: float = 0.0):
    """1.0 if the final answer reaches `target`; `format_score` for a parsable wrong answer."""
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    answer = answer.strip().strip("$")
    if answer.count("=") == 1:  # "expr = target": the stated result must be the target.
        answer, stated = answer.split("=")
        if not _INT_RE.match(stated) or int(stated) != int(target):
            return format_score if countdown_value(answer, numbers) is not None else 0.0
    value = countdown_value(answer, numbers)
    if value is None:
        return 0.0
    return 1.0 if value == int(target) else format_score


@dataclasses.dataclass(frozen=True)
class CountdownReward:
    """Countdown reward (registry name ``"countdown"``); fields ``numbers`` and ``target``.

    `format_score` is paid for a valid expression that misses the target (TinyZero used 0.1).
    """

    format_score: float = 0.0

    @property
    def score_range(self) -> tuple[float, float]:
        return min(0.0, self.format_score), max(1.0, self.format_score)

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        numbers, targets = fields.get("numbers"), fields.get("target")
        if numbers is None or targets is None:
            raise ValueError("countdown reward needs the `numbers` and `target` fields")
        return [
            countdown_score(c, n, t, self.format_score)
            for c, n, t in zip(completions, numbers, targets, strict=True)
        ]


def _canonical_text(s: str, ignore_case: bool) -> str:
    s = " ".join(s.split())
    return s.casefold() if ignore_case else s


@dataclasses.dataclass(frozen=True)
class ExactMatchReward:
    """1.0 when the final answer equals ``answer`` up to whitespace (name ``"exact_match"``)."""

    ignore_case: bool = False

    score_range = (0.0, 1.0)  # every score it gives lies here

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        answers = fields.get("answer")
        if answers is None:
            raise ValueError("exact_match reward needs the `answer` field")
        scores = []
        for completion, reference in zip(completions, answers, strict=True):
            got = extract_answer(completion)
            same = got is not None and _canonical_text(got, self.ignore_case) == _canonical_text(
                str(reference), self.ignore_case
            )
            scores.append(float(same))
        return scores
