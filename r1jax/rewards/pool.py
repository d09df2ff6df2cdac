"""A process pool that evaluates reward items with a hard per-item time limit.

Each job is one (component, item) pair. Workers take small chunks of jobs and answer job by job;
the parent keeps a deadline for the job each worker is on. A worker past its deadline is killed
(SIGKILL) and replaced, its job scored as a time-out and the rest of its chunk re-queued; a
worker that dies is replaced the same way and its job counted as an error. Nothing a job does
can raise into, or hang, the caller: `RewardPool.run` always returns one `Outcome` per job.

Workers start with the ``forkserver`` method by default: safe in a trainer whose JAX runtime
holds threads (``fork`` is not), and a replacement starts in milliseconds from the warm server.
``num_workers=0`` runs jobs inline in the caller (no hard limit), for notebooks and debugging.

Warm-up: a component may name modules to import in the fork server (``preload``, e.g. sympy for
the accuracy reward) and a ``warm_up()`` method; a new worker runs every ``warm_up`` before it
takes jobs, and the parent waits for it (up to `WARM_UP_TIMEOUT`) before any deadline starts.
Without this a cold worker spent its first jobs' time limits importing the math engine and
scored correct answers 0.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing as mp
import signal
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait

from r1jax.rewards import incidents

RewardFn = Callable[..., list[float]]

WARM_UP_TIMEOUT = 60.0
"""Seconds a new worker may take to warm its components up before it serves jobs."""


@dataclasses.dataclass(frozen=True)
class Job:
    """One reward component on one item."""

    component: int
    prompt: str
    completion: str
    fields: dict
    timeout: float


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A job's score (None unless status is "ok"), status and the incidents it recorded."""

    score: float | None
    status: str  # "ok" | "timeout" | "error"
    incidents: dict


def evaluate_job(components: Sequence[RewardFn], job: Job) -> Outcome:
    """Runs one job in this process; exceptions and non-finite scores become errors."""
    try:
        fields = {k: [v] for k, v in job.fields.items()}
        scores = components[job.component]([job.prompt], [job.completion], **fields)
        score = float(scores[0])
        if len(scores) != 1 or not math.isfinite(score):
            raise ValueError(f"reward returned {scores!r} for one item")
        return Outcome(score, "ok", incidents.drain())
    except Exception:  # noqa: BLE001 - a reward must never raise into the trainer.
        return Outcome(None, "error", incidents.drain())


def warm_up_components(components: Sequence[RewardFn]) -> None:
    """Runs each component's ``warm_up()`` (imports, grammars), if it has one; never raises."""
    for component in components:
        warm_up = getattr(component, "warm_up", None)
        if callable(warm_up):
            try:
                warm_up()
            except Exception:  # noqa: BLE001 - a failed warm-up only costs the first job time.
                incidents.record("warm_up_error")


def _worker_main(conn, components: Sequence[RewardFn]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle.
    warm_up_components(components)
    incidents.drain()
    conn.send("ready")
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for job_id, job in chunk:
            conn.send((job_id, evaluate_job(components, job)))


@dataclasses.dataclass
class _Worker:
    process: mp.process.BaseProcess
    conn: object
    pending: collections.deque = dataclasses.field(default_factory=collections.deque)
    deadline: float = math.inf


class RewardPool:
    """Persistent worker processes for a fixed list of reward components."""

    def __init__(
        self,
        components: Sequence[RewardFn],
        *,
        num_workers: int = 2,
        chunk_size: int = 8,
        start_method: str = "forkserver",
    ):
        self.components = tuple(components)
        self.num_workers = num_workers
        self.chunk_size = max(1, chunk_size)
        self._ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            extra = [m for c in self.components for m in getattr(c, "preload", ())]
            self._ctx.set_forkserver_preload(["r1jax.rewards", *dict.fromkeys(extra)])
        self._workers: list[_Worker] = []

    def _spawn(self, count: int = 1) -> list[_Worker]:
        """Starts ``count`` workers and waits until each has warmed up (module doc)."""
        workers = []
        for _ in range(count):
            parent_conn, child_conn = self._ctx.Pipe(duplex=True)
            process = self._ctx.Process(
                target=_worker_main, args=(child_conn, self.components), daemon=True
            )
            process.start()
            child_conn.close()
            workers.append(_Worker(process, parent_conn))
        deadline = time.monotonic() + WARM_UP_TIMEOUT
        for worker in workers:
            left = max(0.0, deadline - time.monotonic())
            if not worker.conn.poll(left) or worker.conn.recv() != "ready":
                for w in workers:
                    self._stop(w)
                raise RuntimeError(f"a reward worker did not warm up within {WARM_UP_TIMEOUT} s")
        return workers

    @staticmethod
    def _stop(worker: _Worker) -> None:
        worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        """Evaluates every job; returns their outcomes in order. Never raises."""
        if self.num_workers <= 0:
            return [evaluate_job(self.components, job) for job in jobs]
        outcomes: list[Outcome | None] = [None] * len(jobs)
        queue = collections.deque(enumerate(jobs))
        try:
            self._workers += self._spawn(self.num_workers - len(self._workers))
            self._loop(jobs, queue, outcomes)
        except Exception:  # noqa: BLE001 - the pool itself failed; score what is left.
            incidents.record("pool_error")
            self.close()
        return [o if o is not None else Outcome(None, "error", {}) for o in outcomes]

    def _replace(self, worker: _Worker, status: str, jobs, queue, outcomes) -> None:
        job_id = worker.pending.popleft()
        outcomes[job_id] = Outcome(None, status, {})
        queue.extendleft(reversed([(i, jobs[i]) for i in worker.pending]))
        self._stop(worker)
        self._workers[self._workers.index(worker)] = self._spawn()[0]

    def _loop(self, jobs, queue, outcomes) -> None:
        while queue or any(w.pending for w in self._workers):
            now = time.monotonic()
            for worker in self._workers:
                if not worker.pending and queue:
                    chunk = [queue.popleft() for _ in range(min(self.chunk_size, len(queue)))]
                    worker.pending.extend(i for i, _ in chunk)
                    worker.deadline = now + jobs[chunk[0][0]].timeout
                    worker.conn.send(chunk)
            busy = [w for w in self._workers if w.pending]
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy], timeout=timeout))
            for worker in busy:
                if worker.conn in ready:
                    try:
                        while worker.pending and worker.conn.poll():
                            job_id, outcome = worker.conn.recv()
                            if job_id != worker.pending[0]:
                                raise OSError("worker answered out of order")
                            worker.pending.popleft()
                            outcomes[job_id] = outcome
                            if worker.pending:
                                worker.deadline = time.monotonic() + jobs[worker.pending[0]].timeout
                    except (EOFError, OSError):
                        self._replace(worker, "error", jobs, queue, outcomes)
                        continue
                if worker.pending and time.monotonic() > worker.deadline:
                    self._replace(worker, "timeout", jobs, queue, outcomes)

    def close(self) -> None:
        """Stops every worker (idempotent)."""
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except OSError:
                pass
            self._stop(worker)
        self._workers = []

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown.
            pass
