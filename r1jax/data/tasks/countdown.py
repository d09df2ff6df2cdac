"""Countdown (as in TinyZero): combine every given number exactly once to reach the target.

Example::

    prompt:   "Using the numbers [44, 19, 35], create an equation that equals 98. You can use
               basic arithmetic operations (+, -, *, /) and each number exactly once"
    gold_cot: "44 + 19 = 63. 63 + 35 = 98."
    answer:   "44 + 19 + 35"   (an expression; the countdown reward evaluates it)

Targets are built from a random expression tree over all the numbers (non-negative intermediates,
exact divisions only), so every example is solvable and the gold answer is one solution.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from r1jax.data.tasks.base import register_task, task_rng

_MAX_TRIES = 10_000


@register_task
@dataclasses.dataclass(frozen=True)
class CountdownTask:
    """Difficulty knobs: how many numbers, their range, the target range, allowed operators."""

    num_numbers: int = 3
    min_number: int = 1
    max_number: int = 99
    min_target: int = 1
    max_target: int = 100
    ops: str = "+-*/"

    name: ClassVar[str] = "countdown"
    rewards: ClassVar[tuple[str, ...]] = ("countdown", "format")

    def __post_init__(self):
        if self.num_numbers < 2 or not 0 <= self.min_number <= self.max_number:
            raise ValueError(f"need num_numbers >= 2 and 0 <= min_number <= max_number: {self}")
        if not self.ops or set(self.ops) - set("+-*/") or self.min_target > self.max_target:
            raise ValueError(f"ops must be drawn from '+-*/' and min_target <= max_target: {self}")

    def example(self, index: int, *, seed: int = 0) -> dict[str, Any]:
        rng = task_rng(self.name, seed, index)
        for _ in range(_MAX_TRIES):
            numbers = [
                rng.randint(self.min_number, self.max_number) for _ in range(self.num_numbers)
            ]
            solved = _random_solution(rng, numbers, self.ops)
            if solved is not None and self.min_target <= solved[0] <= self.max_target:
                target, expression, steps = solved
                break
        else:  # pragma: no cover - needs absurd knobs
            raise ValueError(f"{self}: no target in range after {_MAX_TRIES} draws")
        shown = ", ".join(map(str, numbers))
        ops = ", ".join(self.ops)
        prompt = (
            f"Using the numbers [{shown}], create an equation that equals {target}. "
            f"You can use basic arithmetic operations ({ops}) and each number exactly once"
        )
        return {
            "prompt": prompt,
            "answer": expression,
            "gold_cot": " ".join(steps),
            "task": self.name,
            "numbers": numbers,
            "target": target,
        }


def _random_solution(rng, numbers: list[int], ops: str):
    """Combine random pairs until one value is left: ``(value, expression, steps)`` or None."""
    pool = [(n, str(n), True) for n in numbers]  # (value, text, is_atom)
    steps = []
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        (a, ta, atom_a), (b, tb, atom_b) = pool[i], pool[j]
        op = rng.choice(ops)
        if op in "-/" and a < b:
            (a, ta, atom_a), (b, tb, atom_b) = (b, tb, atom_b), (a, ta, atom_a)
        if op == "/" and (b == 0 or a % b):
            return None
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
        left = ta if atom_a else f"({ta})"
        right = tb if atom_b else f"({tb})"
        steps.append(f"{a} {op} {b} = {value}.")
        pool = [p for k, p in enumerate(pool) if k not in (i, j)] + [
            (value, f"{left} {op} {right}", False)
        ]
    return pool[0][0], pool[0][1], steps
