"""The KV cache split into one buffer per layer and per decode window, for the static decode
loop on XLA:CPU (``loop.decode(split=True)``: the sampler's "split" layout, ``Sampler(layout=)``).

The stacked cache (``cache.py``: keys ``[L, B, K, H, S]``) is what the layer scan updates in
place, but XLA:CPU reads it by copying: each layer's keys and values are sliced out of the
stack (and cut to the decode window, ``loop.decode_windows``) into fresh buffers before
attention's matmuls read them, every step. Measured at the sampler benchmark's default shape
(64 rows, 4 layers, 160 slots, 2 cores): these copies took 1.9 ms of a 7.5 ms decode step, the
layers' weight slices another 0.5 ms. Here the decode loop holds each layer's cache as a tuple
of chunks, chunk ``j`` the slots ``[end_{j-1}, end_j)`` of window ``j``, so that the loop of
window ``j`` writes into chunk ``j`` and attention reads chunks ``0..j`` whole, where they lie
(``layers.attention`` takes the chunks: scores per chunk, one softmax across them). The split
(and the join after the loop) copies the cache once per call instead of every step.

Shape letters: L layers, B rows, K kv heads, H head dim, S slots, C a chunk's slots.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from r1jax.model.cache import KVCache


def chunk_bounds(k_chunks: tuple) -> tuple[int, ...]:
    """The first slot of each of a layer's key chunks and the end of the last:
    ``(0, end_0, ..., S)``."""
    bounds = [0]
    for chunk in k_chunks:
        bounds.append(bounds[-1] + chunk.shape[3])
    return tuple(bounds)


def _chunks(array, ends: tuple[int, ...], axis: int) -> tuple[jax.Array, ...]:
    starts = (0, *ends[:-1])
    return tuple(
        jax.lax.slice_in_dim(array, s, e, axis=axis) for s, e in zip(starts, ends, strict=True)
    )


def split_cache(cache: KVCache, ends: tuple[int, ...]) -> KVCache:
    """``cache`` with ``k`` / ``v`` as ``L`` tuples of chunks ending at the slots ``ends`` (the
    last the cache's length): keys ``[B, K, H, C_j]``, values ``[B, K, C_j, H]``."""
    if ends[-1] != cache.max_length or list(ends) != sorted(set(ends)):
        raise ValueError(f"chunk ends {ends}: increasing, the last {cache.max_length}")
    layers = range(cache.k.shape[0])
    return dataclasses.replace(
        cache,
        k=tuple(_chunks(cache.k[i], ends, axis=3) for i in layers),
        v=tuple(_chunks(cache.v[i], ends, axis=2) for i in layers),
    )


def join_cache(cache: KVCache) -> KVCache:
    """The stacked cache of a ``split_cache``."""
    return dataclasses.replace(
        cache,
        k=jnp.stack([jnp.concatenate(chunks, axis=3) for chunks in cache.k]),
        v=jnp.stack([jnp.concatenate(chunks, axis=2) for chunks in cache.v]),
    )


def split_shardings(shardings: KVCache, layers: int, ends: tuple[int, ...]) -> KVCache:
    """The shardings of a ``split_cache`` from those of the stacked cache: each chunk as its
    layer's slice (the stack's spec without the layer axis)."""

    def per_layer(sharding):
        spec = jax.sharding.PartitionSpec(*tuple(sharding.spec)[1:])
        chunk = jax.sharding.NamedSharding(sharding.mesh, spec)
        return tuple((chunk,) * len(ends) for _ in range(layers))

    return dataclasses.replace(shardings, k=per_layer(shardings.k), v=per_layer(shardings.v))


def write_and_read(k_chunks, v_chunks, k_BKHT, v_BKTH, slot, window: int):
    """Writes one layer's new keys / values (one token per row, all rows at the scalar
    ``slot``, which lies in the chunk ending at ``window``) and returns the chunks attention
    reads (those up to ``window``) and the layer's updated chunks."""
    bounds = chunk_bounds(k_chunks)
    if window not in bounds[1:]:
        raise ValueError(f"decode window {window} is not a chunk end of {bounds}")
    j = bounds.index(window) - 1
    offset = slot - bounds[j]
    k_new = k_BKHT.astype(k_chunks[j].dtype)
    v_new = v_BKTH.astype(v_chunks[j].dtype)
    k_j = jax.lax.dynamic_update_slice(k_chunks[j], k_new, (0, 0, 0, offset))
    v_j = jax.lax.dynamic_update_slice(v_chunks[j], v_new, (0, 0, offset, 0))
    k_all = (*k_chunks[:j], k_j, *k_chunks[j + 1 :])
    v_all = (*v_chunks[:j], v_j, *v_chunks[j + 1 :])
    return k_all[: j + 1], v_all[: j + 1], k_all, v_all
