"""Preallocated KV cache for incremental decoding.

All layers are stacked in one array per K and V, ``[L, B, S, K, H]``, so the layer scan updates
its slice in place. Every row writes at the same slot index (prompts are left-padded to a common
length), and each slot remembers the position and segment id of the token written there: the
attention mask is then computed from those, and padding (segment 0) is never attended.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from r1jax.model.config import ModelConfig
from r1jax.sharding import named_sharding

CACHE_KV_AXES = ("layers", "batch", "cache_seq", "act_kv_heads", "head_dim")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys/values ``[L, B, S, K, H]``; slot ``positions``/``segment_ids`` ``[B, S]`` (int32);
    ``length``: number of slots written so far (int32 scalar, the next write index)."""

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    length: jax.Array

    @property
    def max_length(self) -> int:
        return self.k.shape[2]


def init_cache(config: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
    """An empty cache with room for ``max_length`` tokens per row, in the compute dtype."""
    dtype = config.dtype if dtype is None else dtype
    shape = (config.num_layers, batch_size, max_length, config.num_kv_heads, config.head_dim)
    return KVCache(
        k=jnp.zeros(shape, dtype),
        v=jnp.zeros(shape, dtype),
        positions=jnp.zeros((batch_size, max_length), jnp.int32),
        segment_ids=jnp.zeros((batch_size, max_length), jnp.int32),
        length=jnp.zeros((), jnp.int32),
    )


def cache_shardings(config: ModelConfig, batch_size: int, max_length: int, mesh) -> KVCache:
    """NamedShardings of a cache: batch over the data axes, kv heads over ``tensor``."""
    kv_shape = (config.num_layers, batch_size, max_length, config.num_kv_heads, config.head_dim)
    kv = named_sharding(mesh, CACHE_KV_AXES, kv_shape)
    slots = named_sharding(mesh, ("batch", "cache_seq"), (batch_size, max_length))
    return KVCache(
        k=kv, v=kv, positions=slots, segment_ids=slots, length=named_sharding(mesh, (), ())
    )


def write_slots(cache: KVCache, positions_BT: jax.Array, segment_ids_BT: jax.Array) -> KVCache:
    """Records positions/segments of the T new tokens and advances ``length`` (K/V are written
    per layer by the forward pass)."""
    start = (0, cache.length)
    return dataclasses.replace(
        cache,
        positions=jax.lax.dynamic_update_slice(
            cache.positions, positions_BT.astype(jnp.int32), start
        ),
        segment_ids=jax.lax.dynamic_update_slice(
            cache.segment_ids, segment_ids_BT.astype(jnp.int32), start
        ),
        length=cache.length + positions_BT.shape[1],
    )
