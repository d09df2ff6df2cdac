"""A paged KV cache for one-token decode steps: fixed-size pages, a page table per row.

Shape letters as in ``cache.py``, plus C rows (decode slots), N pages of Z tokens, M pages per
row (``M * Z`` = the row's reach, prompt + new tokens).

Keys ``[L, N, K, H, Z]`` and values ``[L, N, K, Z, H]`` are one store of pages for all rows;
``table`` ``[C, M]`` lists each row's pages in order, so a row's keys are the concatenation of
its pages (the contiguous cache's row, page by page). Page 0 is the null page: never written,
segment 0, never attended; a row's unused table entries point to it. Rows may share pages (the
G samples of a prompt read the prompt's pages), so memory follows the tokens held, not rows x
reach. A decode step writes each writing row's token into its page ``table[c, length // Z]``
at ``length % Z`` (the caller allocates that page first) and attends over the row's M pages:
the same keys, positions and segment ids, in the same order, as the contiguous cache's row, so
the attention computes the same numbers (``paged == contiguous`` is tested bit for bit).

On every backend the M pages of every row (or its first W, a decode window that holds every
row's write: ``sampling/windows.py``) are gathered for each layer, a ``[C, K, H, M * Z]``
temporary per layer. JAX's Pallas paged-attention kernels (GPU, TPU) read pages in place but
mask keys by row length alone, while prompt pages here hold left padding (masked by segment id)
shared by a prompt's G samples: docs/sampler.md says what using them would take.
"""

from __future__ import annotations

import dataclasses

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
    """Pages ``k`` ``[L, N, K, H, Z]``, ``v`` ``[L, N, K, Z, H]``, their slots' ``positions``
    and ``segment_ids`` ``[N, Z]``; ``table`` ``[C, M]`` (page ids, 0: null); ``length``
    ``[C]`` (each row's tokens, the next write index)."""

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    table: jax.Array
    length: jax.Array

    @property
    def page_size(self) -> int:
        return self.v.shape[3]

    @property
    def max_length(self) -> int:
        return self.table.shape[1] * self.page_size


def init_paged_cache(
    config: ModelConfig, rows: int, num_pages: int, page_size: int, pages_per_row: int
) -> PagedKVCache:
    """Empty pages (page 0 the null page) and tables pointing at the null page."""
    kv_heads, key_dim, value_dim = cache_dims(config)  # MLA: one latent head, no values
    lead = (config.num_layers, num_pages, kv_heads)
    return PagedKVCache(
        k=jnp.zeros((*lead, key_dim, page_size), config.dtype),
        v=jnp.zeros((*lead, page_size, value_dim), config.dtype),
        positions=jnp.zeros((num_pages, page_size), jnp.int32),
        segment_ids=jnp.zeros((num_pages, page_size), jnp.int32),
        table=jnp.zeros((rows, pages_per_row), jnp.int32),
        length=jnp.zeros((rows,), jnp.int32),
    )


def _gather_rows(table_CW, k_store, v_store, index):
    """Each row's first W pages (``table_CW``) of layer ``index`` in table order: keys
    ``[C, K, H, W * Z]``, values ``[C, K, W * Z, H]`` (one gather, no copy of the layer)."""
    c, m = table_CW.shape
    z = v_store.shape[3]
    keys = k_store[index, table_CW]  # [C, W, K, H, Z]
    values = v_store[index, table_CW]  # [C, W, K, Z, H]
    keys = keys.transpose(0, 2, 3, 1, 4).reshape(c, keys.shape[2], keys.shape[3], m * z)
    values = values.transpose(0, 2, 1, 3, 4).reshape(c, values.shape[2], m * z, values.shape[4])
    return keys, values


def paged_decode_states(
    params: dict,
    tokens_C1,
    config: ModelConfig,
    *,
    positions_C1,
    write_C,
    cache: PagedKVCache,
    window: int | None = None,
):
    """One token per row through the decoder over a paged cache: final-norm hidden states
    ``[C, 1, D]`` and the cache with the writing rows' (``write_C``) tokens in their pages.
    Rows not writing compute too (their output is the caller's to drop) but write nothing.
    ``window`` (a multiple of Z, holding every writing row's token): attention reads each
    row's first ``window / Z`` pages only (default: all M)."""
    c, z = tokens_C1.shape[0], cache.page_size
    dtype = config.dtype
    rows_C = jnp.arange(c)
    num_pages = cache.k.shape[1]
    page_C = jnp.where(write_C, cache.table[rows_C, cache.length // z], num_pages)  # N: dropped
    offset_C = cache.length % z
    segment_C1 = write_C[:, None].astype(jnp.int32)
    cache = dataclasses.replace(
        cache,
        positions=cache.positions.at[page_C, offset_C].set(positions_C1[:, 0], mode="drop"),
        segment_ids=cache.segment_ids.at[page_C, offset_C].set(segment_C1[:, 0], mode="drop"),
    )
    table_CW = cache.table[:, : (window or cache.max_length) // z]
    k_pos = cache.positions[table_CW].reshape(c, -1)
    k_seg = cache.segment_ids[table_CW].reshape(c, -1)
    q_offset = jnp.max(jnp.where(write_C, cache.length, 0))
    x = embed(params, tokens_C1, config)
    rope = model_rope(config, positions_C1)
    cast = lambda tree: materialize(tree, dtype)  # one layer's weights, in the compute dtype

    def body(carry, xs):
        x, k_store, v_store = carry
        p, index = xs

        def paged_keys(k, v):
            k_new, v_new = k[..., 0].astype(k_store.dtype), v[:, :, 0, :].astype(v_store.dtype)
            k_all = k_store.at[index, page_C, :, :, offset_C].set(k_new, mode="drop")
            v_all = v_store.at[index, page_C, :, offset_C, :].set(v_new, mode="drop")
            keys, values = _gather_rows(table_CW, k_all, v_all, index)
            return keys.astype(dtype), values.astype(dtype), k_pos, k_seg, (k_all, v_all)

        x, (k_store, v_store), _ = _block(
            x, cast(p), config, rope, positions_C1, segment_C1, paged_keys, q_offset
        )
        return (x, k_store, v_store), None

    carry = (x, cache.k, cache.v)
    for stack, indices in layer_stacks(params, config):
        carry, _ = jax.lax.scan(body, carry, (stack, indices), unroll=config.scan_unroll)
    x, k, v = carry
    x = layers.rms_norm(x, params["final_norm"].astype(dtype), config.rms_norm_eps)
    length = cache.length + write_C.astype(jnp.int32)
    return x, dataclasses.replace(cache, k=k, v=v, length=length)
