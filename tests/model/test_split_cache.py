"""``split_cache``: the KV cache as per-layer chunks (one per decode window) round-trips, is
written in the window's chunk, and attention over the chunks equals attention over the whole."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, init_cache, layers, split_cache

CONFIG = ModelConfig(
    vocab_size=32, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
    mlp_dim=32,
)  # fmt: skip
ROWS, SLOTS, ENDS = 5, 24, (10, 16, 24)


@pytest.fixture
def cache():
    empty = init_cache(CONFIG, ROWS, SLOTS)
    k, v = jax.random.normal(jax.random.key(0), (2, *empty.k.shape))
    return dataclasses.replace(empty, k=k, v=v.reshape(empty.v.shape), length=jnp.asarray(13))


def test_split_then_join_gives_the_cache_back(cache):
    split = split_cache.split_cache(cache, ENDS)
    assert len(split.k) == len(split.v) == 3 and split.max_length == SLOTS
    assert [c.shape for c in split.k[2]] == [(ROWS, 2, 8, n) for n in (10, 6, 8)]
    assert [c.shape for c in split.v[0]] == [(ROWS, 2, n, 8) for n in (10, 6, 8)]
    assert split_cache.chunk_bounds(split.k[1]) == (0, *ENDS)
    joined = split_cache.join_cache(split)
    np.testing.assert_array_equal(joined.k, cache.k)
    np.testing.assert_array_equal(joined.v, cache.v)
    with pytest.raises(ValueError, match="chunk ends"):
        split_cache.split_cache(cache, (10, 8, 24))
    with pytest.raises(ValueError, match="chunk ends"):
        split_cache.split_cache(cache, (10, 16))


def test_write_lands_in_the_windows_chunk_and_reads_stop_there(cache):
    split = split_cache.split_cache(cache, ENDS)
    k_new, v_new = jnp.full((ROWS, 2, 8, 1), 7.0), jnp.full((ROWS, 2, 1, 8), 9.0)
    read_k, read_v, k_all, v_all = split_cache.write_and_read(
        split.k[1], split.v[1], k_new, v_new, jnp.asarray(13), window=16
    )
    assert len(read_k) == len(read_v) == 2  # chunks [0, 10) and [10, 16)
    expected_k = cache.k[1].at[..., 13].set(7.0)
    expected_v = cache.v[1].at[:, :, 13].set(9.0)
    np.testing.assert_array_equal(jnp.concatenate(k_all, axis=3), expected_k)
    np.testing.assert_array_equal(jnp.concatenate(v_all, axis=2), expected_v)
    np.testing.assert_array_equal(jnp.concatenate(read_k, axis=3), expected_k[..., :16])
    with pytest.raises(ValueError, match="not a chunk end"):
        split_cache.write_and_read(split.k[1], split.v[1], k_new, v_new, jnp.asarray(13), 12)


def test_attention_over_chunks_equals_attention_over_the_whole(cache):
    split = split_cache.split_cache(cache, ENDS)
    q = jax.random.normal(jax.random.key(1), (ROWS, 1, 4, 8))
    mask = jax.random.bernoulli(jax.random.key(2), 0.7, (ROWS, 1, SLOTS)).at[:, :, 0].set(True)
    whole = layers.attention(q, cache.k[0], cache.v[0], mask)
    chunked = layers.attention(q, split.k[0], split.v[0], mask)
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    one = layers.attention(q, (cache.k[0],), (cache.v[0],), mask)
    np.testing.assert_array_equal(one, whole)
