"""A hard, process-level time limit for one call: a persistent worker that is killed on time-out.

`call_with_hard_limit(fn, *args, timeout=...)` runs ``fn(*args)`` in a small persistent worker
process and waits at most `timeout` seconds for the answer. A worker past its limit is killed
(SIGKILL) and a replacement is started at once, so the next call finds it (almost) ready; nothing
``fn`` does (a long C call in sympy, a huge integer, a deep recursion) can hang the caller. The
answer is a `HardLimitResult`: status ``"ok"`` (with the value), ``"timeout"``, ``"error"`` (``fn``
raised or the worker died) or ``"unavailable"`` (no worker can be started here).

Workers start with the ``forkserver`` method (safe in a trainer whose JAX runtime holds threads)
and import `PRELOAD` (sympy, math-verify) once, before they report ready; when this module is the
first to start the process's fork server, the server preloads them too, so a replacement is
ready in milliseconds. The first call of a process also waits (up to `STARTUP_TIMEOUT` seconds,
not counted in `timeout`) for the first worker to start; `warm_up()` starts it ahead of time.

Where no child process may be started, isolation is off and callers run in-process
(`isolation_available` says which): daemonic processes may not have children, which is the case
of `r1jax.rewards.pool.RewardPool` workers. Those are already hard-limited: the pool kills a worker
whose job runs past its deadline. The worker of this module is per process and thread-safe (one
call at a time); incidents the function records in the worker are recorded in the caller too.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from r1jax.rewards import incidents

PRELOAD = ("r1jax.rewards.equivalence", "sympy", "math_verify", "latex2sympy2_extended")
STARTUP_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class HardLimitResult:
    """The outcome of one call: status ``ok`` | ``timeout`` | ``error`` | ``unavailable``."""

    status: str
    value: Any = None


def _worker_main(conn, preload: tuple[str, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle.
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing optional module fails the call, not the boot.
            pass
    conn.send(("ready", None, None, None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        call_id, fn, args = message
        try:
            answer = (call_id, "ok", fn(*args), incidents.drain())
        except Exception:  # noqa: BLE001 - reported to the caller as an error.
            answer = (call_id, "error", None, incidents.drain())
        conn.send(answer)


def isolation_available() -> bool:
    """Whether this process may start the worker (daemonic processes may have no children)."""
    return not mp.current_process().daemon and "forkserver" in mp.get_all_start_methods()


class _Worker:
    def __init__(self, ctx):
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, PRELOAD), daemon=True)
        self.process.start()
        child_conn.close()
        self.ready = False

    def wait_ready(self, timeout: float) -> bool:
        if not self.ready and self.conn.poll(timeout):
            self.ready = self.conn.recv()[0] == "ready"
        return self.ready

    def stop(self) -> None:
        self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()


class HardLimiter:
    """One persistent worker process; `call` runs a function in it under a hard time limit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._ids = itertools.count()
        self._pid = os.getpid()

    def _ctx(self):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["r1jax.rewards", *PRELOAD])  # No effect once it runs.
        return ctx

    def _ensure(self) -> _Worker:
        if self._pid != os.getpid():  # A forked copy must not share its parent's worker.
            self._worker, self._pid = None, os.getpid()
        if self._worker is None or not self._worker.process.is_alive():
            if self._worker is not None:
                self._worker.stop()
            self._worker = _Worker(self._ctx())
        return self._worker

    def _replace(self) -> None:
        if self._worker is not None:
            self._worker.stop()
        self._worker = None
        try:
            self._worker = _Worker(self._ctx())  # Boots while the caller goes on.
        except Exception:  # noqa: BLE001 - the next call tries again.
            self._worker = None

    def warm_up(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Starts the worker and waits until it is ready; False if it could not be started."""
        if not isolation_available():
            return False
        with self._lock:
            try:
                return self._ensure().wait_ready(timeout)
            except Exception:  # noqa: BLE001
                return False

    def call(self, fn: Callable[..., Any], *args, timeout: float) -> HardLimitResult:
        """Runs ``fn(*args)`` in the worker; waits at most `timeout` s for it (see module doc)."""
        if not isolation_available():
            return HardLimitResult("unavailable")
        with self._lock:
            try:
                worker = self._ensure()
                if not worker.wait_ready(STARTUP_TIMEOUT):
                    self._replace()
                    return HardLimitResult("unavailable")
                call_id = next(self._ids)
                deadline = time.monotonic() + timeout
                worker.conn.send((call_id, fn, args))
                while worker.conn.poll(max(0.0, deadline - time.monotonic())):
                    answer_id, status, value, counts = worker.conn.recv()
                    if answer_id == call_id:
                        for kind, n in (counts or {}).items():
                            incidents.record(kind, n)
                        return HardLimitResult(status, value)
            except (EOFError, OSError, BrokenPipeError):
                self._replace()
                return HardLimitResult("error")
            self._replace()  # Past the deadline: kill it, whatever it is doing.
            return HardLimitResult("timeout")

    def close(self) -> None:
        """Stops the worker (idempotent); a later call starts a new one."""
        with self._lock:
            if self._worker is not None and self._pid == os.getpid():
                try:
                    self._worker.conn.send(None)
                except OSError:
                    pass
                self._worker.stop()
            self._worker = None


_LIMITER = HardLimiter()


def call_with_hard_limit(fn: Callable[..., Any], *args, timeout: float) -> HardLimitResult:
    """Runs picklable ``fn(*args)`` in this process's worker under a hard `timeout` (seconds)."""
    return _LIMITER.call(fn, *args, timeout=timeout)


def warm_up(timeout: float = STARTUP_TIMEOUT) -> bool:
    """Starts this process's worker ahead of the first call; True once it is ready."""
    return _LIMITER.warm_up(timeout)


def shutdown() -> None:
    """Stops this process's worker (a later call starts a new one)."""
    _LIMITER.close()
