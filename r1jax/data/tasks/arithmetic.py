"""Multi-step integer arithmetic with operator precedence and a step-by-step gold CoT.

Example (defaults)::

    prompt:   "Compute 37 + 12 * 4 - 9"
    gold_cot: "12 * 4 = 48. 37 + 48 = 85. 85 - 9 = 76."
    answer:   "76"

The CoT does every multiplication first (left to right), then additions and subtractions left to
right: one binary operation per step, so a tiny model can learn it.

``hasty_rate`` writes a corpus of mixed quality: that fraction of the examples is a hasty
answer, with no working (an empty think block) and a guess that ignores the question (uniform
over ``[-10**max_digits, 2 * 10**max_digits]``), as opposed to the worked, always correct,
solutions. A model trained on it answers hastily at that rate; reinforcement against the true
answer then has to discover that working it out pays (the demo's R1-Zero stage). Such examples
are for pretraining corpora: they are marked ``"hasty": True`` and their ``answer`` is the
guess, so a stage that scores answers must use ``hasty_rate=0``.

``language``: "en" (the examples above), "zh" (``"计算 37 + 12 * 4 - 9"``, and a worked
solution in Chinese: ``"先算 12 * 4 = 48。再算 37 + 48 = 85。最后算 85 - 9 = 76。"``) or
"mixed" (each example one of the two, drawn); "zh" and "mixed" examples carry their
``language`` field, which the R1-Zero template, the language reward and rejection sampling read.
The questions are the same in every language. ``worded`` writes the English solutions with
words too (``"First 12 * 4 = 48. Then 37 + 48 = 85. Finally 85 - 9 = 76."``), as the Chinese ones
have them, so that the language of an English chain of thought can be told (a bare derivation is
in no language). ``switch_rate``: that fraction of the worked solutions is written in the OTHER
language than the question's (a corpus whose models mix languages, R1-Zero's problem that its
language-consistency reward addresses); the ``language`` field stays the question's.

``reward_route``: "" (no field), "rules", "model" or "mixed" (each example one of the two,
drawn) sets the examples' ``reward`` field, which routes them to the rule rewards or to a
reward model in GRPO (``r1jax.train.model_reward``): the miniature of R1's last stage, where
reasoning prompts keep rule rewards and general ones are judged by a model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from r1jax.data.tasks.base import register_task, task_rng


@register_task
@dataclasses.dataclass(frozen=True)
class ArithmeticTask:
    """Difficulty knobs: operand count range, digits per operand, allowed operators; and the
    share of hasty, unworked solutions (see the module docstring)."""

    min_operands: int = 2
    max_operands: int = 4
    max_digits: int = 2
    ops: str = "+-*"
    hasty_rate: float = 0.0
    language: str = "en"  # "en" | "zh" | "mixed"
    reward_route: str = ""  # "" | "rules" | "model" | "mixed"
    worded: bool = False
    switch_rate: float = 0.0

    name: ClassVar[str] = "arithmetic"
    rewards: ClassVar[tuple[str, ...]] = ("accuracy", "format")

    def __post_init__(self):
        if not 2 <= self.min_operands <= self.max_operands:
            raise ValueError(f"need 2 <= min_operands <= max_operands, got {self}")
        if self.max_digits < 1 or not self.ops or set(self.ops) - set("+-*"):
            raise ValueError(f"max_digits >= 1 and ops drawn from '+-*' required, got {self}")
        if not 0.0 <= self.hasty_rate < 1.0:
            raise ValueError(f"hasty_rate must be in [0, 1), got {self.hasty_rate}")
        if self.language not in ("en", "zh", "mixed"):
            raise ValueError(f"language must be 'en', 'zh' or 'mixed', got {self.language!r}")
        if not 0.0 <= self.switch_rate <= 1.0 or (self.switch_rate and self.language == "en"):
            raise ValueError(f"switch_rate in [0, 1] with language zh or mixed, not {self}")
        if self.reward_route not in ("", "rules", "model", "mixed"):
            raise ValueError(
                f"reward_route: '', 'rules', 'model' or 'mixed', not {self.reward_route!r}"
            )

    def example(self, index: int, *, seed: int = 0) -> dict[str, Any]:
        rng = task_rng(self.name, seed, index)
        n = rng.randint(self.min_operands, self.max_operands)
        nums = [rng.randrange(10 ** rng.randint(1, self.max_digits)) for _ in range(n)]
        ops = [rng.choice(self.ops) for _ in range(n - 1)]
        expression = " ".join(
            [str(nums[0])] + [f"{o} {x}" for o, x in zip(ops, nums[1:], strict=True)]
        )
        steps, value = _solve_steps(nums, ops)
        example = {
            "prompt": f"Compute {expression}",
            "answer": str(value),
            "gold_cot": " ".join(steps),
            "task": self.name,
            "expression": expression,
        }
        if self.hasty_rate > 0:  # drawn last: the questions are those of the clean stream
            hasty = rng.random() < self.hasty_rate
            if hasty:
                scale = 10**self.max_digits
                example |= {"answer": str(rng.randint(-scale, 2 * scale)), "gold_cot": ""}
            example["hasty"] = hasty
        if self.worded and example["gold_cot"]:
            example["gold_cot"] = _english_steps(steps)
        if self.language != "en":  # drawn after the rest: the same questions in every language
            language = rng.choice(("en", "zh")) if self.language == "mixed" else self.language
            example["language"] = language
            cot_language = language
            if self.switch_rate:  # its own draw: the questions are those of the other knobs
                switch = task_rng(f"{self.name}/switch", seed, index).random() < self.switch_rate
                cot_language = {"en": "zh", "zh": "en"}[language] if switch else language
            if language == "zh":
                example["prompt"] = f"计算 {expression}"
            if example["gold_cot"]:
                english = _english_steps(steps) if self.worded else " ".join(steps)
                example["gold_cot"] = _chinese_steps(steps) if cot_language == "zh" else english
        if self.reward_route:  # its own draw: the examples are those of the other knobs
            route = self.reward_route
            if route == "mixed":
                route = task_rng(f"{self.name}/route", seed, index).choice(("rules", "model"))
            example["reward"] = route
        return example


def _english_steps(steps: list[str]) -> str:
    """The worked steps with words: "First a * b = c. Then ... Finally ..."."""
    if len(steps) == 1:
        return "So " + steps[0]
    words = ["First "] + ["Then "] * (len(steps) - 2) + ["Finally "]
    return " ".join(w + step for w, step in zip(words, steps, strict=True))


def _chinese_steps(steps: list[str]) -> str:
    """The worked steps in Chinese: "先算 a * b = c。再算 ...。最后算 ...。"."""
    steps = [step.rstrip(".") + "。" for step in steps]
    if len(steps) == 1:
        return "直接算 " + steps[0]
    words = ["先算 "] + ["再算 "] * (len(steps) - 2) + ["最后算 "]
    return "".join(w + step for w, step in zip(words, steps, strict=True))


def _solve_steps(nums: list[int], ops: list[str]) -> tuple[list[str], int]:
    """Evaluate with precedence, one ``"a op b = c."`` step per operation."""
    nums, ops, steps = list(nums), list(ops), []
    i = 0
    while i < len(ops):  # multiplications first, left to right
        if ops[i] == "*":
            a, b = nums[i], nums[i + 1]
            steps.append(f"{a} * {b} = {a * b}.")
            nums[i : i + 2] = [a * b]
            del ops[i]
        else:
            i += 1
    value = nums[0]
    for op, b in zip(ops, nums[1:], strict=True):
        new = value + b if op == "+" else value - b
        steps.append(f"{value} {op} {b} = {new}.")
        value = new
    if not steps:  # pragma: no cover - n >= 2 always gives one step
        steps.append(f"{value}.")
    return steps, value
