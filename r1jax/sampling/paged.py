"""Continuous batching over a paged KV cache (``r1jax.model.paged_cache``): memory follows the
tokens held, not slots x (prompt + new tokens).

Shape letters as in ``continuous.py``, plus Z tokens per page, Pp = P / Z prompt pages per
prompt, M = ceil((P + T) / Z) pages per slot, N pages in the store: page 0 (null), the Q
prompts' Q * Pp pages (written once by the prefill, each prompt packed from token 0, and read
by all G samples of a prompt), then ``gen_pages`` pages for generated tokens, handed out from
a free list.

A slot whose next write falls in a page it does not own (the null page, or a prompt page) takes
a page from the free list, oldest request first; where that prompt page holds the prompt's
last tokens (a prompt of n tokens, n % Z > 0, writes its first token at n), the new page is
first a copy of it (copy on write: one page per request, the full prompt pages stay shared).
A slot whose request ends gives its pages back. When pages run short a slot waits (it
computes but writes nothing, and samples the same token again next step: its keys depend on
its request and token count only). If every busy slot waits, the youngest slot holding pages is
rewound to its first token (its pages freed; it decodes again from there, redrawing the same
tokens), so the oldest request always finishes: ``gen_pages`` >= ``request_pages`` (one
request's worth) is enough for progress. Rows equal the contiguous continuous sampler's bit
for bit when ``T`` is a multiple of Z (``paged_cache``: the gather presents each row as the
contiguous cache's); on TPU and GPU decode attention is JAX's Pallas paged kernel
(``model/paged_attention.py``), within rounding of it.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from r1jax.model import ModelConfig
from r1jax.model.paged_attention import paged_kernel
from r1jax.model.paged_cache import PagedKVCache, init_paged_cache, paged_decode_states
from r1jax.model.transformer import logits_from_hidden
from r1jax.sampling import continuous
from r1jax.sampling import windows as windows_lib
from r1jax.sampling.continuous import Prompts, SlotState
from r1jax.sampling.methods import SamplingMethod, request_keys, sample_rows, slot_key_ids


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PagedSlots:
    """The slots' cache: ``pages`` (``PagedKVCache``), the free list ``free`` ``[N]`` (its
    first ``top`` entries are free page ids), ``rewinds`` (tokens dropped by rewinding),
    ``peak_pages`` (the most generation pages held at once) and ``lead`` ``[C]`` (each slot's
    prompt padding in the contiguous cache's row: ``paged_decode_states``' ``lead_C``).
    Static: ``prompt_pages`` (Pp) and ``shared_end`` (page ids below it are the null page and
    the prompt pages, which no slot owns)."""

    pages: PagedKVCache
    free: jax.Array
    top: jax.Array
    rewinds: jax.Array
    peak_pages: jax.Array
    lead: jax.Array
    prompt_pages: int = dataclasses.field(default=0, metadata=dict(static=True))
    shared_end: int = dataclasses.field(default=1, metadata=dict(static=True))


def page_counts(prompt_len: int, max_new: int, page_size: int) -> tuple[int, int]:
    """(Pp, pages per slot M) for a prompt bucket and ``max_new_tokens``."""
    if prompt_len % page_size:
        raise ValueError(f"page_size={page_size} must divide the prompt bucket {prompt_len}")
    return prompt_len // page_size, -(-(prompt_len + max_new) // page_size)


def request_pages(max_new: int, page_size: int) -> int:
    """The most pages one request owns: its T - 1 written tokens from position n on, the first
    page a copy of the prompt's last one when n % Z > 0 (``ceil((T + Z - 2) / Z)``)."""
    return max(-(-(max_new + page_size - 2) // page_size), 1)


def _push(slots: PagedSlots, mask_CM) -> PagedSlots:
    """Frees the table entries in ``mask_CM`` (their pages back on the free list)."""
    pages = slots.pages
    flat = mask_CM.reshape(-1)
    ranks = jnp.cumsum(flat) - 1
    where = jnp.where(flat, slots.top + ranks, slots.free.shape[0])
    free = slots.free.at[where].set(pages.table.reshape(-1), mode="drop")
    table = jnp.where(mask_CM, 0, pages.table)
    top = slots.top + jnp.sum(flat, dtype=jnp.int32)
    return dataclasses.replace(
        slots, pages=dataclasses.replace(pages, table=table), free=free, top=top
    )


def _held_CM(slots: PagedSlots) -> jax.Array:
    """bool ``[C, M]``: the generation pages each slot holds."""
    return slots.pages.table >= slots.shared_end


def release(slots: PagedSlots, need_C) -> PagedSlots:
    """``continuous.refill``'s hook: the slots in ``need_C`` give back their pages."""
    return _push(slots, _held_CM(slots) & need_C[:, None])


def assign(slots: PagedSlots, prompts: Prompts, slot, prompt) -> PagedSlots:
    """``continuous.refill``'s hook: slot ``slot`` reads prompt ``prompt``'s pages, its next
    write at the prompt's length."""
    pp, pages = slots.prompt_pages, slots.pages
    row = jnp.zeros((pages.table.shape[1],), jnp.int32)
    row = row.at[:pp].set(1 + prompt * pp + jnp.arange(pp, dtype=jnp.int32))
    n = prompts.lengths_Q[prompt]
    pages = dataclasses.replace(
        pages, table=pages.table.at[slot].set(row), length=pages.length.at[slot].set(n)
    )
    lead = slots.lead.at[slot].set(pp * pages.page_size - n)
    return dataclasses.replace(slots, pages=pages, lead=lead)


def _copy_pages(pages: PagedKVCache, src_C, dst_C, copy_C) -> PagedKVCache:
    """Page ``src`` copied to page ``dst`` for the slots in ``copy_C`` (every layer and head).
    One gather of C pages and a scatter, every step: a loop over the copying slots only (or a
    ``cond``) becomes, under ``paged_shards``' vmap, a select between two whole stores."""
    kh, num_layers, n = pages.k.shape[:3]
    dst_C = jnp.where(copy_C, dst_C, n)  # out of range: dropped
    # Heads and layers indexed too: a scatter of [Z, H] pages, laid out as the store (with
    # them as windows XLA copied the whole store into another layout for it on TPU).
    heads_K11, layers_1L1 = jnp.arange(kh)[:, None, None], jnp.arange(num_layers)[None, :, None]
    move = lambda a: a.at[heads_K11, layers_1L1, dst_C].set(
        a[heads_K11, layers_1L1, src_C], mode="drop"
    )
    return dataclasses.replace(pages, k=move(pages.k), v=move(pages.v))


def _allocate(s: SlotState, busy_C) -> tuple[SlotState, jax.Array]:
    """Pages for the busy slots whose next token falls in a page they do not own, oldest
    request first (a copy of the prompt page holding the prompt's last tokens where the write
    follows them); returns the state and ``write_C`` (busy slots that can write this step)."""
    slots, big = s.cache, jnp.iinfo(jnp.int32).max
    pages, z = slots.pages, slots.pages.page_size
    rows_C = jnp.arange(busy_C.shape[0])
    column_C = pages.length // z
    old_C = pages.table[rows_C, column_C]
    need_C = busy_C & (old_C < slots.shared_end)
    order = jnp.argsort(jnp.where(need_C, s.request_C, big))
    rank_C = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))
    grant_C = need_C & (rank_C < slots.top)
    page_C = slots.free[jnp.maximum(slots.top - 1 - rank_C, 0)]
    copy_C = grant_C & (old_C > 0) & (pages.length % z > 0)
    pages = _copy_pages(pages, old_C, page_C, copy_C)
    granted = jnp.where(grant_C, rows_C, busy_C.shape[0])
    pages = dataclasses.replace(
        pages, table=pages.table.at[granted, column_C].set(page_C, mode="drop")
    )
    top = slots.top - jnp.sum(grant_C, dtype=jnp.int32)
    slots = dataclasses.replace(slots, pages=pages, top=top)
    held = jnp.sum(_held_CM(slots), dtype=jnp.int32)
    slots = dataclasses.replace(slots, peak_pages=jnp.maximum(slots.peak_pages, held))
    return dataclasses.replace(s, cache=slots), busy_C & ~(need_C & ~grant_C)


