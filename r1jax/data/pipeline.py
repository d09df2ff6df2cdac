"""grain pipelines: RL prompt batches and packed SFT batches in one global order, resumable.

Stages (both pipelines)::

    records (RecordSource over JSONL/Parquet, or TaskDataset)      MapDataset, random access
      -> shuffle(seed)  [finite sources; reshuffled every epoch]
      -> repeat(num_epochs)  [None = forever]
      -> map(template + tokenise + length check)
      -> to_iter_dataset
      -> PromptBatchIterDataset (RL) | PackedBatchIterDataset (SFT)   GLOBAL batches
      -> TakeRows(shard_index, shard_count)   this data shard's contiguous block of rows
      -> mp_prefetch(worker_count)  [optional worker processes]

Usage::

    ds = make_rl_dataset(get_task("countdown"), tok, batch_size=8, seed=0)
    it = iter(ds)
    batch = next(it)
    state = it.get_state()    # JSON-serialisable dict; store it in the checkpoint
    it.set_state(state)       # (or on a fresh iter(ds)) continues with exactly the next batch

One global order, whatever the number of processes: every process walks the same seeded order
of the whole source and builds the same global batches (skips, packing and filler rows decided
once, globally), then keeps the rows ``[index * B / count, (index + 1) * B / count)`` of its
data shard (``r1jax.multihost.data_shard``). Assembled on the mesh, those blocks are exactly
the batch one process would build alone, so a run gives the same result on 1 or N processes,
and the iterator state (the same on every process) restores onto any process count. The price
is that each process tokenises the whole global batch: host work per step that is small next to
the step itself. ``worker_count`` > 0 (no config sets it) hands the pipeline to grain's worker
processes, which split the order between them and each build their own batches: the batches
differ from the one-order batches (the same examples over whole epochs, each worker dropping
its own remainder), and an iterator state restores only with the same ``worker_count``, on
every process alike. Built-in tasks are
infinite and already random by index, so they are not shuffled; ``seed`` selects the stream.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from r1jax.config.schema import PROMPT_BUCKETS
from r1jax.data.batching import PromptBatchIterDataset
from r1jax.data.errors import DataError, OnError, OnTooLong, check_choice
from r1jax.data.formats import Purpose
from r1jax.data.packing import DROPPED, PackedBatchIterDataset
from r1jax.data.sources import RecordSource
from r1jax.data.tasks.base import Task, TaskDataset
from r1jax.data.teacher_topk import TOPK_FIELDS, stored_topk
from r1jax.data.templates import PromptFormatter, encode_prompt, format_completion, sft_tokens
from r1jax.data.tokenizer import Tokenizer

Source = grain.MapDataset | Task | str | os.PathLike | Sequence[str | os.PathLike]
Template = str | Callable[[dict[str, Any]], str]


def as_record_dataset(
    source: Source,
    *,
    purpose: Purpose,
    seed: int = 0,
    fmt: str = "auto",
    on_error: OnError = "raise",
) -> grain.MapDataset:
    """A MapDataset of normalised records from a MapDataset, a task, or file path(s)."""
    if isinstance(source, grain.MapDataset):
        return source
    if hasattr(source, "example") and hasattr(source, "rewards"):
        return TaskDataset(source, seed=seed)
    return RecordSource(source, fmt=fmt, purpose=purpose, on_error=on_error)


def global_order(
    records: grain.MapDataset, *, seed: int, shuffle: bool, num_epochs: int | None
) -> grain.MapDataset:
    """The run's one order of records: shuffled per epoch (finite sources) and repeated."""
    if len(records) < sys.maxsize:  # finite: shuffle and repeat; infinite streams are used as is
        if shuffle:
            records = records.shuffle(seed=seed % 2**32)
        if num_epochs != 1:
            records = records.repeat(num_epochs)
    return records


