"""Continuous batching: C decode slots fed from a queue of requests inside one compiled loop.

Shape letters as in ``loop.py``, plus C decode slots and R = Q * G requests (request ``i * G +
j`` is sample j of prompt i: the static sampler's row numbering, and the order of the queue).

A static batch decodes every row until the longest one stops; with long-tailed completion
lengths most rows are finished most of the time. Here the Q prompts are prefilled once, as the
static sampler does (one forward, shared by the G samples of a prompt), into a prompt cache
(``Prompts``). Then a ``while_loop`` keeps C slots busy. Each iteration decodes one token for
every busy slot: the slots are the rows of a KV cache, each writing at its own index
(``KVCache.length`` ``[C]``). A slot whose request stopped takes the next request of the queue
in the same iteration (``refill``): its cache row gets the prompt's P columns copied from the
prompt cache, the columns after them are marked empty (segment 0), and the request's first
token is sampled from the prompt's last logits. The loop ends when the queue is empty and every
slot is idle. Shapes are static: one compile per (Q, P, T, C), whatever the lengths drawn.

Every request samples with its own keys (``methods.request_keys``), so its tokens do not depend
on which slot runs it or when: the rows equal the static loop's with ``keys="request"``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from r1jax.model import KVCache, ModelConfig, cache_shardings, init_cache
from r1jax.model.transformer import hidden_states, logits_from_hidden
from r1jax.sampling import windows as windows_lib
from r1jax.sampling.loop import prompt_forward
from r1jax.sampling.methods import SamplingMethod, request_keys, sample_rows, slot_key_ids
from r1jax.sampling.stop import matches
from r1jax.sharding import named_sharding


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Prompts:
    """The prefilled prompts, read by every refill: keys ``[L, Q, K, H, P]``, values
    ``[L, Q, K, P, H]``, slot ``positions``/``segment_ids`` ``[Q, P]``, real prompt
    ``lengths_Q`` and the last position's fp32 ``logits_QV``."""

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    lengths_Q: jax.Array
    logits_QV: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SlotState:
    """What the loop carries. Per slot: ``request_C`` (-1: idle), ``count_C`` (tokens its
    request has so far), ``last_C`` (its last token), ``recent_CW`` (last W tokens, -1 before
    the first), the ``cache`` row. Per request: ``tokens_RT``, ``logprobs_RT``, ``lengths_R``,
    ``done_R``, ``budget_R`` as ``loop.SamplingState`` has them per row, and ``wait_R``, the
    decode steps run before the request got a slot (its queue wait), and ``low_R``, the lowest
    count a paged rewind set it back to (T: none; a pool resets it each call). ``iterations``:
    decode steps run; ``slot_steps``: slots x decode steps summed over the phases (the slots
    computed, busy or idle); ``key``: the call's key.

    Requests carry absolute ids: the queue is ids ``next_request ... queue_end - 1``, and id
    ``r`` lives in row ``r % R`` (its keys come from ``r``). One call queues ids ``0 ... R - 1``;
    ``r1jax.sampling.pool`` reuses the rows as a ring, queueing more ids as it admits prompts."""

    iterations: jax.Array
    slot_steps: jax.Array
    next_request: jax.Array
    queue_end: jax.Array
    request_C: jax.Array
    count_C: jax.Array
    last_C: jax.Array
    recent_CW: jax.Array
    cache: KVCache
    tokens_RT: jax.Array
    logprobs_RT: jax.Array
    lengths_R: jax.Array
    done_R: jax.Array
    budget_R: jax.Array
    wait_R: jax.Array
    low_R: jax.Array
    key: jax.Array


def prefill_prompts(params, prompt_QP, prompt_mask_QP, *, config: ModelConfig, max_new_tokens):
    """The left-padded prompts ``[Q, P]`` run once by the static prefill's forward
    (``loop.prompt_forward``, its cache sized ``P + T`` too, so the same numbers), the cache's
    first P columns kept."""
    length = prompt_QP.shape[1]
    cache_len = length + max_new_tokens
    cache, logits_QV = prompt_forward(params, prompt_QP, prompt_mask_QP, config, cache_len)
    return Prompts(
        k=cache.k[..., :length],
        v=cache.v[:, :, :, :length],
        positions=cache.positions[:, :length],
        segment_ids=cache.segment_ids[:, :length],
        lengths_Q=jnp.sum(prompt_mask_QP, axis=1).astype(jnp.int32),
        logits_QV=logits_QV,
    )