def _rewind_youngest(s: SlotState, busy_C, prompts: Prompts, num_samples: int) -> SlotState:
    """Frees the pages of the youngest busy slot holding any and sets it back to its first
    token (its prompt's pages again; the token's keys are written by the next step)."""
    slots = s.cache
    holds_C = busy_C & jnp.any(_held_CM(slots), axis=1)
    slot = jnp.argmax(jnp.where(holds_C, s.request_C, -1))
    one_C = holds_C & (jnp.arange(busy_C.shape[0]) == slot)
    slots = _push(slots, _held_CM(slots) & one_C[:, None])
    row = jnp.maximum(s.request_C[slot], 0) % s.tokens_RT.shape[0]
    prompt = row // num_samples
    slots = jax.lax.cond(
        jnp.any(one_C), lambda x: assign(x, prompts, slot, prompt), lambda x: x, slots
    )
    first = s.tokens_RT[row, 0]
    rewound = jnp.where(jnp.any(one_C), row, s.tokens_RT.shape[0])  # out of range: none
    recent = jnp.full(s.recent_CW.shape[1:], -1, jnp.int32).at[-1].set(first)
    dropped = jnp.where(jnp.any(one_C), s.count_C[slot] - 1, 0)
    slots = dataclasses.replace(slots, rewinds=slots.rewinds + dropped)
    return dataclasses.replace(
        s,
        cache=slots,
        count_C=jnp.where(one_C, 1, s.count_C),
        last_C=jnp.where(one_C, first, s.last_C),
        recent_CW=jnp.where(one_C[:, None], recent[None], s.recent_CW),
        lengths_R=s.lengths_R.at[rewound].set(1, mode="drop"),
        low_R=s.low_R.at[rewound].min(1, mode="drop"),
    )


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
    """``continuous.decode_step`` over pages: allocates, rewinds if every busy slot waits,
    then one token for every slot that can write; returns ``(state, write_C, tokens,
    logprobs)`` for ``continuous.record`` (``key_ids``, ``window`` as its)."""
    busy_C = s.request_C >= 0
    s, write_C = _allocate(s, busy_C)
    s = jax.lax.cond(
        jnp.any(busy_C) & ~jnp.any(write_C),
        lambda s: _rewind_youngest(s, busy_C, prompts, num_samples),
        lambda s: s,
        s,
    )
    hidden_C1D, pages = paged_decode_states(
        params,
        s.last_C[:, None],
        config,
        write_C=write_C,
        cache=s.cache.pages,
        lead_C=s.cache.lead,
        window=window,
        kernel=paged_kernel(config, s.cache.pages.page_size),
    )
    logits_CV = logits_from_hidden(params, hidden_C1D, config)[:, 0]
    keys_C = request_keys(s.key, slot_key_ids(s.request_C, key_ids), s.count_C)
    tokens_C, logprobs_C = sample_rows(method, logits_CV, keys_C)
    s = dataclasses.replace(
        s,
        cache=dataclasses.replace(s.cache, pages=pages),
        iterations=s.iterations + 1,
        slot_steps=s.slot_steps + busy_C.shape[0],
    )
    return s, write_C, tokens_C, logprobs_C


