"""The task interface, the task registry, and a task as an (infinite) grain ``MapDataset``.

A task is a frozen dataclass of difficulty knobs. ``task.example(index, seed=s)`` is a pure
function of ``(knobs, seed, index)``: random access, so grain can shuffle, shard and resume it
exactly, and the stream is infinite (any non-negative index is valid).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from typing import Any, ClassVar, Protocol

import grain


class Task(Protocol):
    """What every built-in task provides."""

    name: ClassVar[str]
    rewards: ClassVar[tuple[str, ...]]
    """Names of the reward functions (rewards registry) that score this task, e.g. accuracy."""

    def example(self, index: int, *, seed: int = 0) -> dict[str, Any]:
        """``{"prompt", "answer", "gold_cot", "task", ...}`` for one index; deterministic."""
        ...


def task_rng(name: str, seed: int, index: int) -> random.Random:
    """A generator that depends only on (task, seed, index): stable across runs and processes."""
    if index < 0:
        raise IndexError(f"task example index must be >= 0, got {index}")
    return random.Random(f"{name}/{seed}/{index}")


def iter_examples(task: Task, seed: int = 0, start: int = 0) -> Iterator[dict[str, Any]]:
    """The infinite stream ``task.example(start), task.example(start + 1), ...``."""
    index = start
    while True:
        yield task.example(index, seed=seed)
        index += 1


class TaskDataset(grain.MapDataset):
    """``task`` as a grain ``MapDataset``: infinite unless ``num_examples`` is given.

    Each record is the task example plus ``_origin = "task:<name>/<seed>#<index>"``.
    """

    def __init__(self, task: Task, *, seed: int = 0, num_examples: int | None = None):
        super().__init__()
        self._task = task
        self._seed = seed
        self._len = sys.maxsize if num_examples is None else int(num_examples)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        index = int(index) % self._len
        record = self._task.example(index, seed=self._seed)
        record["_origin"] = f"task:{self._task.name}/{self._seed}#{index}"
        return record

    def __str__(self) -> str:
        return f"TaskDataset({self._task!r}, seed={self._seed})"


_REGISTRY: dict[str, type] = {}


def register_task(cls: type) -> type:
    """Class decorator: make ``cls`` available to :func:`get_task` under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls


def get_task(name: str, **knobs: Any) -> Task:
    """A task by registry name with knobs, e.g. ``get_task("countdown", num_numbers=4)``."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown task {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name](**knobs)


def task_names() -> list[str]:
    return sorted(_REGISTRY)
