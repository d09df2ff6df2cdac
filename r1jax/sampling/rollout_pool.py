"""``RolloutPool``: the host side of partial rollouts (the device side and the idea: ``pool.py``).

Shape letters as in ``pool.py``: Q prompts per batch, L lanes (``lanes``, a multiple of Q, at
least 2Q), G samples, R = L * G rows, P the pool's prompt width, T ``max_new_tokens``.

The host keeps, per batch of Q admitted prompts (oldest first), the caller's payload (e.g. the
data batch, for scoring) and the padded prompts; per row, how many tokens it had after each call
and so which policy version (the caller's ``version``, e.g. the train step) wrote each token.

On several processes (a mesh spanning hosts) each process admits its data shard's block of
every batch (``batch_prompts`` is that block's size; Q counts the whole batch) and gets its own
rows back; the ring, its request order and keys are those of one process holding every block,
so the rows do not depend on the process count. Every process keeps the whole ring's per-row
counts (a few integers per row, gathered after each call).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from r1jax import multihost
from r1jax.sampling import paged_shards
from r1jax.sampling import pool as pool_lib
from r1jax.sampling.methods import SamplingMethod
from r1jax.sampling.output import SampleOutput, left_pad
from r1jax.sampling.stop import stop_sequences, stop_table

UNBOUNDED = 2**30


@dataclasses.dataclass(frozen=True)
class Harvest:
    """One batch of Q complete groups: the ``payload`` its prompts were admitted with, the
    rows (``SampleOutput``, group-contiguous), ``versions_BT`` int32 ``[Q * G, T]`` (the
    version that sampled each token, -1 past a row's end) and ``calls``, the ``advance``
    calls this batch waited for."""

    payload: Any
    sample: SampleOutput
    versions_BT: np.ndarray
    calls: int


@dataclasses.dataclass
class _Batch:
    payload: Any
    tokens_QP: np.ndarray
    mask_QP: np.ndarray
    first_request: int
    admitted_at: int  # the pool's decode-step count when admitted


class RolloutPool:
    """Partial rollouts for one ``Sampler`` (continuous batching: ``slots`` > 0).

    ``admit(params, prompts, payload)`` queues Q prompts (G requests each) while
    ``wants_prompts``; ``next_batch(params, version)`` decodes, in calls of at most
    ``max_steps`` decode steps (0: unbounded), until the oldest batch's groups are complete
    and returns it (``Harvest``); every other row keeps its slot and cache for later calls.
    Keys come from ``key`` and each request's admission number, never from the call.
    """

    def __init__(
        self,
        sampler,
        *,
        batch_prompts: int,
        lanes: int,
        num_samples: int,
        max_new_tokens: int,
        prompt_length: int,
        method: SamplingMethod,
        key: jax.Array,
        stop_token_ids: Sequence[int] = (),
        stop_strings: Sequence[str] = (),
        tokenizer=None,
        max_steps: int = 0,
    ):
        self.shard = _shard(sampler)
        q, g, t = batch_prompts * self.shard.count, num_samples, max_new_tokens
        _check(sampler, q, lanes, prompt_length, t)
        self.sampler, self.q, self.g, self.t, self.width = sampler, q, g, t, prompt_length
        self.q_local = batch_prompts
        self.lanes, self.max_steps, self.stop_strings = lanes, int(max_steps), tuple(stop_strings)
        self.tokenizer = tokenizer
        table = stop_table(stop_sequences(stop_token_ids, stop_strings, tokenizer))
        self.table = sampler.put(table, (None, None))
        statics = dict(config=sampler.config, num_samples=g, max_new_tokens=t)
        shapes = dict(lanes=lanes, width=prompt_length, slots=sampler.slots)
        if sampler.page_size:  # the slots' cache in pages (``paged.py``)
            _say_if_held_twice(sampler.mesh)
            gen_pages = sampler.gen_pages(prompt_length, t)
            shapes |= dict(page_size=sampler.page_size, gen_pages=gen_pages)
        shardings = pool_lib.pool_shardings(
            sampler.config, lanes, prompt_length, g, t, sampler.slots, table.shape[1],
            sampler.mesh, sampler.page_size,
        )  # fmt: skip
        empty = functools.partial(
            pool_lib.empty_pool, stop_width=table.shape[1], pad_id=sampler.pad_id, **statics
        )
        with sampler.mesh_context():
            self.pool = jax.jit(empty, static_argnames=tuple(shapes), out_shardings=shardings)(
                key, **shapes
            )
        jit_step = functools.partial(  # the pool donated in, the same shardings out
            jax.jit, donate_argnums=1, out_shardings=shardings,
            compiler_options=sampler.compiler_options(),
        )  # fmt: skip
        self._admit = jit_step(functools.partial(pool_lib.admit, pad_id=sampler.pad_id, **statics))
        self._advance = jit_step(
            functools.partial(pool_lib.advance, method=method, mesh=sampler.mesh, **statics)
        )
        self._harvest = jax.jit(functools.partial(pool_lib.harvest, rows=q * g))
        self.batches: collections.deque[_Batch] = collections.deque()
        self.queue_end = 0  # requests admitted so far (absolute ids 0 ... queue_end - 1)
        self.seen_R = np.zeros(lanes * g, np.int64)  # each row's tokens after the last call
        self.versions_RT = np.full((lanes * g, t), -1, np.int32)
        self.counters = (0, 0)  # the pool's (decode steps, slot-steps) at the last harvest
        self.generated = 0  # tokens sampled since the last harvest, over every row

    @property
    def wants_prompts(self) -> bool:
        """True while fewer than L lanes hold prompts."""
        return len(self.batches) * self.q < self.lanes

    def admit(
        self, params, prompts: Sequence[Sequence[int]], payload: Any = None, budget=None
    ) -> None:
        """Queues Q prompts (token-id lists, each at most ``prompt_length`` tokens; on several
        processes this process's block of them), G requests each; ``payload`` comes back with
        their ``Harvest``. ``budget``: optional per-request new-token limits, one per request
        of ``prompts`` (as ``Sampler(row_budget=...)``)."""
        if not self.wants_prompts:
            raise RuntimeError(f"all {self.lanes} lanes are in flight: take a batch first")
        if len(prompts) != self.q_local:
            raise ValueError(
                f"admit: {len(prompts)} prompts, the pool takes {self.q_local} at a time"
            )
        for i, ids in enumerate(prompts):
            if not 0 < len(ids) <= self.width:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens: 1 ... {self.width} (the pool's "
                    "prompt_length) fit"
                )
        n, n_local = self.q * self.g, self.q_local * self.g
        if budget is not None:
            budget = np.asarray(budget, np.int32)
            if budget.shape != (n_local,) or budget.min() < 1:
                raise ValueError(
                    f"budget: {n_local} values >= 1 (one per request), got {budget.shape}"
                )
            budget = self.sampler.put(budget, ("batch",))
        tokens_QP, mask_QP = left_pad(prompts, self.width, self.sampler.pad_id)
        rows = self._rows(self.queue_end)
        self.seen_R[rows], self.versions_RT[rows] = 0, -1
        steps = int(multihost.to_host(self.pool.slots.iterations))
        self.batches.append(_Batch(payload, tokens_QP, mask_QP, self.queue_end, steps))
        put = lambda x: self.sampler.put(x, ("batch", None))
        with self.sampler.mesh_context():
            self.pool = self._admit(params, self.pool, put(tokens_QP), put(mask_QP), budget)
        self.queue_end += n

    def _rows(self, first_request: int) -> slice:
        start = first_request % (self.lanes * self.g)
        return slice(start, start + self.q * self.g)

    def _record_versions(self, version: int) -> None:
        """Marks the tokens the last call sampled (per row, past its previous count)."""
        now_R = np.asarray(multihost.to_host(self.pool.slots.lengths_R), np.int64)
        columns = np.arange(self.t)[None]
        new = (columns >= self.seen_R[:, None]) & (columns < now_R[:, None])
        self.versions_RT[new] = version
        self.generated += int((now_R - np.minimum(self.seen_R, now_R)).sum())
        self.seen_R = now_R

    def _complete(self, target_end: int) -> bool:
        s = self.pool.slots
        next_request, request_C = multihost.to_host((s.next_request, s.request_C))
        busy = (request_C >= 0) & (request_C < target_end)
        return int(next_request) >= target_end and not busy.any()

    def next_batch(self, params, version: int = 0) -> Harvest:
        """Decodes with ``params`` until the oldest batch is complete; returns and frees it.
        ``version`` labels the tokens sampled now (``Harvest.versions_BT``)."""
        if not self.batches:
            raise RuntimeError("the pool is empty: admit prompts first")
        batch = self.batches[0]
        target_end = batch.first_request + self.q * self.g
        max_steps = self.max_steps or UNBOUNDED
        calls = 0
        with self.sampler.mesh_context():
            while not self._complete(target_end):
                args = (self.table, np.int32(target_end), np.int32(max_steps))
                self.pool = self._advance(params, self.pool, *args)
                self._record_versions(version)
                calls += 1
            row0 = self._rows(batch.first_request).start
            fields, counters = self._harvest(self.pool, row0, np.int32(batch.admitted_at))
        if not self.sampler.multi_process:  # (several: ``to_output`` takes this process's rows)
            fields = jax.device_get(fields)
        counters = multihost.to_host(counters)
        steps = int(counters[0]) - self.counters[0]
        slot_steps = int(counters[1]) - self.counters[1]
        started = self.q * self.g  # one first token per request, sampled from the prefill
        sample = self.sampler.to_output(
            fields,
            (steps, None),
            batch.tokens_QP,
            batch.mask_QP,
            self.g,
            self.stop_strings,
            self.tokenizer,
        )
        sample = dataclasses.replace(
            sample, useful_tokens=self.generated, slot_steps=started + slot_steps
        )
        rows = self.versions_RT[self._rows(batch.first_request)]
        rows = rows[self.shard.rows(len(rows))]  # this process's block
        versions = np.where(sample.mask == 1, rows, -1).astype(np.int32)
        self.batches.popleft()
        self.counters, self.generated = (int(counters[0]), int(counters[1])), 0
        return Harvest(batch.payload, sample, versions, calls)


def _check(sampler, q: int, lanes: int, prompt_length: int, t: int) -> None:
    """Errors for a pool ``sampler`` cannot run."""
    if not sampler.slots or sampler.min_slots:
        raise ValueError(
            f"partial rollouts decode with continuous batching: Sampler(slots > 0, "
            f"min_slots=0), got slots={sampler.slots}, min_slots={sampler.min_slots}"
        )
    if q < 1 or lanes < 2 * q or lanes % q:
        raise ValueError(f"lanes={lanes}: a multiple of the batch's {q} prompts, >= {2 * q}")
    if prompt_length + t > sampler.config.max_position_embeddings:
        raise ValueError(
            f"prompt_length={prompt_length} + max_new_tokens={t} is past the model's "
            f"max_position_embeddings={sampler.config.max_position_embeddings}"
        )


def _say_if_held_twice(mesh) -> None:
    """Warns that a paged pool's one page store is held whole on every batch shard."""
    shards = paged_shards.splittable_shards(mesh)
    if shards > 1:
        warnings.warn(
            f"partial rollouts over a paged cache keep one page store, held whole (and its "
            f"slots decoded) on each of the mesh's {shards} batch shards: the pool is not split "
            "per shard as the sampler is (docs/sampler.md)",
            stacklevel=3,
        )


def _shard(sampler) -> multihost.DataShard:
    """This process's block of each batch: all of it on one process."""
    if not sampler.multi_process:
        return multihost.DataShard(0, 1)
    return multihost.data_shard(sampler.mesh)