def prompt_page_store(prompts: Prompts, page_size: int):
    """The prefilled prompts packed from token 0 (``[Q, P]`` left-padded rows rotated by
    their padding) and cut into pages: keys ``[K, L, Q * Pp, Z, Hk]``, values ``[K, L, Q * Pp,
    Z, Hv]``."""
    l, q, kh, hk, p = prompts.k.shape
    pp, z, hv = p // page_size, page_size, prompts.v.shape[-1]  # MLA: no values, hv 0
    source_QP = (jnp.arange(p)[None] + p - prompts.lengths_Q[:, None]) % p
    keys = jnp.take_along_axis(prompts.k, source_QP[None, :, None, None], axis=4)  # [L,Q,K,H,P]
    values = jnp.take_along_axis(prompts.v, source_QP[None, :, None, :, None], axis=3)
    keys = keys.reshape(l, q, kh, hk, pp, z).transpose(2, 0, 1, 4, 5, 3)
    values = values.reshape(l, q, kh, pp, z, hv).transpose(2, 0, 1, 3, 4, 5)
    return keys.reshape(kh, l, q * pp, z, hk), values.reshape(kh, l, q * pp, z, hv)


def empty_store(
    config, *, prompts: int, prompt_len: int, slots: int, page_size: int, gen_pages: int, max_new
) -> PagedSlots:
    """An empty page store: the null page, ``prompts`` x Pp prompt pages (written by
    ``write_prompt_pages``), ``gen_pages`` free pages; every slot idle at the prompt width."""
    pp, m = page_counts(prompt_len, max_new, page_size)
    num_pages = 1 + prompts * pp + gen_pages
    cache = init_paged_cache(config, slots, num_pages, page_size, m)
    cache = dataclasses.replace(cache, length=jnp.full((slots,), prompt_len, jnp.int32))
    free = jnp.arange(1 + prompts * pp, num_pages, dtype=jnp.int32)[::-1]
    free = jnp.concatenate([free, jnp.zeros((num_pages - gen_pages,), jnp.int32)])
    zero, lead = jnp.zeros((), jnp.int32), jnp.zeros((slots,), jnp.int32)
    top = jnp.full((), gen_pages, jnp.int32)
    return PagedSlots(cache, free, top, zero, zero, lead, pp, 1 + prompts * pp)


