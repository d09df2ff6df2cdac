"""Batch tokenised RL prompts: left-padded to the smallest length bucket that fits the batch.

Output batch::

    prompt_tokens   int32[B, P]   left-padded with pad_id; P is one of the buckets
    prompt_mask     int32[B, P]   1 on real prompt tokens
    prompt_lengths  int32[B]
    valid           bool[B]       False only on filler rows of a final short batch
    prompts         list[str]     the templated prompt texts (B entries; "" for filler rows)
    fields          dict[str, list]  every record field (prompt, answer, task, numbers, target,
                                  _origin, ...) as a list of B values (None where absent) —
                                  pass them to the rewards as ``reward(prompts, completions,
                                  **fields)`` after repeating each entry G times
    stats           dict[str, int]   this batch only: examples, dropped_too_long

Left padding puts every prompt's last token at column P-1, so decoding starts at the same index
for the whole batch; the sampler derives positions from ``prompt_mask`` (cumsum - 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from r1jax.data.packing import take_kept

# Prompt-length buckets (each compiles once): the RL batches' default (``PROMPT_BUCKETS``, from
# ``config.data.buckets``), whose largest is also their prompt-length limit, and the sampler's
# default (any prompt an evaluation may bring).
SAMPLER_BUCKETS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


class PromptBatchIterDataset(grain.IterDataset):
    """Groups ``{"prompt_tokens", "prompt_text", "record"}`` elements into bucketed batches."""

    def __init__(
        self,
        parent: grain.IterDataset,
        *,
        batch_size: int,
        buckets: tuple[int, ...],
        pad_id: int,
        drop_remainder: bool = True,
    ):
        super().__init__(parent)
        if batch_size < 1 or not buckets or sorted(buckets) != list(buckets):
            raise ValueError(
                f"need batch_size >= 1 and increasing buckets, got {batch_size}, {buckets}"
            )
        self.config = dict(
            batch_size=batch_size,
            buckets=tuple(buckets),
            pad_id=pad_id,
            drop_remainder=drop_remainder,
        )

    def __iter__(self) -> _PromptBatchIterator:
        return _PromptBatchIterator(self._parent.__iter__(), **self.config)

    def __str__(self) -> str:
        return f"PromptBatchIterDataset({self.config})"


class _PromptBatchIterator(grain.DatasetIterator):
    def __init__(self, parent, *, batch_size, buckets, pad_id, drop_remainder):
        super().__init__(parent)
        self.B, self.buckets, self.pad_id = batch_size, buckets, pad_id
        self.drop_remainder = drop_remainder
        self.totals = {"examples": 0, "dropped_too_long": 0, "batches": 0}

    def get_state(self) -> dict[str, Any]:
        # Batches are cut exactly after their last element, so the parent state is exact.
        return {"parent": self._parent.get_state(), "totals": dict(self.totals)}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self.totals = dict(state["totals"])

    def __next__(self) -> dict[str, Any]:
        limit = f"the largest bucket ({max(self.buckets)} tokens)"
        elements, dropped = take_kept(self._parent, self.B, limit)
        self.totals["dropped_too_long"] += dropped
        if not elements or (len(elements) < self.B and self.drop_remainder):
            raise StopIteration
        self.totals["examples"] += len(elements)
        self.totals["batches"] += 1
        batch = assemble_prompt_batch(elements, self.B, self.buckets, self.pad_id)
        batch["stats"] = {"examples": len(elements), "dropped_too_long": dropped}
        return batch


def bucket_length(n: int, buckets: Sequence[int], *, extend: bool = False) -> int:
    """The smallest of ``buckets`` >= ``n``. Beyond the largest: a ``ValueError`` (the RL batches
    hold only prompts that fit), or with ``extend`` the next multiple of the largest (the
    sampler takes prompts of any length)."""
    for b in sorted(buckets):
        if n <= b:
            return b
    top = max(buckets)
    if not extend:
        raise ValueError(f"length {n} exceeds the largest bucket {top}")
    return -(-n // top) * top


def assemble_prompt_batch(
    elements: list[dict[str, Any]], batch_size: int, buckets: tuple[int, ...], pad_id: int
) -> dict[str, Any]:
    """Left-pad ``elements`` (≤ batch_size) into one bucketed batch; see the module docstring."""
    lengths = np.zeros(batch_size, dtype=np.int32)
    lengths[: len(elements)] = [len(e["prompt_tokens"]) for e in elements]
    width = bucket_length(int(lengths.max()), buckets)
    tokens = np.full((batch_size, width), pad_id, dtype=np.int32)
    mask = np.zeros((batch_size, width), dtype=np.int32)
    for i, e in enumerate(elements):
        n = lengths[i]
        if n:
            tokens[i, width - n :] = e["prompt_tokens"]
            mask[i, width - n :] = 1
    keys: list[str] = []
    for e in elements:
        keys.extend(k for k in e["record"] if k not in keys)
    filler = batch_size - len(elements)
    fields = {k: [e["record"].get(k) for e in elements] + [None] * filler for k in keys}
    return {
        "prompt_tokens": tokens,
        "prompt_mask": mask,
        "prompt_lengths": lengths,
        "valid": np.arange(batch_size) < len(elements),
        "prompts": [e["prompt_text"] for e in elements] + [""] * filler,
        "fields": fields,
    }
