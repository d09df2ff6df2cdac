"""Preference-pair batches for a reward model: right-padded chosen and rejected rows.

    ds = make_preference_dataset(get_task("arithmetic_preferences"), tok, batch_size=8,
                                 seq_len=128)
    batch = next(iter(ds))

Batch (B pairs, T = ``seq_len``)::

    chosen_tokens, rejected_tokens   int32 [B, T]  template(prompt) + response + EOS, then pad
    chosen_last, rejected_last       int32 [B]     index of each row's last real token (the EOS)
    pair_mask                        int32 [B]     0 on the filler pairs of a final short batch
    kinds                            list[str]     each record's ``kind`` ("" when absent)
    stats                            dict[str, int] this batch: pairs, dropped_too_long

Records are ``{prompt, chosen, rejected}`` JSONL/Parquet rows (``formats``: a missing, empty or
non-string field, or ``chosen == rejected``, is a ``DataError`` naming file, line and field) or
a built-in task that yields them. A pair whose longer side exceeds ``seq_len`` is skipped and
counted, or with ``on_too_long="raise"`` an error naming the row. The order is the SFT
pipeline's (one global order, this data shard's contiguous block of every batch, exact resume
from ``get_state``).
"""

from __future__ import annotations

from typing import Any

import grain
import numpy as np

from r1jax.data.errors import DataError, check_choice
from r1jax.data.packing import DROPPED, take_kept
from r1jax.data.pipeline import (
    Source,
    TakeRows,
    Template,
    as_record_dataset,
    check_shard,
    finish_pipeline,
    global_order,
)
from r1jax.data.templates import PromptFormatter, encode_prompt
from r1jax.data.tokenizer import Tokenizer

SIDES = ("chosen", "rejected")


class PreferenceExample:
    """Record -> ``{"chosen": int32 [n], "rejected": int32 [m], "kind"}`` or a drop marker."""

    def __init__(
        self, tokenizer: Tokenizer, template: Template, seq_len: int, on_too_long: str, add_bos
    ):
        if tokenizer.eos_id is None:
            raise ValueError(f"{tokenizer!r} has no eos token: a reward model reads the EOS row")
        self.tokenizer, self.seq_len, self.add_bos = tokenizer, seq_len, add_bos
        self.on_too_long = check_choice("on_too_long (preference)", on_too_long, ("raise", "skip"))
        self.formatter = PromptFormatter(template, tokenizer)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        origin = record.get("_origin")
        prompt = encode_prompt(self.tokenizer, self.formatter(record), add_bos=self.add_bos)
        out = {"kind": str(record.get("kind") or ""), "_origin": origin}
        for side in SIDES:
            if not isinstance(record.get(side), str):
                raise DataError("missing: not a preference pair", origin=origin, field=side)
            ids = prompt + self.tokenizer.encode(record[side]) + [self.tokenizer.eos_id]
            if len(ids) > self.seq_len:
                if self.on_too_long == "raise":
                    raise DataError(
                        f"prompt + response is {len(ids)} tokens, over seq_len {self.seq_len}; "
                        "raise config.train.seq_len or pass on_too_long='skip'",
                        origin=origin,
                        field=side,
                    )
                return {DROPPED: "too_long", "_origin": origin}
            out[side] = np.asarray(ids, np.int32)
        return out


class PreferenceBatchIterDataset(grain.IterDataset):
    """Groups ``PreferenceExample`` elements into fixed-shape batches (module docstring)."""

    def __init__(self, parent, *, batch_size: int, seq_len: int, pad_id: int, drop_remainder):
        super().__init__(parent)
        self.config = dict(
            batch_size=batch_size, seq_len=seq_len, pad_id=pad_id, drop_remainder=drop_remainder
        )

    def __iter__(self):
        return _PreferenceBatchIterator(self._parent.__iter__(), **self.config)


class _PreferenceBatchIterator(grain.DatasetIterator):
    def __init__(self, parent, *, batch_size, seq_len, pad_id, drop_remainder):
        super().__init__(parent)
        self.B, self.T, self.pad_id, self.drop_remainder = (
            batch_size,
            seq_len,
            pad_id,
            drop_remainder,
        )

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state()}  # batches end right after their last pair

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])

    def __next__(self) -> dict[str, Any]:
        pairs, dropped = take_kept(self._parent, self.B, f"seq_len ({self.T} tokens)")
        if not pairs or (len(pairs) < self.B and self.drop_remainder):
            raise StopIteration
        batch = assemble_preference_batch(pairs, self.B, self.T, self.pad_id)
        batch["stats"] = {"pairs": len(pairs), "dropped_too_long": dropped}
        return batch


def assemble_preference_batch(
    pairs: list[dict[str, Any]], batch_size: int, seq_len: int, pad_id: int
) -> dict[str, Any]:
    """Right-pad ``pairs`` (<= batch_size) into one batch; see the module docstring."""
    batch: dict[str, Any] = {}
    for side in SIDES:
        tokens = np.full((batch_size, seq_len), pad_id, np.int32)
        last = np.zeros(batch_size, np.int32)
        for i, pair in enumerate(pairs):
            tokens[i, : len(pair[side])] = pair[side]
            last[i] = len(pair[side]) - 1
        batch[f"{side}_tokens"], batch[f"{side}_last"] = tokens, last
    batch["pair_mask"] = (np.arange(batch_size) < len(pairs)).astype(np.int32)
    batch["kinds"] = [p["kind"] for p in pairs] + [""] * (batch_size - len(pairs))
    return batch


def make_preference_dataset(
    source: Source,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seq_len: int,
    seed: int = 0,
    template: Template = "r1_zero",
    add_bos: bool = True,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    on_error: str = "raise",
    on_too_long: str = "skip",
    drop_remainder: bool = False,
    worker_count: int = 0,
    prefetch: int = 0,
) -> grain.IterDataset:
    """Preference batches of ``batch_size`` pairs (this data shard's ``B / shard_count`` rows);
    the options are ``make_sft_dataset``'s."""
    records = as_record_dataset(
        source, purpose="preference", seed=seed, fmt="preference", on_error=on_error
    )
    check_shard(batch_size, shard_index, shard_count)
    records = global_order(records, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    mapped = records.map(PreferenceExample(tokenizer, template, seq_len, on_too_long, add_bos))
    ds = PreferenceBatchIterDataset(
        mapped.to_iter_dataset(grain.ReadOptions(num_threads=0)),
        batch_size=batch_size,
        seq_len=seq_len,
        pad_id=tokenizer.pad_id,
        drop_remainder=drop_remainder,
    ).map(TakeRows(shard_index, shard_count))
    return finish_pipeline(ds, worker_count, prefetch)
