"""Preference pairs over the arithmetic questions: a reward model's built-in training data.

Example (``kind="wrong_answer"``)::

    prompt:   "Compute 37 + 12 * 4 - 9"
    chosen:   "<think>12 * 4 = 48. 37 + 48 = 85. 85 - 9 = 76.</think> <answer>76</answer>"
    rejected: "<think>12 * 4 = 48. 37 + 48 = 85. 85 - 9 = 76.</think> <answer>79</answer>"

``chosen`` is always the worked, correct solution in the R1 format. ``rejected`` is one of
``kinds`` (drawn per example): ``wrong_answer`` (the working as chosen, an answer that
contradicts its last step), ``hasty`` (no working and a guess), ``no_format`` (the working and
the answer without the ``<think>``/``<answer>`` tags). Each is checkable from the response
alone, as the judgments of R1's general-RL reward model are meant to be; the record's ``kind``
lets an evaluation report accuracy per kind. The records also carry ``answer`` and
``gold_cot``, so the same task is an RL or SFT source (and a tokenizer corpus).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from r1jax.data.tasks.arithmetic import ArithmeticTask
from r1jax.data.tasks.base import register_task, task_rng
from r1jax.data.templates import format_completion

REJECTION_KINDS = ("wrong_answer", "hasty", "no_format")


@register_task
@dataclasses.dataclass(frozen=True)
class ArithmeticPreferenceTask:
    """The arithmetic task's knobs, and the kinds of rejected responses (comma-separated)."""

    min_operands: int = 2
    max_operands: int = 3
    max_digits: int = 2
    ops: str = "+-*"
    language: str = "en"
    kinds: str = ",".join(REJECTION_KINDS)

    name: ClassVar[str] = "arithmetic_preferences"
    rewards: ClassVar[tuple[str, ...]] = ("accuracy", "format")

    def __post_init__(self):
        unknown = set(self.kind_list) - set(REJECTION_KINDS)
        if not self.kind_list or unknown:
            raise ValueError(f"kinds={self.kinds!r}: comma-separated, from {REJECTION_KINDS}")

    @property
    def kind_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.kinds.split(",") if k.strip())

    def example(self, index: int, *, seed: int = 0) -> dict[str, Any]:
        knobs = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "kinds"
        }
        base = ArithmeticTask(**knobs).example(index, seed=seed)
        rng = task_rng(self.name, seed, index)
        kind = rng.choice(self.kind_list)
        answer, cot = int(base["answer"]), base["gold_cot"]
        wrong = answer + rng.choice([-1, 1]) * rng.randint(1, 10)
        if kind == "wrong_answer":
            rejected = format_completion(cot, str(wrong))
        elif kind == "hasty":
            rejected = format_completion("", str(wrong))
        else:
            rejected = f"{cot} {answer}"
        return base | {
            "chosen": format_completion(cot, str(answer)),
            "rejected": rejected,
            "kind": kind,
            "task": self.name,
        }
