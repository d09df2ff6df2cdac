"""Partial rollouts: a pool of prompt lanes whose requests outlive one sampler call.

Shape letters as in ``continuous.py``, plus L prompt lanes (a multiple of Q, the prompts one
GRPO batch takes) and R = L * G request rows.

A GRPO batch needs Q complete groups; with long-tailed lengths, waiting for the last row of the
batch leaves the decode slots idle. Here the slots stay busy with the prompts of LATER batches:
the pool holds L >= 2Q prompts (lanes, a ring) and the continuous sampler's slots take their
requests in admission order. A call (``advance``) decodes until the oldest Q lanes are complete
(or ``max_steps`` decode steps have run); the host then takes those lanes' rows (``harvest``)
and admits Q new prompts into them (``admit``). Every other request keeps its slot, its KV cache
and its tokens, and continues in the next call, after the policy was updated: its tokens then
come from several policies, each recorded with the log-prob under the policy that sampled it
(the behaviour log-probs the loss's importance ratios need). ``RolloutPool``
(``rollout_pool.py``) is the host side. With a paged sampler (``Sampler(page_size=Z)``) the
lanes' prompts are prompt pages of the slots' page store and the slots hold generation pages
only while they decode (``paged.py``): rows carried across calls keep exactly their pages.
On a mesh, ``pool_shards.py`` runs D such pools, each with its own store.

Requests have absolute ids (admission order; row ``id % R``) and sample with the keys of their
id (``methods.request_keys``), so a request's tokens do not depend on where calls cut it: with
unchanged params, a run cut into many calls returns exactly the rows of one uninterrupted call.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from r1jax.model import ModelConfig, cache_shardings, init_cache
from r1jax.sampling import continuous, paged
from r1jax.sampling import windows as windows_lib
from r1jax.sampling.continuous import Prompts, SlotState
from r1jax.sampling.methods import SamplingMethod
from r1jax.sharding import named_sharding


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Pool:
    """The device state kept between calls: the L lanes' prefilled prompts and the slots with
    the R = L * G request rows (``SlotState``; ``queue_end`` counts the admitted requests)."""

    prompts: Prompts
    slots: SlotState


def pool_shardings(
    config, lanes, width, num_samples, max_new, slots, stop_width, mesh, page_size=0
):
    """NamedShardings of a ``Pool``: lanes, requests and slots over the data axes (None
    without a mesh, or with a paged cache: XLA places the one page store, which on a mesh it
    keeps whole on every device; ``pool_shards`` splits the pool in D)."""
    if mesh is None or page_size:
        return None
    cache = cache_shardings(config, lanes, width, mesh)
    per_row = lambda *shape: named_sharding(mesh, ("batch",) + (None,) * (len(shape) - 1), shape)
    prompts = Prompts(
        k=cache.k,
        v=cache.v,
        positions=cache.positions,
        segment_ids=cache.segment_ids,
        lengths_Q=per_row(lanes),
        logits_QV=per_row(lanes, config.vocab_size),
    )
    cache_len = width + max_new
    requests = lanes * num_samples
    slot_state = continuous.slot_state_shardings(
        config, requests, max_new, stop_width, slots, cache_len, mesh
    )
    return Pool(prompts=prompts, slots=slot_state)


def empty_pool(
    key,
    *,
    config: ModelConfig,
    lanes,
    width,
    num_samples,
    max_new_tokens,
    slots,
    stop_width,
    pad_id,
    page_size=0,
    gen_pages=0,
) -> Pool:
    """No lane admitted, every slot idle: prompts ``[L, width]``, R = L * G rows of
    ``max_new_tokens``, ``slots`` decode slots; ``key`` draws every request's keys.
    ``page_size`` > 0: the slots' cache is paged (``paged.py``, ``gen_pages`` generation
    pages) and the lanes' keys/values live in its prompt pages (``Prompts.k``/``v`` empty)."""
    cache = init_cache(config, lanes, 0 if page_size else width)
    prompts = Prompts(
        k=cache.k,
        v=cache.v,
        positions=jnp.zeros((lanes, width), jnp.int32),
        segment_ids=jnp.zeros((lanes, width), jnp.int32),
        lengths_Q=jnp.zeros((lanes,), jnp.int32),
        logits_QV=jnp.zeros((lanes, config.vocab_size), jnp.float32),
    )
    s = continuous.empty_state(
        config, lanes * num_samples, slots, width, max_new_tokens, stop_width, pad_id, key
    )
    s = dataclasses.replace(s, queue_end=jnp.zeros_like(s.queue_end))  # nothing queued yet
    if page_size:
        store = paged.empty_store(
            config,
            prompts=lanes,
            prompt_len=width,
            slots=slots,
            page_size=page_size,
            gen_pages=gen_pages,
            max_new=max_new_tokens,
        )
        s = dataclasses.replace(s, cache=store)
    return Pool(prompts=prompts, slots=s)


