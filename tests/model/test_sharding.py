"""Sharded init and forward on a fake 8-device CPU mesh equal the unsharded model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from r1jax import sharding
from r1jax.config import section
from r1jax.model import ModelConfig, forward, init_params, param_shardings

CONFIG = ModelConfig(
    vocab_size=128,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    qkv_bias=True,
    tie_embeddings=True,
)
MESH_SHAPES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8), (1, 2, 4)]


@pytest.fixture(scope="module")
def reference():
    params = init_params(CONFIG, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, CONFIG.vocab_size)
    logits, _ = jax.jit(forward, static_argnums=2)(params, tokens, CONFIG)
    return params, tokens, np.asarray(logits)


def _mesh(shape):
    return sharding.make_mesh(sharding.MeshConfig(*shape))


@pytest.mark.parametrize("shape", MESH_SHAPES, ids=str)
def test_sharded_init_and_forward_match_unsharded(shape, reference):
    params_ref, tokens, logits_ref = reference
    mesh = _mesh(shape)
    params = init_params(CONFIG, jax.random.key(0), mesh=mesh)
    # Same values as the unsharded init, placed by the rules.
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), params, params_ref
    )
    expected = param_shardings(CONFIG, mesh)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
        assert got.sharding.is_equivalent_to(want, got.ndim), (got.sharding, want)

    batch_sharding = sharding.named_sharding(mesh, ("batch", "seq"), tokens.shape)
    tokens = jax.device_put(tokens, batch_sharding)
    with jax.set_mesh(mesh):
        logits, _ = jax.jit(forward, static_argnums=2)(params, tokens, CONFIG)
    np.testing.assert_allclose(np.asarray(logits), logits_ref, atol=1e-5)
    assert logits.sharding.spec[0] is not None or shape[0] * shape[1] == 1


def test_rules_map_logical_axes_to_mesh_axes():
    mesh = _mesh((2, 2, 2))
    shardings = param_shardings(CONFIG, mesh)
    assert shardings["layers"]["q"].spec == P(None, "fsdp", "tensor", None)
    assert shardings["layers"]["k"].spec == P(None, "fsdp", "tensor", None)
    assert shardings["layers"]["down"].spec == P(None, "tensor", "fsdp")
    assert shardings["embed"].spec == P("tensor", "fsdp")
    assert shardings["final_norm"].spec == P(None)


def test_indivisible_dims_fall_back_to_replication_and_are_reported():
    mesh = _mesh((1, 1, 8))  # 2 kv heads cannot be split 8 ways
    shardings = param_shardings(CONFIG, mesh)
    assert shardings["layers"]["k"].spec == P(None, None, None, None)
    assert shardings["layers"]["q"].spec == P(None, None, None, None)  # 4 heads neither
    assert shardings["layers"]["gate"].spec == P(None, None, "tensor")
    from r1jax.model import abstract_params, logical_axes

    notes = sharding.describe_fallbacks(
        mesh, logical_axes(CONFIG), abstract_params(CONFIG), min_size=1
    )
    assert any("['layers']['k']" in n for n in notes)


def test_mesh_config_resolves_the_rest_and_rejects_bad_sizes():
    assert sharding.mesh_shape(sharding.MeshConfig(data=-1, fsdp=2, tensor=2), 8) == (2, 2, 1, 2)
    mesh = sharding.MeshConfig(data=2, fsdp=1, tensor=1, expert=-1)
    assert sharding.mesh_shape(mesh, 8) == (2, 1, 4, 1)
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.mesh_shape(sharding.MeshConfig(-1, -1, 1), 8)
    with pytest.raises(ValueError, match="not divisible"):
        sharding.mesh_shape(sharding.MeshConfig(-1, 3, 1), 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        sharding.mesh_shape(sharding.MeshConfig(2, 2, 1), 8)
    with pytest.raises(ValueError, match="did you mean config.mesh.data"):
        section(sharding.MeshConfig, {"dat": 2}, "config.mesh")


def test_rules_reject_a_mesh_axis_used_twice():
    rules = sharding.ShardingRules.from_mapping({"mlp": "fsdp"})
    with pytest.raises(ValueError, match="used twice"):
        rules.spec(("embed", "mlp"), (8, 8), {"data": 1, "fsdp": 2, "tensor": 1})


def test_rules_from_the_mesh_config_are_ambient_and_constrain_obeys_them():
    x = jnp.ones((8, 16))
    # Rules are read when a function is traced: a fresh function per rules table.
    fn = lambda: jax.jit(lambda x: sharding.constrain(x * 2, ("batch", "act_embed")))
    try:
        mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 8))
        assert sharding.current_rules() == sharding.ShardingRules()
        with jax.set_mesh(mesh):
            assert fn()(x).sharding.is_fully_replicated
        rules = {"act_embed": ("tensor",), "mlp": ()}
        mesh = sharding.make_mesh(sharding.MeshConfig(1, 1, 8, rules=rules))
        assert sharding.current_rules().mesh_axes("act_embed") == ("tensor",)
        with jax.set_mesh(mesh):
            assert fn()(x).sharding.spec == P(None, "tensor")
        assert param_shardings(CONFIG, mesh)["layers"]["gate"].spec == P(None, None, None)
    finally:
        sharding.set_rules(sharding.ShardingRules())


def test_replicated_large_leaves_warn_or_fail_when_strict():
    mesh = _mesh((8, 1, 1))  # pure data parallel: every parameter is replicated
    place = lambda shape, axes: jax.device_put(
        jnp.zeros(shape), sharding.named_sharding(mesh, axes, shape)
    )
    tree = {
        "big": place((64, 32), (None, None)),
        "split": place((64, 32), ("batch", None)),
        "small": place((4,), (None,)),
    }
    config = sharding.MeshConfig(replicated_warn_size=1024)
    with pytest.warns(UserWarning, match=r"1 leaves .*\['big'\]\(64, 32\)"):
        assert sharding.report_replication(tree, config) == ["['big'](64, 32)"]
    with pytest.raises(ValueError, match="mesh.strict=True"):
        sharding.report_replication(
            tree, sharding.MeshConfig(replicated_warn_size=1024, strict=True)
        )
    assert sharding.report_replication(tree, sharding.MeshConfig()) == []  # under the threshold


def test_constrain_is_a_no_op_without_a_mesh():
    x = jnp.ones((4, 4))
    assert sharding.constrain(x, ("batch", "act_embed")) is x


def test_fsdp_and_tensor_mesh_compiles_without_involuntary_rematerialisation():
    """The embedding lookup on a data x fsdp x tensor mesh: XLA warns (stderr) when it cannot
    move the FSDP-sharded table onto batch-sharded rows and replicates everything instead."""
    import os
    import subprocess
    import sys

    code = """
import jax, jax.numpy as jnp
from r1jax import sharding
from r1jax.model import ModelConfig, forward, init_params
cfg = ModelConfig(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                  head_dim=16, mlp_dim=128)
mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
params = init_params(cfg, jax.random.key(0), mesh=mesh)
tokens = jax.device_put(jnp.ones((8, 16), jnp.int32),
                        sharding.named_sharding(mesh, ("batch", None), (8, 16)))
with jax.set_mesh(mesh):
    loss = lambda p, t: forward(p, t, cfg)[0].mean()
    jax.block_until_ready(jax.jit(jax.value_and_grad(loss))(params, tokens))
print("compiled")
"""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-2000:]
    assert "Involuntary full rematerialization" not in proc.stderr, proc.stderr[-2000:]