def write_prompt_pages(slots: PagedSlots, prompts: Prompts, first) -> PagedSlots:
    """Prefilled prompts ``[Q, P]`` written as the prompt pages of prompts ``first ...
    first + Q - 1`` (``first``: traced)."""
    pages = slots.pages
    k, v = prompt_page_store(prompts, pages.page_size)
    start = 1 + first * slots.prompt_pages
    write = lambda a, x: jax.lax.dynamic_update_slice_in_dim(a, x.astype(a.dtype), start, 2)
    pages = dataclasses.replace(pages, k=write(pages.k, k), v=write(pages.v, v))
    return dataclasses.replace(slots, pages=pages)


def start(
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
    page_size: int,
    gen_pages: int,
    pad_id: int,
    budget_R: jax.Array | None = None,
    first_request=0,
) -> tuple[Prompts, SlotState]:
    """The prompts prefilled into their pages and the slots given their first requests:
    ``(prompts, state)`` for ``step``. ``first_request``: the first request's id (its keys;
    ``paged_shards`` gives each shard its block's ids)."""
    num_prompts, length = prompt_QP.shape
    num_requests, width = num_prompts * num_samples, stop_table_EW.shape[1]
    prompts = continuous.prefill_prompts(
        params, prompt_QP, prompt_mask_QP, config=config, max_new_tokens=max_new_tokens
    )
    s = continuous.empty_state(
        config, num_requests, num_slots, 1, max_new_tokens, width, pad_id, key
    )
    cache = empty_store(
        config,
        prompts=num_prompts,
        prompt_len=length,
        slots=num_slots,
        page_size=page_size,
        gen_pages=gen_pages,
        max_new=max_new_tokens,
    )
    cache = write_prompt_pages(cache, prompts, 0)
    first = jnp.asarray(first_request, jnp.int32)
    s = dataclasses.replace(s, cache=cache, next_request=first, queue_end=first + num_requests)
    if budget_R is not None:
        s = dataclasses.replace(s, budget_R=budget_R.astype(jnp.int32))
    refill = _refill(prompts, stop_table_EW, method, num_samples, max_new_tokens)
    return prompts, refill(s, jnp.ones((num_slots,), bool))


def _refill(prompts, stop_table_EW, method, num_samples, max_new):
    """``continuous.refill`` with the paged cache's hooks."""
    return functools.partial(
        continuous.refill,
        prompts=prompts,
        stop_table_EW=stop_table_EW,
        method=method,
        num_samples=num_samples,
        max_new=max_new,
        assign=assign,
        release=release,
    )


def step(
    params, prompts, stop_table_EW, s: SlotState, window=None, *, config, method, num_samples,
    max_new,
):  # fmt: skip
    """One decode step of every slot (attending over ``window``, see ``decode_step``), its
    tokens recorded, finished slots refilled."""
    statics = dict(config=config, method=method, num_samples=num_samples, window=window)
    out = decode_step(params, prompts, s, **statics)
    refill = _refill(prompts, stop_table_EW, method, num_samples, max_new)
    return refill(*continuous.record(*out, stop_table_EW, max_new))


def keep_going(s: SlotState) -> jax.Array:
    """Whether any slot is busy (refills leave none idle while requests are queued)."""
    return jnp.any(s.request_C >= 0)


def needed_columns(s: SlotState) -> jax.Array:
    """The page columns the busy slots' next writes need (``windows.live_end``)."""
    return windows_lib.live_end(s.cache.lead + s.cache.pages.length, s.request_C >= 0)


def window_ends(prompt_len: int, max_new: int, page_size: int, windows: int) -> tuple[int, ...]:
    """The decode windows of a paged loop: ``windows.window_ends`` in whole pages."""
    return windows_lib.window_ends(prompt_len, max_new, windows, multiple=page_size)


def sample(
    params, prompt_QP, prompt_mask_QP, key, stop_table_EW, windows: int = 1, **options
) -> SlotState:
    """``continuous.sample`` over a paged cache (no tail shrinking): ``start``, then ``step``
    until every request is done, in ``windows`` decode windows (``windows.py``); ``options``:
    ``start``'s keywords. The final state's ``cache`` is the ``PagedSlots`` (``rewinds``,
    ``peak_pages``)."""
    prompts, s = start(params, prompt_QP, prompt_mask_QP, key, stop_table_EW, **options)
    statics = {k: options[k] for k in ("config", "method", "num_samples")}
    advance = functools.partial(
        step, params, prompts, stop_table_EW, max_new=options["max_new_tokens"], **statics
    )
    ends = window_ends(prompt_QP.shape[1], options["max_new_tokens"], options["page_size"], windows)
    return windows_lib.windowed_while(keep_going, advance, s, ends=ends, needed=needed_columns)