def record(s: SlotState, write_C, tokens_C, logprobs_C, stop_table_EW, max_new: int):
    """Writes each writing slot's token at its request's next column; returns the state and
    ``finished_C`` (a writing slot whose request just stopped or used up its budget)."""
    num_requests = s.tokens_RT.shape[0]
    rows_C = jnp.where(write_C, s.request_C % num_requests, num_requests)  # out of range: dropped
    column_C = jnp.minimum(s.count_C, max_new - 1)
    recent_CW = jnp.where(
        write_C[:, None], jnp.concatenate([s.recent_CW[:, 1:], tokens_C[:, None]], 1), s.recent_CW
    )
    count_C = s.count_C + write_C.astype(jnp.int32)
    stopped_C = write_C & matches(recent_CW, stop_table_EW)
    s = dataclasses.replace(
        s,
        count_C=count_C,
        last_C=jnp.where(write_C, tokens_C, s.last_C),
        recent_CW=recent_CW,
        tokens_RT=s.tokens_RT.at[rows_C, column_C].set(tokens_C, mode="drop"),
        logprobs_RT=s.logprobs_RT.at[rows_C, column_C].set(logprobs_C, mode="drop"),
        lengths_R=s.lengths_R.at[rows_C].set(count_C, mode="drop"),
        done_R=s.done_R.at[rows_C].set(stopped_C, mode="drop"),
    )
    budget_C = s.budget_R[jnp.maximum(s.request_C, 0) % num_requests]
    return s, stopped_C | (write_C & (count_C >= jnp.minimum(budget_C, max_new)))


def _assign(cache: KVCache, prompts: Prompts, slot, prompt) -> KVCache:
    """Slot ``slot``'s cache row: prompt ``prompt``'s P columns, then empty columns."""
    length = prompts.k.shape[-1]
    take = lambda a, axis: jax.lax.dynamic_slice_in_dim(a, prompt, 1, axis=axis)
    empty = jnp.zeros((cache.max_length - length,), jnp.int32)
    row = lambda a: jnp.concatenate([take(a, 0)[0], empty])
    return KVCache(
        k=jax.lax.dynamic_update_slice(cache.k, take(prompts.k, 1), (0, slot, 0, 0, 0)),
        v=jax.lax.dynamic_update_slice(cache.v, take(prompts.v, 1), (0, slot, 0, 0, 0)),
        positions=cache.positions.at[slot].set(row(prompts.positions)),
        segment_ids=cache.segment_ids.at[slot].set(row(prompts.segment_ids)),
        length=cache.length.at[slot].set(length),
    )


def refill(
    s: SlotState,
    need_C,
    prompts: Prompts,
    stop_table_EW,
    *,
    method,
    num_samples,
    max_new,
    assign=None,
    release=None,
    key_ids=None,
):
    """Gives each slot in ``need_C`` the next request of the queue (its first token sampled
    from the prompt's logits; a request that stops at once passes the slot on); slots left
    without one go idle. ``assign(cache, prompts, slot, prompt)`` gives a slot its prompt
    (default: copies it into the slot's cache row); ``release(cache, need_C)``, if given,
    first frees what the slots in ``need_C`` held (a paged cache's pages); ``key_ids(ids)``,
    if given, maps request ids to the ids their keys come from (``pool_shards``' blocks)."""
    num_requests = s.tokens_RT.shape[0]
    slots_C = jnp.arange(need_C.shape[0])
    assign, key_ids = assign or _assign, key_ids or (lambda ids: ids)
    if release is not None:
        s = dataclasses.replace(s, cache=release(s.cache, need_C))

    def more(carry):
        s, need_C = carry
        return jnp.any(need_C) & (s.next_request < s.queue_end)

    def assign_next(carry):
        s, need_C = carry
        slot, request = jnp.argmax(need_C), s.next_request
        prompt = request % num_requests // num_samples
        s = dataclasses.replace(
            s,
            next_request=request + 1,
            request_C=s.request_C.at[slot].set(request),
            count_C=s.count_C.at[slot].set(0),
            wait_R=s.wait_R.at[request % num_requests].set(s.iterations),
            recent_CW=s.recent_CW.at[slot].set(-1),
            cache=assign(s.cache, prompts, slot, prompt),
        )
        logits_1V = jax.lax.dynamic_slice_in_dim(prompts.logits_QV, prompt, 1)
        key_1 = request_keys(s.key, key_ids(request[None]), jnp.zeros((1,), jnp.int32))
        token_1, logprob_1 = sample_rows(method, logits_1V, key_1)
        write_C = slots_C == slot
        tokens_C = jnp.broadcast_to(token_1, write_C.shape)
        logprobs_C = jnp.broadcast_to(logprob_1, write_C.shape)
        s, finished_C = record(s, write_C, tokens_C, logprobs_C, stop_table_EW, max_new)
        return s, need_C & (~write_C | finished_C)

    s, need_C = jax.lax.while_loop(more, assign_next, (s, need_C))
    return dataclasses.replace(s, request_C=jnp.where(need_C, -1, s.request_C))


