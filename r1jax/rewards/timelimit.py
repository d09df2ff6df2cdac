"""A soft, in-process time limit for pure-Python work (sympy parsing and simplification).

`soft_time_limit(seconds)` arms a real-time interval timer whose SIGALRM handler raises
`TimeoutError` inside the guarded block. It interrupts Python bytecode, not a single long C call,
so it is the first line of defence only: input guards keep C-level blow-ups (huge integer powers)
from starting, and the process pool (`r1jax.rewards.pool`) is the hard limit that kills a worker.
Signals can only be handled in the main thread; elsewhere the block runs unguarded.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator


def _raise_timeout(signum, frame):
    raise TimeoutError("soft time limit exceeded")


@contextlib.contextmanager
def soft_time_limit(seconds: float | None) -> Iterator[None]:
    """Raises `TimeoutError` in the block after `seconds` (main thread only; None: no limit)."""
    usable = (
        seconds is not None
        and seconds > 0
        and threading.current_thread() is threading.main_thread()
        and hasattr(signal, "setitimer")
    )
    if not usable:
        yield
        return
    start = time.monotonic()
    previous_handler = signal.signal(signal.SIGALRM, _raise_timeout)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer[0] > 0:  # Re-arm an enclosing limit, less the time spent here.
            remaining = max(previous_timer[0] - (time.monotonic() - start), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, previous_timer[1])