def _write_rows(a, rows, start, axis=0):
    return jax.lax.dynamic_update_slice_in_dim(a, rows.astype(a.dtype), start, axis)


def admit(
    params,
    pool: Pool,
    prompt_QP,
    prompt_mask_QP,
    budget_N=None,
    *,
    config,
    num_samples,
    max_new_tokens,
    pad_id,
) -> Pool:
    """Prefills Q left-padded prompts ``[Q, P]`` into the next Q lanes of the ring (the host
    has harvested them) and queues their N = Q * G requests, rows reset; ``budget_N``: each
    request's new-token limit (default ``max_new_tokens``)."""
    q = prompt_QP.shape[0]
    lanes = pool.prompts.lengths_Q.shape[0]
    new = continuous.prefill_prompts(
        params, prompt_QP, prompt_mask_QP, config=config, max_new_tokens=max_new_tokens
    )
    s = pool.slots
    lane0 = s.queue_end // num_samples % lanes
    old = pool.prompts
    is_paged = isinstance(s.cache, paged.PagedSlots)
    if is_paged:  # the keys/values go to the lanes' prompt pages
        s = dataclasses.replace(s, cache=paged.write_prompt_pages(s.cache, new, lane0))
    prompts = Prompts(
        k=old.k if is_paged else _write_rows(old.k, new.k, lane0, axis=1),
        v=old.v if is_paged else _write_rows(old.v, new.v, lane0, axis=1),
        positions=_write_rows(old.positions, new.positions, lane0),
        segment_ids=_write_rows(old.segment_ids, new.segment_ids, lane0),
        lengths_Q=_write_rows(old.lengths_Q, new.lengths_Q, lane0),
        logits_QV=_write_rows(old.logits_QV, new.logits_QV, lane0),
    )
    n, row0 = q * num_samples, lane0 * num_samples
    fill = lambda a, value: _write_rows(a, jnp.full((n, *a.shape[1:]), value, a.dtype), row0)
    s = dataclasses.replace(
        s,
        queue_end=s.queue_end + n,
        tokens_RT=fill(s.tokens_RT, pad_id),
        logprobs_RT=fill(s.logprobs_RT, 0),
        lengths_R=fill(s.lengths_R, 0),
        done_R=fill(s.done_R, False),
        budget_R=fill(s.budget_R, max_new_tokens)
        if budget_N is None
        else _write_rows(s.budget_R, budget_N, row0),
        wait_R=fill(s.wait_R, 0),
    )
    return Pool(prompts=prompts, slots=s)


def _loop_parts(params, prompts: Prompts, stop_table_EW, is_paged, **options):
    """``advance``'s ``(fit, refill, step)``: the state's sharding constraint, the slot
    refill and one decode step (recorded, then refilled); ``options``: ``advance``'s."""
    config, mesh, key_ids = options["config"], options["mesh"], options["key_ids"]
    statics = dict(method=options["method"], num_samples=options["num_samples"])
    fit = functools.partial(continuous.constrain, config=config, mesh=mesh)
    hooks = dict(assign=paged.assign, release=paged.release) if is_paged else {}
    if is_paged:  # one page store, placed by XLA (``pool_shards`` splits it)
        fit = lambda s: s
    refill = functools.partial(
        continuous.refill,
        prompts=prompts,
        stop_table_EW=stop_table_EW,
        max_new=options["max_new_tokens"],
        key_ids=key_ids,
        **statics,
        **hooks,
    )
    decode_step = functools.partial(
        paged.decode_step if is_paged else continuous.decode_step,
        params,
        prompts,
        config=config,
        key_ids=key_ids,
        **statics,
    )
    max_new = options["max_new_tokens"]
    step = lambda s, window: fit(
        refill(*continuous.record(*decode_step(s, window=window), stop_table_EW, max_new))
    )
    return fit, refill, step


