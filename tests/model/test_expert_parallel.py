"""Expert parallelism (tokens exchanged by all-to-all over the ``expert`` axis): with enough
capacity it equals the dropless layer in values and gradients; with less it drops exactly the
(token, choice) pairs past each destination's capacity, and reports how many."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_moe import DEEPSEEK, MOE_MODEL, SOFTMAX, _layer

from r1jax import sharding
from r1jax.model import forward, init_params, moe
from r1jax.model.layers import swiglu

MESH = dict(data=1, fsdp=2, expert=4, tensor=1)  # 4 expert shards, tokens over all 8 devices


def _mesh(**axes):
    return sharding.make_mesh(sharding.MeshConfig(**(axes or MESH)))


def _run(p, x, moe_config, mesh=None):
    fn = jax.jit(lambda p, x: moe.moe_mlp(x, p, moe_config))
    if mesh is None:
        return fn(p, x)
    with jax.set_mesh(mesh):
        return fn(p, x)


@pytest.mark.parametrize(
    "base, axes",
    [
        (SOFTMAX, MESH),
        pytest.param(DEEPSEEK, MESH, marks=pytest.mark.slow),  # the default suite < 10 min
        # with a tensor axis: rows over expert only (2 per device), expert widths over tensor
        pytest.param(SOFTMAX, dict(data=1, fsdp=1, expert=4, tensor=2), marks=pytest.mark.slow),
    ],
    ids=["softmax", "sigmoid_groups", "softmax_tensor"],
)
def test_with_room_for_every_pair_it_equals_the_dropless_layer_values_and_gradients(base, axes):
    base = dataclasses.replace(base, num_experts=8)
    p, x = _layer(base)
    x = jnp.concatenate([x, x[::-1] * 0.5])  # 8 rows: one per device
    ep = dataclasses.replace(base, capacity_factor=float(axes["expert"]))  # never full
    mesh = _mesh(**axes)
    (want, _), (got, stats) = _run(p, x, base), _run(p, x, ep, mesh)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert float(stats.dropped) == 0.0

    def loss(moe_config, mesh=None):
        f = lambda p, x: jnp.sum(jnp.sin(moe.moe_mlp(x, p, moe_config)[0]))
        g = jax.jit(jax.grad(f, argnums=(0, 1)))
        if mesh is None:
            return g(p, x)
        with jax.set_mesh(mesh):
            return g(p, x)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
                 loss(ep, mesh), loss(base))  # fmt: skip


def _reference_with_capacity(p, x, moe_config):
    """Each device's pairs (its rows, token-major then choice order) to their expert's shard;
    the first C per destination kept."""
    x_np = np.asarray(x)
    b, t, d = x_np.shape
    weights, experts, _, _ = moe.route(x.reshape(-1, d), p["router"], p.get("router_bias"),
                                       moe_config)  # fmt: skip
    weights, experts = np.asarray(weights), np.asarray(experts)
    shards, per = MESH["expert"], moe_config.num_experts // MESH["expert"]
    devices = b  # one row per device (the batch is split over all 8)
    n, k = t, moe_config.experts_per_token
    capacity = max(1, math.ceil(moe_config.capacity_factor * n * k / shards))
    out, dropped = np.zeros((b * t, d), np.float32), 0
    for dev in range(devices):
        used = np.zeros(shards, int)
        for token in range(dev * t, (dev + 1) * t):
            for j in range(k):
                e = experts[token, j]
                if used[e // per] >= capacity:
                    dropped += 1
                    continue
                used[e // per] += 1
                y = swiglu(x_np.reshape(-1, d)[token][None, None], p["expert_gate"][e],
                           p["expert_up"][e], p["expert_down"][e])[0, 0]  # fmt: skip
                out[token] += weights[token, j] * np.asarray(y)
    shared = 0.0
    if moe_config.shared_experts:
        shared = swiglu(x, p["shared_gate"], p["shared_up"], p["shared_down"])
    return out.reshape(b, t, d) + np.asarray(shared), dropped / (b * t * k)


def test_over_capacity_pairs_are_dropped_in_order_and_counted():
    config = dataclasses.replace(SOFTMAX, num_experts=8, capacity_factor=0.5)
    p, x = _layer(config)
    x = jnp.concatenate([x, x[::-1] * 0.5])
    want, want_dropped = _reference_with_capacity(p, x, config)
    got, stats = _run(p, x, config, _mesh())
    assert 0 < want_dropped < 1
    np.testing.assert_allclose(float(stats.dropped), want_dropped, rtol=1e-6)
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_an_expert_parallel_model_equals_the_dropless_model_forward_and_gradients():
    config = MOE_MODEL.replace(moe=dataclasses.replace(MOE_MODEL.moe, capacity_factor=4.0))
    params = init_params(MOE_MODEL, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, MOE_MODEL.vocab_size)

    def loss(params, tokens, config):
        logits, _ = forward(params, tokens, config)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    grad = jax.jit(jax.value_and_grad(loss), static_argnums=2)
    ref_loss, ref_grads = grad(params, tokens, MOE_MODEL)
    mesh = _mesh()
    sharded = init_params(config, jax.random.key(0), mesh=mesh)
    with jax.set_mesh(mesh):
        got_loss, got_grads = grad(sharded, tokens, config)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), got_grads, ref_grads)
