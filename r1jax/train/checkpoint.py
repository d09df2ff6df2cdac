"""Checkpoints with orbax-checkpoint: state arrays, data-iterator state and config, atomically.

Layout of ``<directory>/<step>/`` (one orbax ``CheckpointManager`` step, items)::

    params/     the model params            (sharded arrays, OCDBT/zarr)
    opt_state/  the optax state
    meta/       {"step", "rng", "skipped"}  (small arrays)
    frozen/     the frozen params, when the state has them (GRPO reference)
    data/       JSON: {"global": iterator state} (one state: every process walks the same
                global order, so it restores onto any process count)
    config/     JSON: the run's config

Atomicity: orbax writes each step into a temporary directory and renames it when complete, so a
crash (even SIGKILL) mid-save leaves only a temporary directory that ``latest_step`` ignores and
the next manager cleans up. Saves are asynchronous (the arrays are copied to host first, the train
loop continues); ``wait()`` blocks until the last one is on disk.

Restore onto any mesh: pass ``abstract_train_state(...)`` for the target mesh; each array is read
directly into its target sharding.

Preemption: ``PreemptionGuard`` turns SIGTERM into a flag the loop polls (``guard.stop``); the loop
then saves synchronously (``save(..., force=True)`` + ``wait()``) and exits.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from r1jax.train.state import TrainState

_ARRAY_ITEMS = ("params", "opt_state", "meta", "frozen")


class Checkpointer:
    """Save every ``save_every`` steps, keep the last ``keep``; async by default."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int = 1000,
        keep: int | None = 3,
        async_save: bool = True,
    ):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(
        self,
        state: TrainState,
        *,
        data_state: Any = None,
        config: dict | None = None,
        force: bool = False,
        include_frozen: bool = True,
    ) -> bool:
        """Saves ``state`` at ``int(state.step)`` if the interval says so (or ``force``).

        ``data_state``: the JSON-serialisable iterator state of the global data order (the same
        on every process; checked, since a difference would make the resume depend on which
        process's state is read). ``config``: a JSON-serialisable dict (e.g. ``config.to_dict()``).
        ``include_frozen=False`` skips ``state.frozen`` (a teacher loaded from elsewhere).
        Returns whether a save was started.
        """
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return False  # already saved (e.g. the interval save before a forced final one)
        if not force and not self._manager.should_save(step):
            return False
        items = {
            "params": ocp.args.StandardSave(state.params),
            "opt_state": ocp.args.StandardSave(state.opt_state),
            "meta": ocp.args.StandardSave(_meta(state)),
            "data": ocp.args.JsonSave({"global": agreed_data_state(data_state)}),
            "config": ocp.args.JsonSave(json.loads(json.dumps(config or {}, default=str))),
        }
        if state.frozen is not None and include_frozen:
            items["frozen"] = ocp.args.StandardSave(state.frozen)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(
        self, abstract_state: TrainState, step: int | None = None
    ) -> tuple[TrainState, Any, dict]:
        """(state, this process's data state or None, config dict) at ``step`` (default latest).

        ``abstract_state`` (from ``abstract_train_state``) gives the structure, dtypes and the
        target shardings; its ``frozen`` decides whether frozen params are restored.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {
            "params": ocp.args.StandardRestore(abstract_state.params),
            "opt_state": ocp.args.StandardRestore(abstract_state.opt_state),
            "meta": ocp.args.StandardRestore(_meta(abstract_state)),
            "data": ocp.args.JsonRestore(),
            "config": ocp.args.JsonRestore(),
        }
        if abstract_state.frozen is not None:
            items["frozen"] = ocp.args.StandardRestore(abstract_state.frozen)
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        meta = out["meta"]
        state = TrainState(
            step=meta["step"],
            params=out["params"],
            opt_state=out["opt_state"],
            rng=meta["rng"],
            skipped=meta["skipped"],
            frozen=out["frozen"] if abstract_state.frozen is not None else None,
        )
        return state, _global_data_state(out["data"] or {}, step), out["config"] or {}

    def restore_params(self, abstract_params, step: int | None = None, item: str = "params"):
        """Only the ``params`` (or ``frozen``) item, e.g. a distillation teacher from its run."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        args = ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract_params)})
        return self._manager.restore(step, args=args)[item]

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _meta(state: TrainState) -> dict:
    return {"step": state.step, "rng": state.rng, "skipped": state.skipped}


def agreed_data_state(local_state: Any) -> Any:
    """``local_state``, after checking that every process holds the same one (a collective
    when multi-process)."""
    if jax.process_count() == 1:
        return local_state
    from r1jax import multihost

    states = multihost.gather_objects(local_state)
    if any(s != states[0] for s in states):
        raise RuntimeError(
            "data iterator states differ between processes: every process must walk the same "
            "global order (build the pipelines with the global batch size and a data shard)"
        )
    return local_state


def _global_data_state(data: dict, step: int) -> Any:
    """The saved global iterator state; per-process states of older checkpoints only when one
    process wrote them (several processes' strided shards do not map onto the global order)."""
    if "global" in data:
        return data["global"]
    if set(data) == {"process_0"}:
        return data["process_0"]
    if not data:
        return None
    raise ValueError(
        f"checkpoint step {step}: data state written per process by an older r1jax "
        f"({sorted(data)}); the data position cannot be mapped onto the global order. Resume "
        "with a fresh data position by removing the step's data/ item, or restart the run"
    )


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