def begin(params, pool: Pool, stop_table_EW, **options) -> SlotState:
    """``advance``'s first part: the idle slots take queued requests."""
    is_paged = isinstance(pool.slots.cache, paged.PagedSlots)
    fit, refill, _ = _loop_parts(params, pool.prompts, stop_table_EW, is_paged, **options)
    s = fit(pool.slots)
    s = dataclasses.replace(s, low_R=jnp.full_like(s.low_R, s.tokens_RT.shape[1]))  # this call's
    return fit(refill(s, s.request_C < 0))


def step(params, pool: Pool, stop_table_EW, window=None, **options) -> SlotState:
    """``advance``'s loop body: one decode step of every slot (attending over ``window``),
    finished slots refilled."""
    is_paged = isinstance(pool.slots.cache, paged.PagedSlots)
    parts = _loop_parts(params, pool.prompts, stop_table_EW, is_paged, **options)
    return parts[2](pool.slots, window)


def needed_columns(s: SlotState) -> jax.Array:
    """The cache columns the busy slots' next writes need, paged or not."""
    paged_cache = isinstance(s.cache, paged.PagedSlots)
    return (paged.needed_columns if paged_cache else continuous.needed_columns)(s)


def window_ends(pool: Pool, windows: int) -> tuple[int, ...]:
    """The decode windows of ``pool`` (or of shards' pools, ``[D, ...]``): in whole pages,
    the last its rows' reach (prompt width + T, from the pool's own shapes)."""
    cache, max_new = pool.slots.cache, pool.slots.tokens_RT.shape[-1]
    z = cache.pages.page_size if isinstance(cache, paged.PagedSlots) else 1
    return windows_lib.window_ends(pool.prompts.positions.shape[-1], max_new, windows, z)


def keep_going(s: SlotState, target_end, max_steps, start) -> jax.Array:
    """``advance``'s loop condition: a request below ``target_end`` unfinished, work left
    and fewer than ``max_steps`` steps since decode step ``start``."""
    busy_C = s.request_C >= 0
    target_left = (s.next_request < target_end) | jnp.any(busy_C & (s.request_C < target_end))
    work_left = jnp.any(busy_C) | (s.next_request < s.queue_end)
    return work_left & target_left & (s.iterations - start < max_steps)


def advance(
    params,
    pool: Pool,
    stop_table_EW,
    target_end,
    max_steps,
    *,
    config: ModelConfig,
    method: SamplingMethod,
    num_samples: int,
    max_new_tokens: int,
    mesh=None,
    key_ids=None,
    windows: int = 1,
) -> Pool:
    """Decodes until every request with an id below ``target_end`` has finished, nothing is
    left to do, or ``max_steps`` decode steps have run (int32 scalars, traced: one compile).
    Idle slots first take queued requests. ``key_ids`` as ``continuous.refill``'s;
    ``windows``: decode windows (``windows.py``)."""
    options = dict(
        config=config, method=method, num_samples=num_samples, max_new_tokens=max_new_tokens,
        mesh=mesh, key_ids=key_ids,
    )  # fmt: skip
    s = begin(params, pool, stop_table_EW, **options)
    start = s.iterations
    body = lambda s, w: step(params, Pool(pool.prompts, s), stop_table_EW, w, **options)
    s = windows_lib.windowed_while(
        lambda s: keep_going(s, target_end, max_steps, start), body, s,
        ends=window_ends(pool, windows), needed=needed_columns,
    )  # fmt: skip
    return Pool(prompts=pool.prompts, slots=s)


def harvest(pool: Pool, row0, since, *, rows: int):
    """Rows ``row0 ... row0 + rows - 1`` of the ring, ``(tokens, logprobs, lengths, done,
    wait)`` with each row's queue wait counted from decode step ``since`` (its batch's
    admission), and the pool's counters ``(decode steps, slot-steps)`` so far."""
    s = pool.slots
    take = lambda a: jax.lax.dynamic_slice_in_dim(a, row0, rows)
    wait = jnp.maximum(s.wait_R - since, 0)
    fields = (s.tokens_RT, s.logprobs_RT, s.lengths_R, s.done_R, wait)
    return tuple(map(take, fields)), (s.iterations, s.slot_steps)
