"""Metrics out of the train loop: JSONL + TensorBoard on process 0, and a tqdm progress bar.

Shared by the SFT, distillation and GRPO loops::

    with MetricsWriter(workdir) as writer, Progress(total, initial=step, keys=("loss",)) as bar:
        writer.write(step, {"loss": 1.2, "learning_rate": 3e-4})   # JSONL line + TB scalars
        bar.update(step, metrics)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax
import numpy as np


def to_scalars(metrics: Mapping) -> dict[str, float]:
    """Flattens device/NumPy/Python scalars to ``{name: float}``; non-scalars are dropped."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            out |= {f"{key}/{k}": v for k, v in to_scalars(value).items()}
            continue
        array = np.asarray(jax.device_get(value))
        if array.size == 1 and array.dtype.kind in "biuf":
            out[key] = float(array.reshape(()))
    return out


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):  # a line cut by the kill: from after the save
        return 1 << 62


class MetricsWriter:
    """Appends ``{"step": s, **metrics}`` lines to ``<workdir>/metrics.jsonl`` and writes the same
    scalars to TensorBoard (``<workdir>/tb``). A no-op on processes other than 0.

    Appending makes a resumed run continue the same file; floats are written with ``repr``
    precision, so two runs' lines can be compared exactly. ``after_step``: the step a run
    resumes at; lines of later steps (written after that checkpoint by a run that was then
    killed) are dropped first, so the steps it redoes are not in the file twice.
    """

    def __init__(
        self, workdir: str | os.PathLike, *, tensorboard: bool = True, after_step: int | None = None
    ):
        self.enabled = jax.process_index() == 0
        self._file = self._tb = None
        if not self.enabled:
            return
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.path = workdir / "metrics.jsonl"
        if after_step is not None and self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            kept = [line for line in lines if _step_of(line) <= after_step]
            if len(kept) < len(lines):
                self.path.write_text("".join(kept))
        self._file = open(self.path, "a")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(workdir / "tb"))

    def write(self, step: int, metrics: Mapping) -> dict[str, float]:
        """Writes one record; returns the flattened scalars."""
        scalars = to_scalars(metrics)
        if not self.enabled:
            return scalars
        line = {
            "step": int(step),
            **{k: v if math.isfinite(v) else str(v) for k, v in scalars.items()},
        }
        self._file.write(json.dumps(line) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, int(step))
        return scalars

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl`` file, in order."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class Progress:
    """A tqdm bar over train steps showing ``keys`` of the latest metrics (process 0 only)."""

    def __init__(
        self,
        total: int,
        *,
        initial: int = 0,
        keys: Sequence[str] = ("loss", "learning_rate"),
        desc: str = "train",
    ):
        from tqdm.auto import tqdm

        self.keys = tuple(keys)
        self._bar = tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=jax.process_index() != 0,
            dynamic_ncols=True,
        )
        self._last = initial

    def update(self, step: int, scalars: Mapping[str, float] | None = None) -> None:
        self._bar.update(max(int(step) - self._last, 0))
        self._last = int(step)
        if scalars:
            shown = {k: f"{scalars[k]:.4g}" for k in self.keys if k in scalars}
            self._bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
