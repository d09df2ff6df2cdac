"""Forward-pass invariants: cache decode == full forward, packing, causality, remat, scan."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.config.model import RopeScaling
from r1jax.model import ModelConfig, init_cache, init_params, transformer
from r1jax.model import forward as _forward

CONFIG = ModelConfig(
    vocab_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    qkv_bias=True,
    tie_embeddings=False,
)
forward = jax.jit(_forward, static_argnums=2)  # eager op-by-op dispatch is slow on CPU


@pytest.fixture(scope="module")
def params():
    # Non-zero biases and norms so every parameter matters.
    perturb = lambda p: jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.key(1), a.shape), p
    )
    return jax.jit(perturb)(init_params(CONFIG, jax.random.key(0)))


def _left_pad(rows, length):
    tokens = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        tokens[i, length - len(row) :] = row
        mask[i, length - len(row) :] = 1
    return tokens, mask


def test_cached_decode_matches_full_forward_with_left_padding(params):
    rng = np.random.default_rng(0)
    rows = [rng.integers(1, 128, n) for n in (9, 4, 6)]  # 3 prompts, different lengths
    prompt_len, new = 10, 5
    full_rows = [np.concatenate([r, rng.integers(1, 128, new)]) for r in rows]
    tokens, mask = _left_pad(full_rows, prompt_len + new)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    full_logits, _ = forward(params, tokens, CONFIG, positions=positions, segment_ids=mask)

    cache = init_cache(CONFIG, 3, 32)
    step = forward
    logits, cache = step(
        params,
        tokens[:, :prompt_len],
        CONFIG,
        positions=positions[:, :prompt_len],
        segment_ids=mask[:, :prompt_len],
        cache=cache,
    )
    pieces = [logits]
    for t in range(prompt_len, prompt_len + new):
        logits, cache = step(
            params,
            tokens[:, t : t + 1],
            CONFIG,
            positions=positions[:, t : t + 1],
            segment_ids=mask[:, t : t + 1],
            cache=cache,
        )
        pieces.append(logits)
    cached_logits = np.concatenate(pieces, axis=1)
    valid = mask.astype(bool)
    np.testing.assert_allclose(cached_logits[valid], np.asarray(full_logits)[valid], atol=1e-5)
    assert int(cache.length) == prompt_len + new


def test_left_padding_does_not_change_a_rows_logits(params):
    row = np.array([5, 6, 7, 8])
    alone, _ = forward(params, row[None], CONFIG)
    tokens, mask = _left_pad([row], 7)
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    padded, _ = forward(params, tokens, CONFIG, positions=positions, segment_ids=mask)
    np.testing.assert_allclose(np.asarray(padded)[0, 3:], np.asarray(alone)[0], atol=1e-5)


@pytest.mark.parametrize("scaling", [None, RopeScaling(rope_type="yarn", factor=4.0)])
def test_rope_looked_up_from_a_table_is_computed_rope_bit_for_bit(params, scaling):
    """``rope_lookup`` (what the no-cache forward and GRPO's update use on CPU) gives the
    rotations computed at the positions, so the forward's values do not move."""
    config = dataclasses.replace(CONFIG, rope_scaling=scaling)
    tokens, mask = _left_pad([[5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15]], 7)
    positions = jnp.asarray(np.maximum(np.cumsum(mask, axis=1) - 1, 0), jnp.int32)
    looked_up = jax.jit(lambda p: transformer.rope_lookup(config, p, 7)())(positions)
    computed = jax.jit(lambda p: transformer.model_rope(config, p))(positions)
    for a, b in zip(looked_up, computed, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    hidden = jax.jit(transformer.hidden_states_and_router, static_argnums=2)
    direct, _, _ = hidden(params, tokens, config, positions=positions, segment_ids=mask)
    looked_up_forward = lambda p: transformer.hidden_states_and_router(
        p, tokens, config, positions=positions, segment_ids=mask,
        rope=transformer.rope_lookup(config, positions, 7),
    )[0]  # fmt: skip
    table = jax.jit(looked_up_forward)(params)
    np.testing.assert_array_equal(np.asarray(table), np.asarray(direct))
    arange = jnp.broadcast_to(jnp.arange(7, dtype=jnp.int32), (2, 7))
    implicit, _, _ = hidden(params, tokens, config)  # positions None: looked up
    explicit, _, _ = hidden(params, tokens, config, positions=arange)  # computed
    np.testing.assert_array_equal(np.asarray(implicit), np.asarray(explicit))


def test_packed_sequences_match_separate_runs(params):
    a, b = np.array([3, 9, 27, 81, 11]), np.array([100, 50, 25])
    packed = np.concatenate([a, b, [0, 0]])[None]
    segments = np.array([[1] * 5 + [2] * 3 + [0, 0]])
    positions = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 0, 0]])
    logits, _ = forward(params, packed, CONFIG, positions=positions, segment_ids=segments)
    alone_a, _ = forward(params, a[None], CONFIG)
    alone_b, _ = forward(params, b[None], CONFIG)
    np.testing.assert_allclose(np.asarray(logits)[0, :5], np.asarray(alone_a)[0], atol=1e-5)
    np.testing.assert_allclose(np.asarray(logits)[0, 5:8], np.asarray(alone_b)[0], atol=1e-5)


