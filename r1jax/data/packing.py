"""Pack tokenised SFT examples into fixed ``[B, T]`` batches with segment ids and positions.

Output batch (all ``int32[B, T]``)::

    tokens       token ids, ``pad_id`` where ``segment_ids == 0``
    loss_mask    1 on tokens that carry loss (completion + eos), else 0
    segment_ids  0 = padding, 1..n = the n examples packed in the row, left to right
    positions    0, 1, ... restarting at 0 at the start of every segment

plus ``stats`` (Python ints for this batch only — sum them for totals; pop them before
``device_put``): ``examples``, ``tokens`` (non-padding), ``loss_tokens``, ``dropped_too_long``,
``truncated``.

Without splitting (the default) each example lands whole in the first row of the batch with
room for it (first fit); an example that fits in no row closes the batch and opens the next
one. With ``allow_split=True`` rows are filled back to back and an example may continue in the
next row (and the next batch) as a new segment with positions restarting at 0.

Resume is exact: the iterator state is the parent's state just before the first example of the
pending (not yet emitted) batch, plus how many of that example's tokens were already emitted;
restoring replays from there and rebuilds the same batches.
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from r1jax.data.errors import DataError
from r1jax.data.teacher_topk import TOPK_FIELDS

DROPPED = "_dropped"
"""Key of a placeholder element for an example dropped upstream (counted, never packed)."""

MAX_CONSECUTIVE_DROPS = 1000
"""An infinite source whose every example is too long would otherwise loop forever."""


def check_drop_streak(streak: int, limit: str) -> None:
    """Raises once ``streak`` consecutive examples were dropped as too long."""
    if streak >= MAX_CONSECUTIVE_DROPS:
        raise DataError(
            f"{streak} consecutive examples were dropped as longer than {limit}: nothing fits; "
            "raise the length limit (e.g. config.train.seq_len) or shorten the examples"
        )


def take_kept(parent, count: int, limit: str) -> tuple[list, int]:
    """Up to ``count`` elements of ``parent`` that are not drop markers, and how many markers
    were passed on the way (fewer elements at the end of the parent)."""
    kept, dropped, streak = [], 0, 0
    while len(kept) < count:
        try:
            element = next(parent)
        except StopIteration:
            break
        if DROPPED in element:
            dropped, streak = dropped + 1, streak + 1
            check_drop_streak(streak, limit)
        else:
            kept.append(element)
            streak = 0
    return kept, dropped


_STAT_KEYS = ("examples", "tokens", "loss_tokens", "dropped_too_long", "truncated", "batches")


class PackedBatchIterDataset(grain.IterDataset):
    """Packs ``{"tokens": int[T], "loss_mask": int[T]}`` elements into fixed-shape batches."""

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        batch_size: int,
        seq_len: int,
        pad_id: int = 0,
        pack: bool = True,
        allow_split: bool = False,
        drop_remainder: bool = False,
    ):
        super().__init__(parent)
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        if allow_split and not pack:
            raise ValueError("allow_split=True needs pack=True")
        self.config = dict(
            batch_size=batch_size,
            seq_len=seq_len,
            pad_id=pad_id,
            pack=pack,
            allow_split=allow_split,
            drop_remainder=drop_remainder,
        )

    def __iter__(self) -> _PackIterator:
        return _PackIterator(self._parent.__iter__(), **self.config)

    def __str__(self) -> str:
        return f"PackedBatchIterDataset({self.config})"


class _PackIterator(grain.DatasetIterator):
    def __init__(self, parent, *, batch_size, seq_len, pad_id, pack, allow_split, drop_remainder):
        super().__init__(parent)
        self.B, self.T, self.pad_id = batch_size, seq_len, pad_id
        self.pack, self.allow_split, self.drop_remainder = pack, allow_split, drop_remainder
        self._carry: tuple[dict, int] | None = None  # (element, tokens already emitted)
        self._carry_state: Any = None  # parent state just before the carried element
        self.totals = dict.fromkeys(_STAT_KEYS, 0)

    # -- state ------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        if self._carry is None:
            return {"parent": self._parent.get_state(), "offset": 0, "totals": dict(self.totals)}
        return {"parent": self._carry_state, "offset": self._carry[1], "totals": dict(self.totals)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self.totals = dict(state["totals"])
        self._carry = None
        if state["offset"]:  # re-read the example that was split across batches
            self._carry_state = state["parent"]
            self._carry = (next(self._parent), int(state["offset"]))

    # -- packing ----------------------------------------------------------------------------
    def __next__(self) -> dict[str, Any]:
        rows: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(self.B)]
        fill = [0] * self.B
        stats = dict.fromkeys(_STAT_KEYS, 0)
        pending = self._carry
        self._carry = None
        exhausted = False
        streak = 0
        while True:
            if pending is None:
                state_before = self._parent.get_state()
                try:
                    element = next(self._parent)
                except StopIteration:
                    exhausted = True
                    break
                if DROPPED in element:
                    stats["dropped_too_long"] += 1
                    streak += 1
                    check_drop_streak(streak, f"seq_len={self.T}")
                    continue
                streak = 0
                stats["truncated"] += int(element.get("_truncated", False))
                pending = (element, 0)
            else:
                state_before = self._carry_state
            leftover = self._place(pending, rows, fill, stats)
            if leftover is not None:  # the batch is full: carry the rest to the next batch
                self._carry, self._carry_state = leftover, state_before
                break
            pending = None
        if not any(rows) or (exhausted and self.drop_remainder):
            for key in ("dropped_too_long", "truncated"):
                self.totals[key] += stats[key]
            raise StopIteration
        stats["batches"] = 1
        for key, value in stats.items():
            self.totals[key] += value
        return {**self._assemble(rows), "stats": stats}

    def _place(self, pending, rows, fill, stats) -> tuple[dict, int] | None:
        """Put (part of) an element into the rows; return what did not fit, or None."""
        element, offset = pending
        tokens, loss_mask = element["tokens"], element["loss_mask"]
        extras = {k: element[k] for k in TOPK_FIELDS if k in element}
        n = len(tokens) - offset
        if not self.allow_split:
            if n > self.T:
                origin = element.get("_origin", "?")
                raise DataError(
                    f"example of {n} tokens > seq_len {self.T}", origin=origin, field="tokens"
                )
            for r in range(self.B):
                if fill[r] + n <= self.T and (self.pack or fill[r] == 0):
                    rows[r].append((tokens, loss_mask, extras))
                    fill[r] += n
                    stats["examples"] += 1
                    stats["tokens"] += n
                    stats["loss_tokens"] += int(loss_mask.sum())
                    return None
            return pending
        stats["examples"] += int(offset == 0)
        for r in range(self.B):
            while fill[r] < self.T and offset < len(tokens):
                take = min(self.T - fill[r], len(tokens) - offset)
                piece = slice(offset, offset + take)
                rows[r].append((tokens[piece], loss_mask[piece], _sliced(extras, piece)))
                fill[r] += take
                offset += take
                stats["tokens"] += take
                stats["loss_tokens"] += int(loss_mask[piece].sum())
            if offset == len(tokens):
                return None
        stats["examples"] -= int(pending[1] == 0 and offset == 0)
        return (element, offset)

    def _assemble(self, rows) -> dict[str, np.ndarray]:
        shape = (self.B, self.T)
        tokens = np.full(shape, self.pad_id, dtype=np.int32)
        loss_mask = np.zeros(shape, dtype=np.int32)
        segment_ids = np.zeros(shape, dtype=np.int32)
        positions = np.zeros(shape, dtype=np.int32)
        extras = _extra_arrays(rows, shape)
        for r, row in enumerate(rows):
            start = 0
            for seg, (t, m, x) in enumerate(row, start=1):
                end = start + len(t)
                tokens[r, start:end] = t
                loss_mask[r, start:end] = m
                segment_ids[r, start:end] = seg
                positions[r, start:end] = np.arange(len(t), dtype=np.int32)
                for key, value in x.items():
                    extras[key][r, start:end] = value
                start = end
        return {
            "tokens": tokens,
            "loss_mask": loss_mask,
            "segment_ids": segment_ids,
            "positions": positions,
            **extras,
        }


def _sliced(extras: dict[str, np.ndarray], piece: slice) -> dict[str, np.ndarray]:
    return {k: v[piece] for k, v in extras.items()}


def _extra_arrays(rows, shape) -> dict[str, np.ndarray]:
    """Zeroed ``[B, T, K]`` arrays for the per-token extras the examples carry (a teacher's
    top-k); every example of a batch must carry the same ones, with the same K."""
    found = {k: v for row in rows for _, _, x in row for k, v in x.items()}
    for row in rows:
        for _, _, x in row:
            if x.keys() != found.keys() or any(
                v.shape[1:] != found[k].shape[1:] for k, v in x.items()
            ):
                raise DataError("examples of one batch carry different teacher top-k fields or K")
    return {k: np.zeros((*shape, *v.shape[1:]), v.dtype) for k, v in found.items()}