def check_shard(batch_size: int, shard_index: int, shard_count: int, what: str = "batch_size"):
    """Raises unless the global ``batch_size`` splits into ``shard_count`` equal blocks."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    if batch_size < 1 or batch_size % shard_count:
        raise ValueError(
            f"{what}={batch_size} (global) must be a positive multiple of the {shard_count} data "
            f"shards held by different processes; change {what} or the mesh"
        )


class TakeRows:
    """Global batch -> the rows ``[index * n, (index + 1) * n)`` of data shard ``index`` of
    ``count`` (n = B / count): arrays and lists along their first axis, ``fields`` per field;
    ``stats`` stay global (the same on every process)."""

    def __init__(self, shard_index: int, shard_count: int):
        self.index, self.count = shard_index, shard_count

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.count == 1:
            return batch
        return {k: v if k == "stats" else self._take(v) for k, v in batch.items()}

    def _take(self, value):
        if isinstance(value, dict):
            return {k: self._take(v) for k, v in value.items()}
        n = len(value) // self.count
        return value[self.index * n : (self.index + 1) * n]


class RLExample:
    """Record → ``{"prompt_tokens", "prompt_text", "record"}`` or a drop marker (picklable)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: Template,
        max_len: int,
        on_too_long: str,
        add_bos: bool,
    ):
        self.tokenizer, self.max_len, self.add_bos = tokenizer, max_len, add_bos
        self.on_too_long = check_choice("on_too_long (RL)", on_too_long, ("raise", "skip"))
        self.formatter = PromptFormatter(template, tokenizer)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        text = self.formatter(record)
        ids = encode_prompt(self.tokenizer, text, add_bos=self.add_bos)
        if len(ids) > self.max_len:
            if self.on_too_long == "raise":
                raise DataError(
                    f"prompt is {len(ids)} tokens, over the limit {self.max_len} (largest bucket); "
                    "raise the buckets or pass on_too_long='skip' to drop and count such rows",
                    origin=record.get("_origin"),
                    field="prompt",
                )
            return {DROPPED: "too_long", "_origin": record.get("_origin")}
        return {"prompt_tokens": np.asarray(ids, np.int32), "prompt_text": text, "record": record}


