"""A paged KV cache for one-token decode steps: fixed-size pages, a page table per row.

Shape letters as in ``cache.py``, plus C rows (decode slots), N pages of Z tokens, M pages per
row (``M * Z`` = the row's reach, prompt + new tokens).

Keys and values ``[K, L, N, Z, H]`` are one store of pages for all rows, in the layout of
JAX's Pallas paged-attention kernels: seen as ``[K, L * N, Z, H]`` (a free reshape), layer l's
page n is page ``l * N + n``, so a kernel reads any layer in place; ``table`` ``[C, M]`` lists
each row's pages in order. A row is packed from token 0: its token at position p sits in page
``table[c, p // Z]`` at ``p % Z`` (its position is its index), and its keys are tokens
``[0, length)``, so no positions or segment ids are stored. Page 0 is the null page: never
written, read only past a row's length; a row's unused table entries point to it. Rows may
share pages (the G samples of a prompt read the prompt's full pages; the sampler gives each a
copy of a partly filled last prompt page before its first write), so memory follows the
tokens held, not rows x reach.

A decode step writes each writing row's token at ``length`` (the caller allocates that page
first) and attends over ``[0, length]``:
- ``kernel`` given (``paged_attention.paged_kernel``: TPU or GPU, grouped-query attention
  without a sliding window): the Pallas kernel reads the row's pages in place;
- else (every backend): each layer gathers every row's keys as the contiguous cache's
  left-padded row (token p at column ``lead + p``, ``lead`` the row's left padding there), a
  ``[C, K, H, W]`` temporary, masked by length: the same keys in the same columns as the
  contiguous cache, so the attention computes the same numbers (``paged == contiguous`` is
  tested bit for bit).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model import layers
from r1jax.model.mla import cache_dims
from r1jax.model.transformer import _block, embed, layer_stacks, model_rope
from r1jax.model.weights import materialize


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PagedKVCache:
    """Pages ``k`` ``[K, L, N, Z, Hk]``, ``v`` ``[K, L, N, Z, Hv]``; ``table`` ``[C, M]``
    (page ids, 0: null); ``length`` ``[C]`` (each row's tokens, the next write index)."""

    k: jax.Array
    v: jax.Array
    table: jax.Array
    length: jax.Array

    @property
    def page_size(self) -> int:  # from the last dims: a sharded pool's stores lead with [D]
        return self.k.shape[-2]

    @property
    def max_length(self) -> int:
        return self.table.shape[-1] * self.page_size


def init_paged_cache(
    config: ModelConfig, rows: int, num_pages: int, page_size: int, pages_per_row: int
) -> PagedKVCache:
    """Empty pages (page 0 the null page) and tables pointing at the null page."""
    kv_heads, key_dim, value_dim = cache_dims(config)  # MLA: one latent head, no values
    lead = (kv_heads, config.num_layers, num_pages, page_size)
    return PagedKVCache(
        k=jnp.zeros((*lead, key_dim), config.dtype),
        v=jnp.zeros((*lead, value_dim), config.dtype),
        table=jnp.zeros((rows, pages_per_row), jnp.int32),
        length=jnp.zeros((rows,), jnp.int32),
    )


def _gather_rows(table_CM, k_store, v_store, index, lead_C, width: int):
    """Each row's tokens of layer ``index`` as the contiguous cache's left-padded row of
    ``width`` columns (token p at column ``lead + p``; columns before ``lead`` read token 0):
    keys ``[C, K, H, W]``, values ``[C, K, W, H]``. One gather of H-vectors each, every other
    dim indexed (as a window, the heads made XLA copy the store into another layout on TPU)."""
    z = k_store.shape[3]
    p_CW = jnp.clip(jnp.arange(width)[None] - lead_C[:, None], 0, table_CM.shape[1] * z - 1)
    page_1CW = jnp.take_along_axis(table_CM, p_CW // z, axis=1)[None]
    at = (jnp.arange(k_store.shape[0])[:, None, None], index, page_1CW, (p_CW % z)[None])
    keys, values = k_store[at], v_store[at]  # [K, C, W, H]
    return keys.transpose(1, 0, 3, 2), values.transpose(1, 0, 2, 3)


def _write_token(cache: PagedKVCache, write_C, k_store, v_store, index, k_CKH, v_CKH):
    """The writing rows' keys and values ``[C, K, H]`` of layer ``index`` at their
    ``length`` (their page ``table[c, length // Z]``, offset ``length % Z``)."""
    z, rows_C = cache.page_size, jnp.arange(write_C.shape[0])
    page_1C = jnp.where(write_C, cache.table[rows_C, cache.length // z], cache.k.shape[2])[None]
    heads_K1 = jnp.arange(k_store.shape[0])[:, None]
    # Every dim but H indexed (the heads too): a scatter of H-vectors, which TPU lays out as
    # the store; with the heads as a window XLA chose another layout for the scattered store
    # and copied the whole store into it and back in every layer of every step.
    offset_1C = (cache.length % z)[None]
    put = lambda store, new: store.at[heads_K1, index, page_1C, offset_1C].set(
        new.swapaxes(0, 1).astype(store.dtype),
        mode="drop",  # page N (not writing): dropped
    )
    return put(k_store, k_CKH), put(v_store, v_CKH)


def paged_decode_states(
    params: dict,
    tokens_C1,
    config: ModelConfig,
    *,
    write_C,
    cache: PagedKVCache,
    lead_C,
    window: int | None = None,
    kernel=None,
):
    """One token per row through the decoder over a paged cache: final-norm hidden states
    ``[C, 1, D]`` and the cache with the writing rows' (``write_C``) tokens in their pages.
    Each row's token is at position ``length`` (its write index). Rows not writing compute too
    (their output is the caller's to drop) but write nothing. ``lead_C``: each row's left
    padding in the contiguous cache's row (the gather's column of token 0); ``window`` (a
    multiple of Z, at least every writing row's ``lead + length + 1``): attention reads that
    many columns (``lead + length`` of them live; default all M * Z); ``kernel``:
    ``paged_attention.paged_kernel``'s, or None to gather."""
    dtype, z, width = config.dtype, cache.page_size, window or cache.max_length
    length_C = cache.length + write_C.astype(jnp.int32)  # the keys attended
    positions_C1 = cache.length[:, None]
    segment_C1 = write_C[:, None].astype(jnp.int32)
    k_pos = jnp.arange(width)[None] - lead_C[:, None]  # [C, W]: token p at column lead + p
    k_seg = ((k_pos >= 0) & (k_pos < length_C[:, None])).astype(jnp.int32)
    q_offset = jnp.max(jnp.where(write_C, lead_C + cache.length, 0))
    table_CP = cache.table[:, : -(-width // z)]
    x = embed(params, tokens_C1, config)
    rope = model_rope(config, positions_C1)
    cast = lambda tree: materialize(tree, dtype)  # one layer's weights, in the compute dtype
    write = functools.partial(_write_token, cache, write_C)

    def body(carry, xs):
        x, k_store, v_store = carry
        p, index = xs

        def gathered(k, v):  # k [C, K, H, 1], v [C, K, 1, H]
            k_all, v_all = write(k_store, v_store, index, k[..., 0], v[:, :, 0])
            keys, values = _gather_rows(cache.table, k_all, v_all, index, lead_C, width)
            return keys.astype(dtype), values.astype(dtype), k_pos, k_seg, (k_all, v_all)

        def in_place(q, k, v):  # q [C, 1, N, H], k and v [C, 1, K, H]
            k_all, v_all = write(k_store, v_store, index, k[:, 0], v[:, 0])
            out = kernel(q[:, 0], k_all, v_all, index, table_CP, length_C)
            return out[:, None].astype(dtype), (k_all, v_all)

        x, (k_store, v_store), _ = _block(
            x, cast(p), config, rope, positions_C1, segment_C1, gathered, q_offset,
            attend_fn=in_place if kernel is not None else None,
        )  # fmt: skip
        return (x, k_store, v_store), None

    carry = (x, cache.k, cache.v)
    for stack, indices in layer_stacks(params, config):
        carry, _ = jax.lax.scan(body, carry, (stack, indices), unroll=config.scan_unroll)
    x, k, v = carry
    x = layers.rms_norm(x, params["final_norm"].astype(dtype), config.rms_norm_eps)
    return x, dataclasses.replace(cache, k=k, v=v, length=length_C)