def decode_step(
    params,
    prompts: Prompts,
    s: SlotState,
    *,
    config,
    method,
    num_samples,
    key_ids=None,
    window: int | None = None,
):
    """One token for every busy slot; returns ``(state, busy_C, tokens_C, logprobs_C)`` for
    ``record`` (idle slots compute too, writing padding into their own rows); ``key_ids``
    as ``refill``'s; ``window``: attention reads the cache's first columns only (``windows``),
    which must hold every busy slot's write."""
    busy_C = s.request_C >= 0
    prompt_C = jnp.maximum(s.request_C, 0) % s.tokens_RT.shape[0] // num_samples
    positions_C1 = (prompts.lengths_Q[prompt_C] + s.count_C - 1)[:, None]
    idle_length = prompts.positions.shape[1]
    cache = dataclasses.replace(s.cache, length=jnp.where(busy_C, s.cache.length, idle_length))
    hidden_C1D, cache = hidden_states(
        params,
        s.last_C[:, None],
        config,
        positions=positions_C1,
        segment_ids=busy_C[:, None].astype(jnp.int32),
        cache=cache,
        cache_window=window,
    )
    logits_CV = logits_from_hidden(params, hidden_C1D, config)[:, 0]
    keys_C = request_keys(s.key, slot_key_ids(s.request_C, key_ids), s.count_C)
    tokens_C, logprobs_C = sample_rows(method, logits_CV, keys_C)
    s = dataclasses.replace(
        s, cache=cache, iterations=s.iterations + 1, slot_steps=s.slot_steps + busy_C.shape[0]
    )
    return s, busy_C, tokens_C, logprobs_C


def slot_state_shardings(config, num_requests, max_new, width, num_slots, cache_len, mesh):
    """NamedShardings of a ``SlotState``: slots and requests over the data axes."""
    if mesh is None:
        return None
    rep = named_sharding(mesh, (), ())
    per_row = lambda *shape: named_sharding(mesh, ("batch",) + (None,) * (len(shape) - 1), shape)
    cache = cache_shardings(config, num_slots, cache_len, mesh)
    return SlotState(
        iterations=rep,
        slot_steps=rep,
        next_request=rep,
        queue_end=rep,
        request_C=per_row(num_slots),
        count_C=per_row(num_slots),
        last_C=per_row(num_slots),
        recent_CW=per_row(num_slots, width),
        cache=dataclasses.replace(cache, length=per_row(num_slots)),
        tokens_RT=per_row(num_requests, max_new),
        logprobs_RT=per_row(num_requests, max_new),
        lengths_R=per_row(num_requests),
        done_R=per_row(num_requests),
        budget_R=per_row(num_requests),
        wait_R=per_row(num_requests),
        low_R=per_row(num_requests),
        key=rep,
    )


def empty_state(config, num_requests, num_slots, length, max_new, width, pad_id, key):
    """Every slot idle, nothing generated, every budget ``max_new``."""
    idle_C = jnp.full((num_slots,), -1, jnp.int32)
    cache = init_cache(config, num_slots, length + max_new)
    return SlotState(
        iterations=jnp.zeros((), jnp.int32),
        slot_steps=jnp.zeros((), jnp.int32),
        next_request=jnp.zeros((), jnp.int32),
        queue_end=jnp.full((), num_requests, jnp.int32),
        request_C=idle_C,
        count_C=jnp.zeros_like(idle_C),
        last_C=jnp.full_like(idle_C, pad_id),
        recent_CW=jnp.full((num_slots, width), -1, jnp.int32),
        cache=dataclasses.replace(cache, length=jnp.full_like(idle_C, length)),
        tokens_RT=jnp.full((num_requests, max_new), pad_id, jnp.int32),
        logprobs_RT=jnp.zeros((num_requests, max_new), jnp.float32),
        lengths_R=jnp.zeros((num_requests,), jnp.int32),
        done_R=jnp.zeros((num_requests,), bool),
        budget_R=jnp.full((num_requests,), max_new, jnp.int32),
        wait_R=jnp.zeros((num_requests,), jnp.int32),
        low_R=jnp.full((num_requests,), max_new, jnp.int32),
        key=key,
    )


def needed_columns(s: SlotState) -> jax.Array:
    """The cache columns the busy slots' next writes need (``windows.live_end``)."""
    return windows_lib.live_end(s.cache.length, s.request_C >= 0)


