"""Preallocated KV cache for incremental decoding.

All layers are stacked in one array per K and V, so the layer scan updates its slice in place:
keys ``[L, B, K, H, S]``, values ``[L, B, K, S, H]``, the layouts attention multiplies in
(``layers.attention``). A decode step then reads each layer as it lies: slots-first caches
cost a transposed copy of every layer per step, and ``[S, H]`` keys a slow transposed product
(together: 14 -> 12 ms per greedy decode step, 64 rows of the TRL benchmark's model, XLA:CPU).
Every row writes at the same slot index (prompts are left-padded to a common length; ``length``
a scalar), or, for one-token steps, each row at its own (``length`` ``[B]``: the continuous
sampler's slots, each at its own point of its own request). Each slot remembers the position
and segment id of the token written there: the attention mask is computed from those, and
padding (segment 0) is never attended.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.sharding import named_sharding

CACHE_K_AXES = ("layers", "batch", "act_kv_heads", "head_dim", "cache_seq")
CACHE_V_AXES = ("layers", "batch", "act_kv_heads", "cache_seq", "head_dim")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KVCache:
    """Keys ``[L, B, K, H, S]``, values ``[L, B, K, S, H]``; slot ``positions`` and
    ``segment_ids`` ``[B, S]`` (int32); ``length``: number of slots written so far, the next
    write index (int32: a scalar shared by all rows, or ``[B]``, one per row)."""

    k: jax.Array
    v: jax.Array
    positions: jax.Array
    segment_ids: jax.Array
    length: jax.Array

    @property
    def max_length(self) -> int:
        if isinstance(self.v, tuple):  # split_cache: per-layer chunks [B, K, C, H]
            return sum(chunk.shape[2] for chunk in self.v[0])
        return self.v.shape[3]


def _kv_shapes(config: ModelConfig, batch_size: int, max_length: int):
    """Keys ``[L, B, K, H, S]`` and values ``[L, B, K, S, Hv]``; multi-head latent attention
    caches one head of its latent + RoPE key and no values (``mla.cache_dims``)."""
    from r1jax.model.mla import cache_dims

    kv_heads, key_dim, value_dim = cache_dims(config)
    lead = (config.num_layers, batch_size, kv_heads)
    return (*lead, key_dim, max_length), (*lead, max_length, value_dim)


def init_cache(config: ModelConfig, batch_size: int, max_length: int, dtype=None) -> KVCache:
    """An empty cache with room for ``max_length`` tokens per row, in the compute dtype."""
    dtype = config.dtype if dtype is None else dtype
    k_shape, v_shape = _kv_shapes(config, batch_size, max_length)
    return KVCache(
        k=jnp.zeros(k_shape, dtype),
        v=jnp.zeros(v_shape, dtype),
        positions=jnp.zeros((batch_size, max_length), jnp.int32),
        segment_ids=jnp.zeros((batch_size, max_length), jnp.int32),
        length=jnp.zeros((), jnp.int32),
    )


def cache_shardings(config: ModelConfig, batch_size: int, max_length: int, mesh) -> KVCache:
    """NamedShardings of a cache: batch over the data axes, kv heads over ``tensor``."""
    k_shape, v_shape = _kv_shapes(config, batch_size, max_length)
    slots = named_sharding(mesh, ("batch", "cache_seq"), (batch_size, max_length))
    return KVCache(
        k=named_sharding(mesh, CACHE_K_AXES, k_shape),
        v=named_sharding(mesh, CACHE_V_AXES, v_shape),
        positions=slots,
        segment_ids=slots,
        length=named_sharding(mesh, (), ()),
    )


def write_slots(cache: KVCache, positions_BT: jax.Array, segment_ids_BT: jax.Array) -> KVCache:
    """Records positions/segments of the T new tokens and advances ``length`` (K/V are written
    per layer by the forward pass). A per-row ``length`` ``[B]`` takes one token per row."""
    if cache.length.ndim == 1:
        if positions_BT.shape[1] != 1:
            raise ValueError(
                f"per-row cache writes take one token per row, got {positions_BT.shape}"
            )
        rows_B = jnp.arange(positions_BT.shape[0])
        return dataclasses.replace(
            cache,
            positions=cache.positions.at[rows_B, cache.length].set(positions_BT[:, 0]),
            segment_ids=cache.segment_ids.at[rows_B, cache.length].set(segment_ids_BT[:, 0]),
            length=cache.length + 1,
        )
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
