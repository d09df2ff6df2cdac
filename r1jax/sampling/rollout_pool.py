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

``shards`` = D > 1: the pool is D pools (``pool_shards.py``), each with its part of every batch
and its own ring of R / D rows; the host numbers rows over the shards' rings one after another,
and a batch's rows are each shard's block of it, in group order.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import warnings
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from r1jax import multihost
from r1jax.config import pool_layout
from r1jax.sampling import paged, paged_shards, pool_shards
from r1jax.sampling import pool as pool_lib
from r1jax.sampling.methods import SamplingMethod
from r1jax.sampling.output import SampleOutput, left_pad
from r1jax.sampling.stop import stop_sequences, stop_table
from r1jax.sharding import named_sharding

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
    ``shards``: the pool as that many pools (``pool_shards.py``; a multiple of the mesh's batch
    shards puts each page store on its own devices; the rows follow it, not the mesh).
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
        shards: int = 1,
    ):
        self.shard = _shard(sampler)
        q, g, t = batch_prompts * self.shard.count, num_samples, max_new_tokens
        _check(sampler, q, lanes, prompt_length, t)
        self.sampler, self.q, self.g, self.t, self.width = sampler, q, g, t, prompt_length
        self.q_local, self.shards = batch_prompts, shards
        self.lanes, self.max_steps, self.stop_strings = lanes, int(max_steps), tuple(stop_strings)
        self.tokenizer = tokenizer
        table = stop_table(stop_sequences(stop_token_ids, stop_strings, tokenizer))
        self.table = sampler.put(table, (None, None))
        statics = dict(config=sampler.config, num_samples=g, max_new_tokens=t)
        shapes = dict(lanes=lanes, width=prompt_length, slots=sampler.slots)
        gen_pages = request_pages = 0
        if sampler.page_size:  # the slots' cache in pages (``paged.py``)
            gen_pages = sampler.gen_pages(prompt_length, t)
            shapes |= dict(page_size=sampler.page_size, gen_pages=gen_pages)
            request_pages = paged.request_pages(t, sampler.page_size)
        with sampler.mesh_context():
            self._build(key, table.shape[1], statics, shapes, method, gen_pages, request_pages)
        self.batches: collections.deque[_Batch] = collections.deque()
        self.queue_end = 0  # requests admitted so far (one pool's ids 0 ... queue_end - 1)
        self.seen_R = np.zeros(lanes * g, np.int64)  # each row's tokens after the last call
        self.versions_RT = np.full((lanes * g, t), -1, np.int32)
        self.counters = (0, 0)  # the pool's (decode steps, slot-steps) at the last harvest
        self.generated = 0  # tokens sampled since the last harvest, over every row

    def _build(self, key, stop_width, statics, shapes, method, gen_pages, request_pages):
        """The empty pool and the jitted ``admit``, ``advance`` and ``harvest``: ``pool.py``'s,
        or ``pool_shards``' when ``shards`` > 1."""
        sampler, mesh = self.sampler, self.sampler.mesh
        empty_kw = dict(stop_width=stop_width, pad_id=sampler.pad_id, **statics)
        if self.shards == 1:
            if sampler.page_size:
                _say_if_held_twice(mesh, 1, ())
            shardings = pool_lib.pool_shardings(
                sampler.config, self.lanes, self.width, self.g, self.t, sampler.slots,
                stop_width, mesh, sampler.page_size,
            )  # fmt: skip
            lib, kw = pool_lib, {}
            empty = functools.partial(pool_lib.empty_pool, **empty_kw)
        else:
            name = "RolloutPool(shards) (config.grpo.partial_shards)"
            pool_shards.check_model(sampler.config, mesh, self.shards, name)
            lay = pool_layout.layout(
                self.shards, prompts=self.q, samples=self.g, lanes=self.lanes,
                slots=sampler.slots, gen_pages=gen_pages, request_pages=request_pages,
            )  # fmt: skip
            lib, kw = pool_shards, dict(lay=lay, mesh=mesh)
            empty = functools.partial(pool_shards.empty, lay=lay, **empty_kw)
            abstract = jax.eval_shape(functools.partial(empty, **shapes), key)
            axes = pool_shards.block_axes(mesh, self.shards)
            _say_if_held_twice(mesh, self.shards, axes)
            shardings = pool_shards.shardings(mesh, axes, abstract)
        self.pool = jax.jit(empty, static_argnames=tuple(shapes), out_shardings=shardings)(
            key, **shapes
        )
        jit_step = functools.partial(  # the pool donated in, the same shardings out
            jax.jit, donate_argnums=1, out_shardings=shardings,
            compiler_options=sampler.compiler_options(),
        )  # fmt: skip
        admit = functools.partial(lib.admit, pad_id=sampler.pad_id, **statics, **kw)
        self._admit = jit_step(admit)
        advance = functools.partial(
            lib.advance, method=method, windows=sampler.decode_windows, **statics,
            **kw or dict(mesh=mesh),
        )  # fmt: skip
        self._advance = jit_step(advance)
        rows = dict(rows=self.q * self.g) if self.shards == 1 else dict(lay=kw["lay"])
        self._harvest = jax.jit(
            functools.partial(lib.harvest, **rows), out_shardings=self._harvest_shardings()
        )

    def _harvest_shardings(self):
        """A sharded pool's batch rows split as a batch is ("batch"): each process's rows on
        its devices (``to_output``), whichever axes the shards are spread over."""
        mesh, n = self.sampler.mesh, self.q * self.g
        if mesh is None or self.shards == 1:
            return None
        rows = lambda *shape: named_sharding(mesh, ("batch",) + (None,) * (len(shape) - 1), shape)
        rep = named_sharding(mesh, (), ())
        return (rows(n, self.t), rows(n, self.t), rows(n), rows(n), rows(n)), (rep, rep)

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
        steps = int(np.max(multihost.to_host(self.pool.slots.iterations)))
        self.batches.append(_Batch(payload, tokens_QP, mask_QP, self.queue_end, steps))
        put = lambda x: self.sampler.put(x, ("batch", None))
        with self.sampler.mesh_context():
            self.pool = self._admit(params, self.pool, put(tokens_QP), put(mask_QP), budget)
        self.queue_end += n

    def _row0(self, first_request: int) -> int:
        """The batch's first row in each shard's ring (of R / D rows)."""
        return first_request // self.shards % (self.lanes * self.g // self.shards)

    def _rows(self, first_request: int) -> np.ndarray:
        """The batch's rows in group order, numbered over the shards' rings one after another
        (``lengths_R`` flattened): each shard's B rows from ``_row0``."""
        per_shard, b = self.lanes * self.g // self.shards, self.q * self.g // self.shards
        first = np.arange(self.shards)[:, None] * per_shard + self._row0(first_request)
        return (first + np.arange(b)[None]).reshape(-1)

    def _record_versions(self, version: int) -> None:
        """Marks the tokens the last call sampled (per row, past its previous count, or past
        the count a rewind set it back to: those tokens were sampled again)."""
        slots = self.pool.slots
        now_R, low_R = (
            np.asarray(x, np.int64).reshape(-1)
            for x in multihost.to_host((slots.lengths_R, slots.low_R))
        )
        first_R = np.minimum(np.minimum(self.seen_R, low_R), now_R)
        columns = np.arange(self.t)[None]
        self.versions_RT[(columns >= first_R[:, None]) & (columns < now_R[:, None])] = version
        self.generated += int((now_R - self.seen_R).sum())  # net: a rewind's drop comes off
        self.seen_R = now_R

    def _complete(self, target_end: int) -> bool:
        s = self.pool.slots
        next_request, request_C = multihost.to_host((s.next_request, s.request_C))
        local_end = target_end // self.shards  # each shard's ids: B of every batch's Q * G
        busy = (request_C >= 0) & (request_C < local_end)
        return int(np.min(next_request)) >= local_end and not busy.any()

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
            row0 = np.int32(self._row0(batch.first_request))
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
        # Useful tokens: what the rows gained in this batch's calls, net of rewinds (a deficit
        # carries to the next batch). The counts are the whole pool's: the first data shard's
        # processes report them (the metrics sum one copy of each shard's), the others none.
        share = lambda count: count if self.shard.index == 0 else 0
        gained = max(self.generated, 0)
        sample = dataclasses.replace(
            sample, useful_tokens=share(gained), slot_steps=share(started + slot_steps)
        )
        rows = self.versions_RT[self._rows(batch.first_request)]
        rows = rows[self.shard.rows(len(rows))]  # this process's block
        versions = np.where(sample.mask == 1, rows, -1).astype(np.int32)
        self.batches.popleft()
        self.counters = (int(counters[0]), int(counters[1]))
        self.generated -= gained
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


def _say_if_held_twice(mesh, shards: int, axes) -> None:
    """Warns when a pool's page stores (or ``shards`` pools) are held whole by several of the
    mesh's batch shards, each decoding the same slots."""
    could = paged_shards.splittable_shards(mesh)
    spread = math.prod(mesh.shape[a] for a in axes) if axes else 1
    if could > spread:
        what = "one page store" if shards == 1 else f"{shards} pool shards"
        warnings.warn(
            f"partial rollouts keep {what}, each held whole (and its slots decoded) on "
            f"{could // spread} of the mesh's {could} batch shards: split the pool into a "
            f"multiple of {could} shards (RolloutPool(shards=...), config.grpo.partial_shards; "
            "docs/sampler.md)",
            stacklevel=4,
        )


def _shard(sampler) -> multihost.DataShard:
    """This process's block of each batch: all of it on one process."""
    if not sampler.multi_process:
        return multihost.DataShard(0, 1)
    return multihost.data_shard(sampler.mesh)
