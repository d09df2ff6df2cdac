"""``PreemptionGuard``: SIGTERM becomes a flag the train loops poll between steps.

When ``guard.stop`` turns True the loop saves a checkpoint synchronously
(``Checkpointer.save(..., force=True)`` + ``wait()``) and raises ``Preempted``, so a preempted
run resumes from the step it reached; nothing after the loop runs (a recipe stage is not marked
done) and ``r1jax`` exits with ``EXIT_CODE`` (128 + SIGTERM), which schedulers read as a failure
to retry (a GKE Job, a SLURM requeue), not as a finished run.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

EXIT_CODE = 143


class Preempted(Exception):
    """The run stopped on SIGTERM after saving a checkpoint at ``step``: run the same command
    again to resume."""

    def __init__(self, step: int):
        super().__init__(f"preempted: checkpoint saved at step {step}; rerun to resume")
        self.step = step


class PreemptionGuard:
    """SIGTERM -> ``stop`` becomes True (the loop saves and exits); a context manager.

    With several processes, ``stop`` is agreed across them (any process signalled stops all)
    so that they reach the same final checkpoint step together.
    """

    def __init__(self, signals=(signal.SIGTERM,)):
        self._signals = signals
        self._flag = threading.Event()
        self._previous = {}

    def __enter__(self) -> PreemptionGuard:
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self._flag.set()

    def request(self) -> None:
        """Asks for a stop as SIGTERM would (tests, eval-triggered early stop)."""
        self._flag.set()

    @property
    def stop(self) -> bool:
        flag = self._flag.is_set()
        if jax.process_count() == 1:
            return flag
        from jax.experimental import multihost_utils

        return bool(np.any(multihost_utils.process_allgather(np.asarray([flag]))))
