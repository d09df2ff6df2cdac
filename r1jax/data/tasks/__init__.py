"""Built-in reasoning tasks: infinite, deterministic by seed, each naming its rewards."""

from r1jax.data.tasks.arithmetic import ArithmeticTask
from r1jax.data.tasks.base import (
    Task,
    TaskDataset,
    get_task,
    iter_examples,
    register_task,
    task_names,
)
from r1jax.data.tasks.countdown import CountdownTask
from r1jax.data.tasks.preferences import ArithmeticPreferenceTask

__all__ = [
    "ArithmeticPreferenceTask",
    "ArithmeticTask",
    "CountdownTask",
    "Task",
    "TaskDataset",
    "get_task",
    "iter_examples",
    "register_task",
    "task_names",
]