def slot_phases(num_slots: int, min_slots: int) -> tuple[int, ...]:
    """The slot counts the loop runs with: ``num_slots``, then halved down to ``min_slots``
    (0: no shrinking)."""
    if num_slots < 1 or not 0 <= min_slots <= num_slots:
        raise ValueError(f"slots={num_slots}, min_slots={min_slots}: 1 <= min <= slots, or 0")
    phases = [num_slots]
    while min_slots and phases[-1] // 2 >= min_slots:
        phases.append(phases[-1] // 2)
    return tuple(phases)


def constrain(s: SlotState, *, config, mesh) -> SlotState:
    """``s`` constrained to ``slot_state_shardings`` (nothing without a mesh)."""
    if mesh is None:
        return s
    (requests, max_new), width = s.tokens_RT.shape, s.recent_CW.shape[1]
    slots, cache_len = s.request_C.shape[0], s.cache.max_length
    shardings = slot_state_shardings(config, requests, max_new, width, slots, cache_len, mesh)
    return jax.lax.with_sharding_constraint(s, shardings)


def _compact(s: SlotState, num_slots: int) -> SlotState:
    """The state with its slots cut to ``num_slots``: the busy ones (at most that many), in
    slot order, then idle ones."""
    keep_C = jnp.argsort(s.request_C < 0, stable=True)[:num_slots]
    take = lambda a, axis=0: jnp.take(a, keep_C, axis=axis)
    cache = s.cache
    return dataclasses.replace(
        s,
        request_C=take(s.request_C),
        count_C=take(s.count_C),
        last_C=take(s.last_C),
        recent_CW=take(s.recent_CW),
        cache=KVCache(
            k=take(cache.k, 1),
            v=take(cache.v, 1),
            positions=take(cache.positions),
            segment_ids=take(cache.segment_ids),
            length=take(cache.length),
        ),
    )


def sample(
    params,
    prompt_QP: jax.Array,
    prompt_mask_QP: jax.Array,
    key: jax.Array,
    stop_table_EW: jax.Array,
    *,
    config: ModelConfig,
    method: SamplingMethod,
    num_samples: int,
    max_new_tokens: int,
    num_slots: int,
    pad_id: int,
    mesh=None,
    min_slots: int = 0,
    budget_R: jax.Array | None = None,
    windows: int = 1,
) -> SlotState:
    """Samples ``num_samples`` completions of each prompt with ``num_slots`` decode slots;
    the final state holds them per request (``tokens_RT`` etc.). Jit with the keywords static
    (``budget_R``, each request's new-token limit, is an array: default ``max_new_tokens``).

    ``min_slots`` > 0: once the queue is empty and at most half the slots are busy, the busy
    ones move to a loop with half as many slots (``_compact``), down to ``min_slots``, so the
    long tail of a call decodes in a smaller batch (phases of ``slot_phases``). ``windows``
    > 1: each step attends over the smallest of that many cache prefixes that holds the busy
    slots' writes (``windows.py``).
    """
    num_prompts, length = prompt_QP.shape
    num_requests, width = num_prompts * num_samples, stop_table_EW.shape[1]

    fit = functools.partial(constrain, config=config, mesh=mesh)
    prompts = prefill_prompts(
        params, prompt_QP, prompt_mask_QP, config=config, max_new_tokens=max_new_tokens
    )
    s = empty_state(config, num_requests, num_slots, length, max_new_tokens, width, pad_id, key)
    if budget_R is not None:
        s = dataclasses.replace(s, budget_R=budget_R.astype(jnp.int32))
    statics = dict(method=method, num_samples=num_samples)
    refill_next = functools.partial(
        refill, prompts=prompts, stop_table_EW=stop_table_EW, max_new=max_new_tokens, **statics
    )
    s = fit(refill_next(fit(s), jnp.ones((num_slots,), bool)))

    decode_one = functools.partial(decode_step, params, prompts, config=config, **statics)
    step = lambda s, window: fit(
        refill_next(*record(*decode_one(s, window=window), stop_table_EW, max_new_tokens))
    )
    ends = windows_lib.window_ends(length, max_new_tokens, windows)
    for smaller in (*slot_phases(num_slots, min_slots)[1:], 0):

        def keep_going(s, smaller=smaller):
            busy = jnp.sum(s.request_C >= 0)
            shrink = (s.next_request >= s.queue_end) & (busy <= smaller)
            return (busy > 0) & ~shrink

        s = windows_lib.windowed_while(keep_going, step, s, ends=ends, needed=needed_columns)
        if smaller:
            s = fit(_compact(s, smaller))
    return s