def test_causality_by_gradient(params):
    """The logit at position t has zero gradient w.r.t. embeddings of positions > t."""
    tokens = jnp.arange(1, 9)[None]

    def logit_sum(delta_TD, t):
        base = params["embed"]
        table = base.at[tokens[0]].add(delta_TD)  # each position has a distinct token
        logits, _ = forward(dict(params, embed=table), tokens, CONFIG)
        return logits[0, t].sum()

    grad = jax.jit(jax.grad(logit_sum), static_argnums=1)
    for t in (0, 3, 7):
        g = grad(jnp.zeros((8, CONFIG.hidden_size)), t)
        norms = np.linalg.norm(np.asarray(g), axis=-1)
        assert np.all(norms[t + 1 :] == 0.0), norms
        assert np.all(norms[: t + 1] > 0.0), norms


def test_sliding_window_limits_attention(params):
    config = CONFIG.replace(sliding_window=3)
    tokens = jnp.arange(1, 11)[None]
    full, _ = forward(params, tokens, CONFIG)
    windowed, _ = forward(params, tokens, config)
    # Within the window the two agree; beyond it they differ.
    np.testing.assert_allclose(np.asarray(windowed)[0, :3], np.asarray(full)[0, :3], atol=1e-6)
    assert not np.allclose(np.asarray(windowed)[0, 5:], np.asarray(full)[0, 5:], atol=1e-4)


@pytest.mark.parametrize(
    "policy", ["full", pytest.param("dots", marks=pytest.mark.slow), "dots_no_batch"]
)
def test_remat_policies_give_identical_values_and_grads(params, policy):
    tokens = jnp.arange(1, 9)[None]

    def loss(p, config):
        return forward(p, tokens, config)[0].mean()

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref = value_and_grad(params, CONFIG)
    got = value_and_grad(params, CONFIG.replace(remat_policy=policy))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ref, got)


def test_unrolled_layers_give_the_scans_values_grads_and_cache(params):
    """``model.scan_unroll``: the same numbers, with and without a KV cache."""
    tokens = jnp.arange(1, 9)[None]
    unrolled = CONFIG.replace(scan_unroll=CONFIG.num_layers)

    def loss(p, config):
        return forward(p, tokens, config)[0].mean()

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref, got = value_and_grad(params, CONFIG), value_and_grad(params, unrolled)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), ref, got)

    def decode(config):  # a prefill, then one cached step: its logits and cache
        _, cache = forward(params, tokens[:, :6], config, cache=init_cache(config, 1, 16))
        return forward(params, tokens[:, 6:7], config, cache=cache)

    close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6)
    jax.tree.map(close, decode(CONFIG), decode(unrolled))
    with pytest.raises(ValueError, match="scan_unroll"):
        CONFIG.replace(scan_unroll=0)


def test_compiled_program_size_does_not_grow_with_depth():
    """Layers run under lax.scan: the jaxpr of a 2-layer and a 12-layer model are equally long."""

    def n_eqns(num_layers):
        config = CONFIG.replace(num_layers=num_layers)
        shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
        jaxpr = jax.make_jaxpr(lambda p: _forward(p, jnp.zeros((1, 4), jnp.int32), config))(shapes)
        return len(str(jaxpr).splitlines())

    assert n_eqns(2) == n_eqns(12)


def test_bf16_compute_stays_close_to_fp32(params):
    tokens = jnp.arange(1, 9)[None]
    ref, _ = forward(params, tokens, CONFIG)
    low, _ = forward(params, tokens, CONFIG.replace(compute_dtype="bfloat16"))
    assert low.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(ref - low))) < 0.1


def test_config_rejects_bad_fields():
    with pytest.raises(ValueError, match="num_kv_heads"):
        ModelConfig(num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="unknown key; did you mean config.model.hidden_size"):
        ModelConfig.from_mapping({"hiden_size": 3})
    with pytest.raises(ValueError, match="remat_policy"):
        ModelConfig(remat_policy="sometimes")
