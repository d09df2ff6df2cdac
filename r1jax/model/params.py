"""Every parameter declared once: shape, logical axes and initialiser.

Abstract shapes, shardings and initialisation all derive from ``param_specs``. Layers are stacked
along a leading ``layers`` axis so the forward pass can ``lax.scan`` over them.

Param tree (L layers, D hidden, N heads, K kv heads, H head dim, F mlp dim, V vocab)::

    embed       [V, D]
    layers/attn_norm [L, D]     layers/q [L, D, N, H]   layers/k, v [L, D, K, H]
    layers/q_bias [L, N, H]     layers/k_bias, v_bias [L, K, H]      (only with qkv_bias)
    layers/o    [L, N, H, D]    layers/mlp_norm [L, D]
    layers/o_bias [L, D]                                           (only with o_bias)
    layers/gate, up [L, D, F]   layers/down [L, F, D]
    layers/q_norm, k_norm [L, H]                                    (only with qk_norm: Qwen3)
    final_norm  [D]
    lm_head     [D, V]                                (only when untied, without a score head)
    score       [D]                                   (only with ``score_head``: reward models)

With ``moe`` (E experts of width Fe, shared width Fs = shared_experts * Fe), ``layers`` holds the
last ``L' = L - dense_layers`` layers, whose MLP is the mixture (in place of gate/up/down)::

    layers/router [L', D, E]    layers/router_bias [L', E]            (sigmoid router only)
    layers/expert_gate, expert_up [L', E, D, Fe]    layers/expert_down [L', E, Fe, D]
    layers/shared_gate, shared_up [L', D, Fs]       layers/shared_down [L', Fs, D]  (if shared)
    dense_layers/...  the first ``dense_layers`` layers, as ``layers`` of a dense model

With ``mla`` (R = kv_lora_rank, Rq = q_lora_rank, Hn/Hr/Hv = qk_nope/qk_rope/v head dims) the
attention params are, in place of q/k/v/o::

    layers/kv_a [L, D, R + Hr]   layers/kv_a_norm [L, R]   layers/kv_b [L, R, N, Hn + Hv]
    layers/q [L, D, N, Hn + Hr]  (Rq = 0), or layers/q_a [L, D, Rq], q_a_norm [L, Rq],
    layers/q_b [L, Rq, N, Hn + Hr]                          layers/o [L, N, Hv, D]
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


def _mla_specs(config: ModelConfig, L: int) -> dict:
    d, n, m = config.hidden_size, config.num_heads, config.mla
    heads = ("layers", "kv_lora", "heads", "head_dim")
    specs = {
        "attn_norm": ParamSpec((L, d), ("layers", "norm"), "ones"),
        "kv_a": ParamSpec((L, d, m.latent_dim), ("layers", "embed", "latent"), "normal"),
        "kv_a_norm": ParamSpec((L, m.kv_lora_rank), ("layers", "norm"), "ones"),
        "kv_b": ParamSpec(
            (L, m.kv_lora_rank, n, m.qk_nope_head_dim + m.v_head_dim), heads, "normal"
        ),
        "o": ParamSpec((L, n, m.v_head_dim, d), ("layers", "heads", "head_dim", "embed"), "normal"),
        "mlp_norm": ParamSpec((L, d), ("layers", "norm"), "ones"),
    }
    if not m.q_lora_rank:
        specs["q"] = ParamSpec(
            (L, d, n, m.qk_head_dim), ("layers", "embed", "heads", "head_dim"), "normal"
        )
        return specs
    r = m.q_lora_rank
    return specs | {
        "q_a": ParamSpec((L, d, r), ("layers", "embed", "latent"), "normal"),
        "q_a_norm": ParamSpec((L, r), ("layers", "norm"), "ones"),
        "q_b": ParamSpec(
            (L, r, n, m.qk_head_dim), ("layers", "q_lora", "heads", "head_dim"), "normal"
        ),
    }


def _attention_specs(config: ModelConfig, L: int) -> dict:
    if config.mla is not None:
        return _mla_specs(config, L)
    d, n, k, h = config.hidden_size, config.num_heads, config.num_kv_heads, config.head_dim
    specs = {
        "attn_norm": ParamSpec((L, d), ("layers", "norm"), "ones"),
        "q": ParamSpec((L, d, n, h), ("layers", "embed", "heads", "head_dim"), "normal"),
        "k": ParamSpec((L, d, k, h), ("layers", "embed", "kv_heads", "head_dim"), "normal"),
        "v": ParamSpec((L, d, k, h), ("layers", "embed", "kv_heads", "head_dim"), "normal"),
        "o": ParamSpec((L, n, h, d), ("layers", "heads", "head_dim", "embed"), "normal"),
        "mlp_norm": ParamSpec((L, d), ("layers", "norm"), "ones"),
    }
    if config.qkv_bias:
        specs["q_bias"] = ParamSpec((L, n, h), ("layers", "heads", "head_dim"), "zeros")
        specs["k_bias"] = ParamSpec((L, k, h), ("layers", "kv_heads", "head_dim"), "zeros")
        specs["v_bias"] = ParamSpec((L, k, h), ("layers", "kv_heads", "head_dim"), "zeros")
    if config.o_bias:
        specs["o_bias"] = ParamSpec((L, d), ("layers", "norm"), "zeros")
    if config.qk_norm:
        specs["q_norm"] = ParamSpec((L, h), ("layers", "norm"), "ones")
        specs["k_norm"] = ParamSpec((L, h), ("layers", "norm"), "ones")
    return specs


def _swiglu_specs(L: int, d: int, f: int, prefix: str = "") -> dict:
    return {
        prefix + "gate": ParamSpec((L, d, f), ("layers", "embed", "mlp"), "normal"),
        prefix + "up": ParamSpec((L, d, f), ("layers", "embed", "mlp"), "normal"),
        prefix + "down": ParamSpec((L, f, d), ("layers", "mlp", "embed"), "normal"),
    }


def _moe_specs(config: ModelConfig, L: int) -> dict:
    moe, d = config.moe, config.hidden_size
    e, fe = moe.num_experts, moe.expert_mlp_dim
    # An expert's hidden dim is "expert_embed" (FSDP only): "embed" also takes the expert axis,
    # which already splits the experts themselves.
    expert_in = ("layers", "experts", "expert_embed", "expert_mlp")
    specs = {
        "router": ParamSpec((L, d, e), ("layers", "embed", None), "normal"),
        "expert_gate": ParamSpec((L, e, d, fe), expert_in, "normal"),
        "expert_up": ParamSpec((L, e, d, fe), expert_in, "normal"),
        "expert_down": ParamSpec(
            (L, e, fe, d), ("layers", "experts", "expert_mlp", "expert_embed"), "normal"
        ),
    }
    if moe.router == "sigmoid":
        specs["router_bias"] = ParamSpec((L, e), ("layers", "experts"), "zeros")
    if moe.shared_experts:
        specs |= _swiglu_specs(L, d, moe.shared_experts * fe, prefix="shared_")
    return specs


def param_specs(config: ModelConfig) -> dict:
    """The param tree of ``config`` as ``ParamSpec`` leaves."""
    d, f, v, L = config.hidden_size, config.mlp_dim, config.vocab_size, config.num_layers
    if config.moe is None:
        layers = _attention_specs(config, L) | _swiglu_specs(L, d, f)
    else:
        layers = _attention_specs(config, config.moe_layers) | _moe_specs(config, config.moe_layers)
    specs = {
        "embed": ParamSpec((v, d), ("vocab", "embed"), "normal"),
        "layers": layers,
        "final_norm": ParamSpec((d,), ("norm",), "ones"),
    }
    dense = L - config.moe_layers if config.moe is not None else 0
    if dense:
        specs["dense_layers"] = _attention_specs(config, dense) | _swiglu_specs(dense, d, f)
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