class SFTExample:
    """Record → ``{"tokens", "loss_mask"}`` (completion-only mask) or a drop marker; with
    ``teacher_topk`` also the record's stored teacher top-k (``r1jax.data.teacher_topk``)."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        template: Template,
        seq_len: int,
        on_too_long: str,
        add_bos: bool,
        allow_split: bool,
        teacher_topk: bool = False,
    ):
        self.tokenizer, self.seq_len, self.add_bos = tokenizer, seq_len, add_bos
        self.on_too_long = check_choice("on_too_long", on_too_long, ("raise", "skip", "truncate"))
        self.allow_split, self.teacher_topk = allow_split, teacher_topk
        self.formatter = PromptFormatter(template, tokenizer)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        origin = record.get("_origin")
        completion = record.get("completion")
        if completion is None:
            think = record.get("think", record.get("gold_cot"))
            if think is None or record.get("answer") is None:
                raise DataError("SFT needs think/gold_cot and answer, or completion", origin=origin)
            completion = format_completion(think, record["answer"])
        example = sft_tokens(
            self.tokenizer, self.formatter(record), completion, add_bos=self.add_bos, add_eos=True
        )
        example["_origin"] = origin
        if self.teacher_topk:
            example |= stored_topk(record, example["tokens"])
        n = len(example["tokens"])
        if n <= self.seq_len or self.allow_split:
            return example
        if self.on_too_long == "raise":
            raise DataError(
                f"example is {n} tokens, over seq_len {self.seq_len}; pass on_too_long='skip' or "
                "'truncate' (or allow_split=True)",
                origin=origin,
                field="completion",
            )
        if self.on_too_long == "truncate" and example["loss_mask"][: self.seq_len].any():
            for key in ("tokens", "loss_mask", *TOPK_FIELDS):
                if key in example:
                    example[key] = example[key][: self.seq_len]
            example["_truncated"] = True
            return example
        return {DROPPED: "too_long", "_origin": origin}


def finish_pipeline(ds: grain.IterDataset, worker_count: int, prefetch: int) -> grain.IterDataset:
    """Optional worker processes, then an optional background thread a few batches ahead."""
    if worker_count > 0:
        from absl import flags

        # grain's worker start reads absl flags and raises when a plain script (no absl.app)
        # never parsed them (google/grain#1355): accept the flags' defaults in that case.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    if prefetch > 0:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=prefetch)
    return ds


def make_rl_dataset(
    source: Source,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seed: int = 0,
    buckets: tuple[int, ...] = PROMPT_BUCKETS,
    template: Template = "r1_zero",
    add_bos: bool = True,
    shuffle: bool = True,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    fmt: str = "auto",
    on_error: OnError = "raise",
    on_too_long: OnTooLong = "skip",
    drop_remainder: bool = True,
    worker_count: int = 0,
    prefetch: int = 0,
) -> grain.IterDataset:
    """Batches of RL prompts (see :mod:`r1jax.data.batching` for the batch layout).

    ``batch_size`` is the global batch (prompts; the sampler draws G completions of each); this
    data shard gets its ``batch_size / shard_count`` rows of it (see the module doc). Prompts
    longer than ``buckets[-1]`` tokens are skipped and counted (``stats["dropped_too_long"]``) or,
    with ``on_too_long="raise"``, raise a :class:`DataError` naming the row. ``num_epochs=None``
    repeats forever; with a finite count and ``drop_remainder=False`` the last batch is filled
    with ``valid == False`` rows so the shape stays fixed. ``worker_count`` > 0 builds batches in
    that many worker processes (other batches than 0's: module docstring); ``prefetch`` > 0
    prepares that many batches ahead in a thread (both keep exact resume).
    """
    records = as_record_dataset(source, purpose="rl", seed=seed, fmt=fmt, on_error=on_error)
    check_shard(batch_size, shard_index, shard_count)
    records = global_order(records, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    mapped = records.map(RLExample(tokenizer, template, buckets[-1], on_too_long, add_bos))
    ds = PromptBatchIterDataset(
        mapped.to_iter_dataset(grain.ReadOptions(num_threads=0)),
        batch_size=batch_size,
        buckets=tuple(buckets),
        pad_id=tokenizer.pad_id,
        drop_remainder=drop_remainder,
    ).map(TakeRows(shard_index, shard_count))
    return finish_pipeline(ds, worker_count, prefetch)


def make_sft_dataset(
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
    fmt: str = "auto",
    on_error: OnError = "raise",
    on_too_long: OnTooLong = "skip",
    pack: bool = True,
    allow_split: bool = False,
    drop_remainder: bool = False,
    worker_count: int = 0,
    prefetch: int = 0,
    teacher_topk: bool = False,
) -> grain.IterDataset:
    """Packed SFT batches ``int32[B, T]`` (see :mod:`r1jax.data.packing` for the layout): this
    data shard's ``B / shard_count`` rows of each global batch of ``B = batch_size`` rows.

    Each example is ``template(prompt)`` + completion + eos with the loss on the completion and
    eos only; the completion is the record's ``completion`` or ``<think>{think}</think>
    <answer>{answer}</answer>`` (tasks: ``gold_cot`` as the think). Examples longer than
    ``seq_len``: skipped and counted, ``"truncate"``d (counted), or ``"raise"``; with
    ``allow_split=True`` they are split across rows instead. ``worker_count``/``prefetch`` as in
    :func:`make_rl_dataset`. ``teacher_topk``: every record carries the teacher's top-k
    (``r1jax teacher-topk``), packed into ``teacher_topk_indices`` / ``teacher_topk_logprobs``
    ``[B, T, K]`` aligned with the tokens (a record without it, or tokenised differently, is a
    ``DataError``).
    """
    records = as_record_dataset(source, purpose="sft", seed=seed, fmt=fmt, on_error=on_error)
    check_shard(batch_size, shard_index, shard_count)
    records = global_order(records, seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    mapped = records.map(
        SFTExample(tokenizer, template, seq_len, on_too_long, add_bos, allow_split, teacher_topk)
    )
    ds = PackedBatchIterDataset(
        mapped.to_iter_dataset(grain.ReadOptions(num_threads=0)),
        batch_size=batch_size,
        seq_len=seq_len,
        pad_id=tokenizer.pad_id,
        pack=pack,
        allow_split=allow_split,
        drop_remainder=drop_remainder,
    ).map(TakeRows(shard_index, shard_count))
    return finish_pipeline(ds, worker_count, prefetch)
