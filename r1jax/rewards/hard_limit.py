"""A hard, process-level time limit for one call: a persistent worker that is killed on time-out.

`call_with_hard_limit(fn, *args, timeout=...)` runs ``fn(*args)`` in a persistent worker process
and waits at most `timeout` seconds for the answer. A worker past its limit is killed (SIGKILL),
so nothing ``fn`` does (a long C call in sympy, a huge integer, a deep recursion) can hang the
caller. The answer is a `HardLimitResult`: status ``"ok"`` (with the value), ``"timeout"``,
``"error"`` (``fn`` raised or the worker died) or ``"unavailable"`` (no worker can be started).

How: one *template* process per caller process, started with the ``forkserver`` method (safe in
a trainer whose JAX runtime holds threads), imports `PRELOAD` (sympy, math-verify) once and then
only forks workers: one at a time, each serving calls over the template's pipe until it is killed
or the caller goes away. The template runs no call itself, so it never hangs, and a replacement
worker (a plain ``os.fork`` of a warm, single-threaded process) is ready in milliseconds. A
worker's address space is capped at `MEMORY_LIMIT_BYTES` (a runaway allocation is an error). The
first call of a process waits (up to `STARTUP_TIMEOUT` seconds, not counted in `timeout`) for the
template to import sympy; `warm_up()` starts it ahead of time.

Where no child process may be started, isolation is off and callers run in-process
(`isolation_available` says which): daemonic processes may not have children, which is the case
of `r1jax.rewards.pool.RewardPool` workers. Those are already hard-limited: the pool kills a worker
whose job runs past its deadline. The limiter is per process and thread-safe (one call at a time);
incidents that ``fn`` records in the worker are recorded in the caller too.
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

PRELOAD = ("sympy", "math_verify", "latex2sympy2_extended", "r1jax.rewards.math_engine")
STARTUP_TIMEOUT = 60.0
MEMORY_LIMIT_BYTES = 4 << 30  # Address space of a worker: a runaway integer fails, not the host.


@dataclasses.dataclass(frozen=True)
class HardLimitResult:
    """The outcome of one call: status ``ok`` | ``timeout`` | ``error`` | ``unavailable``."""

    status: str
    value: Any = None


def _limit_memory() -> None:
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = (
            MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(hard, MEMORY_LIMIT_BYTES)
        )
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass


def _serve(conn) -> None:
    """A worker: announces its pid, then answers calls until the caller goes away."""
    _limit_memory()
    conn.send(("ready", os.getpid(), None, None))
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
        except (Exception, MemoryError):  # noqa: BLE001 - reported to the caller as an error.
            answer = (call_id, "error", None, incidents.drain())
        conn.send(answer)


def _template_main(conn, preload: tuple[str, ...]) -> None:
    """Imports `preload`, then forks one worker after another; ends when a worker ends cleanly."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's to handle.
    for name in preload:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing module fails the calls, not the template.
            pass
    while True:
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _serve(conn)
            except BaseException:  # noqa: BLE001 - the caller sees an error and a new worker.
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return  # The caller closed the pipe or said goodbye.


def isolation_available() -> bool:
    """Whether this process may start the worker (daemonic processes may have no children)."""
    return not mp.current_process().daemon and "forkserver" in mp.get_all_start_methods()


class HardLimiter:
    """One template process and its current worker; `call` runs a function under a hard limit."""

    def __init__(self):
        self._lock = threading.Lock()
        self._template = None
        self._conn = None
        self._worker_pid: int | None = None
        self._ids = itertools.count()
        self._pid = os.getpid()

    def _start_template(self) -> None:
        ctx = mp.get_context("forkserver")
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._template = ctx.Process(target=_template_main, args=(child_conn, PRELOAD), daemon=True)
        self._template.start()
        child_conn.close()
        self._worker_pid = None

    def _stop_template(self) -> None:
        if self._template is not None:
            self._template.kill()
            self._template.join(timeout=5)
            self._conn.close()
        self._template = self._conn = self._worker_pid = None

    def _ready(self, timeout: float) -> bool:
        """Waits for the current worker's hello (a fresh template or worker sends one)."""
        if self._pid != os.getpid():  # A forked copy must not share its parent's template.
            self._template = self._conn = self._worker_pid = None
            self._pid = os.getpid()
        if self._template is None or not self._template.is_alive():
            self._stop_template()
            self._start_template()
        deadline = time.monotonic() + timeout
        while self._worker_pid is None:
            if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                return False
            kind, pid, _, _ = self._conn.recv()
            if kind == "ready":
                self._worker_pid = pid
        return True

    def _kill_worker(self) -> None:
        if self._worker_pid is not None:
            try:
                os.kill(self._worker_pid, signal.SIGKILL)  # The template forks the next one.
            except ProcessLookupError:
                pass
        self._worker_pid = None

    def warm_up(self, timeout: float = STARTUP_TIMEOUT) -> bool:
        """Starts the template and waits for its first worker; False if that failed."""
        if not isolation_available():
            return False
        with self._lock:
            try:
                return self._ready(timeout)
            except Exception:  # noqa: BLE001
                self._stop_template()
                return False

    def call(self, fn: Callable[..., Any], *args, timeout: float) -> HardLimitResult:
        """Runs picklable ``fn(*args)`` in the worker; waits at most `timeout` s (module doc)."""
        if not isolation_available():
            return HardLimitResult("unavailable")
        with self._lock:
            try:
                if not self._ready(STARTUP_TIMEOUT):
                    self._stop_template()
                    return HardLimitResult("unavailable")
                call_id = next(self._ids)
                deadline = time.monotonic() + timeout
                self._conn.send((call_id, fn, args))
                while self._conn.poll(max(0.0, deadline - time.monotonic())):
                    answer_id, status, value, counts = self._conn.recv()
                    if answer_id == call_id:
                        for kind, n in (counts or {}).items():
                            incidents.record(kind, n)
                        return HardLimitResult(status, value)
                    if answer_id == "ready":  # The worker died and a new one said hello.
                        self._worker_pid = status
                        return HardLimitResult("error")
            except (EOFError, OSError):
                self._stop_template()
                return HardLimitResult("error")
            self._kill_worker()  # Past the deadline: kill it, whatever it is doing.
            return HardLimitResult("timeout")

    def close(self) -> None:
        """Stops the template and its worker (idempotent); a later call starts new ones."""
        with self._lock:
            if self._template is not None and self._pid == os.getpid():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
                self._kill_worker()
                self._stop_template()
            self._template = self._conn = self._worker_pid = None


_LIMITER = HardLimiter()


def call_with_hard_limit(fn: Callable[..., Any], *args, timeout: float) -> HardLimitResult:
    """Runs picklable ``fn(*args)`` in this process's worker under a hard `timeout` (seconds)."""
    return _LIMITER.call(fn, *args, timeout=timeout)


def warm_up(timeout: float = STARTUP_TIMEOUT) -> bool:
    """Starts this process's template and worker ahead of the first call; True once ready."""
    return _LIMITER.warm_up(timeout)


def shutdown() -> None:
    """Stops this process's template and worker (a later call starts new ones)."""
    _LIMITER.close()
