"""Every parameter declared once: shape, logical axes and initialiser.

Abstract shapes, shardings and initialisation all derive from ``param_specs``. Layers are stacked
along a leading ``layers`` axis so the forward pass can ``lax.scan`` over them.

Param tree (L layers, D hidden, N heads, K kv heads, H head dim, F mlp dim, V vocab)::

    embed       [V, D]
    layers/attn_norm [L, D]     layers/q [L, D, N, H]   layers/k, v [L, D, K, H]
    layers/q_bias [L, N, H]     layers/k_bias, v_bias [L, K, H]      (only with qkv_bias)
    layers/o    [L, N, H, D]    layers/mlp_norm [L, D]
    layers/gate, up [L, D, F]   layers/down [L, F, D]
    final_norm  [D]
    lm_head     [D, V]                                (only when untied, without a score head)
    score       [D]                                   (only with ``score_head``: reward models)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.sharding import tree_shardings


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    shape: tuple[int, ...]
    logical_axes: tuple[str, ...]
    init: str  # "normal" (std = config.init_std), "zeros" or "ones"


def param_specs(config: ModelConfig) -> dict:
    """The param tree of ``config`` as ``ParamSpec`` leaves."""
    d, f, v, L = config.hidden_size, config.mlp_dim, config.vocab_size, config.num_layers
    n, k, h = config.num_heads, config.num_kv_heads, config.head_dim
    layers = {
        "attn_norm": ParamSpec((L, d), ("layers", "norm"), "ones"),
        "q": ParamSpec((L, d, n, h), ("layers", "embed", "heads", "head_dim"), "normal"),
        "k": ParamSpec((L, d, k, h), ("layers", "embed", "kv_heads", "head_dim"), "normal"),
        "v": ParamSpec((L, d, k, h), ("layers", "embed", "kv_heads", "head_dim"), "normal"),
        "o": ParamSpec((L, n, h, d), ("layers", "heads", "head_dim", "embed"), "normal"),
        "mlp_norm": ParamSpec((L, d), ("layers", "norm"), "ones"),
        "gate": ParamSpec((L, d, f), ("layers", "embed", "mlp"), "normal"),
        "up": ParamSpec((L, d, f), ("layers", "embed", "mlp"), "normal"),
        "down": ParamSpec((L, f, d), ("layers", "mlp", "embed"), "normal"),
    }
    if config.qkv_bias:
        layers["q_bias"] = ParamSpec((L, n, h), ("layers", "heads", "head_dim"), "zeros")
        layers["k_bias"] = ParamSpec((L, k, h), ("layers", "kv_heads", "head_dim"), "zeros")
        layers["v_bias"] = ParamSpec((L, k, h), ("layers", "kv_heads", "head_dim"), "zeros")
    specs = {
        "embed": ParamSpec((v, d), ("vocab", "embed"), "normal"),
        "layers": layers,
        "final_norm": ParamSpec((d,), ("norm",), "ones"),
    }
    if config.score_head:
        specs["score"] = ParamSpec((d,), ("embed",), "normal")
    elif not config.tie_embeddings:
        specs["lm_head"] = ParamSpec((d, v), ("embed", "vocab"), "normal")
    return specs


def _is_spec(x) -> bool:
    return isinstance(x, ParamSpec)


def logical_axes(config: ModelConfig) -> dict:
    """The param tree with each leaf replaced by its tuple of logical axis names."""
    return jax.tree.map(lambda s: s.logical_axes, param_specs(config), is_leaf=_is_spec)


def abstract_params(config: ModelConfig) -> dict:
    """The param tree as ``jax.ShapeDtypeStruct`` leaves (no memory allocated)."""
    dtype = config.params_dtype
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, dtype), param_specs(config), is_leaf=_is_spec
    )


def param_shardings(config: ModelConfig, mesh) -> dict:
    """The param tree as ``NamedSharding`` leaves for ``mesh`` under the ambient rules."""
    return tree_shardings(mesh, logical_axes(config), abstract_params(config))


def _init_leaf(spec: ParamSpec, key, dtype, std: float):
    if spec.init == "ones":
        return jnp.ones(spec.shape, dtype)
    if spec.init == "zeros":
        return jnp.zeros(spec.shape, dtype)
    return (std * jax.random.truncated_normal(key, -2.0, 2.0, spec.shape, jnp.float32)).astype(
        dtype
    )


def _init_fn(config: ModelConfig) -> Callable[[jax.Array], dict]:
    specs = param_specs(config)

    def init(rng):
        leaves, treedef = jax.tree.flatten(specs, is_leaf=_is_spec)
        keys = jax.random.split(rng, len(leaves))
        return jax.tree.unflatten(
            treedef,
            [
                _init_leaf(s, k, config.params_dtype, config.init_std)
                for s, k in zip(leaves, keys, strict=True)
            ],
        )

    return init


def init_params(config: ModelConfig, rng: jax.Array, mesh=None) -> dict:
    """Random params for ``config``; with a ``mesh`` each one is created directly in its shard.

    Args:
      config: model shape.
      rng: PRNG key.
      mesh: optional ``jax.sharding.Mesh``; params are then produced by ``jit(out_shardings=...)``
        and never materialised whole on one device.
    """
    init = _init_fn(config)
    if mesh is None:
        return jax.jit(init)(rng)
    return jax.jit(init, out_shardings=param_shardings(config, mesh))(rng)
