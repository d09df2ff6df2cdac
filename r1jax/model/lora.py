"""Low-rank adapters (LoRA, Hu et al. 2021) over the model's projection weights, as a separate
param tree, and their Hugging Face PEFT form.

A target weight ``W`` (a leaf of a layer stack, e.g. ``layers/q [L, D, N, H]``) gets ``a [L,
*in, r]`` (its input dims, then the rank) and ``b [L, r, *out]``; the layer computes with
``W + (alpha / r) * a @ b``. ``b`` starts at zero, so fresh adapters leave the model unchanged.
Expert weights ``[L, E, D, F]`` get one adapter per expert (``a [L, E, D, r]``,
``b [L, E, r, F]``).

    adapters = init_adapters(config, lora, rng)
    logits, _ = forward(attach(base, adapters, lora), tokens, config)   # merged per layer
    peft.save_adapters(path, config, adapters, lora)   # adapter_model.safetensors + json

``attach`` wraps each targeted weight of a (frozen, possibly quantized: ``r1jax.model.quant``)
base in a ``LoRAWeight``, merged one layer at a time inside the forward's layer scan
(``r1jax.model.weights``): training differentiates the adapters only, the base passed alone is
the model with adapters off. ``merge`` adds each delta to its weight (what a merged checkpoint
holds). Shape letters as in ``params``. A ``targets`` name that matches no weight is an error
listing those it could.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from r1jax.config.lora import LoRAConfig
from r1jax.config.model import ModelConfig
from r1jax.model.params import ParamSpec, param_specs
from r1jax.model.weights import LoRAWeight, lora_delta
from r1jax.sharding import tree_shardings

__all__ = ["LoRAConfig", "abstract_adapters", "adapter_shardings", "adapter_specs", "attach"]
__all__ += ["delta", "init_adapters", "merge"]

# Input dims of each projection (its first dims after the stacked layer, and expert, axes).
_INPUT_DIMS = {"o": 2}
_EXPERT_LEAVES = ("expert_gate", "expert_up", "expert_down")
STACKS = ("dense_layers", "layers")


def adapter_specs(config: ModelConfig, lora: LoRAConfig) -> dict:
    """``{stack: {target: {"a": ParamSpec, "b": ParamSpec}}}`` for every targeted weight; each
    keeps its weight's logical axes on the dims it shares with it (the rank dim replicated)."""
    if lora.rank < 1:
        raise ValueError(f"lora.rank={lora.rank}: adapters need a rank >= 1")
    specs, found = {}, set()
    for stack in STACKS:
        weights = param_specs(config).get(stack, {})
        for name in lora.targets:
            if name not in weights:
                continue
            found.add(name)
            w = weights[name]
            lead = 2 if name in _EXPERT_LEAVES else 1  # layers (and experts)
            split = lead + _INPUT_DIMS.get(name, 1)
            in_shape, out_shape = w.shape[lead:split], w.shape[split:]
            fan_in = math.prod(in_shape)
            axes = w.logical_axes
            a = ParamSpec((*w.shape[:split], lora.rank), (*axes[:split], None), f"lora:{fan_in}")
            b_axes = (*axes[:lead], None, *axes[split:])
            b = ParamSpec((*w.shape[:lead], lora.rank, *out_shape), b_axes, "zeros")
            specs.setdefault(stack, {})[name] = {"a": a, "b": b}
    missing = set(lora.targets) - found
    if missing:
        names = sorted({n for s in STACKS for n in param_specs(config).get(s, {})})
        raise ValueError(
            f"lora.targets: {sorted(missing)} match no weight of this model; its layer "
            f"weights are {names}"
        )
    return specs


def init_adapters(config: ModelConfig, lora: LoRAConfig, rng: jax.Array) -> dict:
    """Fresh adapters (fp32): ``a`` ~ U(+-1/sqrt(fan_in)) as PEFT's Kaiming init, ``b`` = 0."""
    specs = adapter_specs(config, lora)
    leaves, treedef = jax.tree.flatten(specs, is_leaf=lambda x: isinstance(x, ParamSpec))
    keys = jax.random.split(rng, len(leaves))

    def init(spec: ParamSpec, key):
        if spec.init == "zeros":
            return jnp.zeros(spec.shape, jnp.float32)
        bound = 1.0 / math.sqrt(int(spec.init.split(":")[1]))
        return jax.random.uniform(key, spec.shape, jnp.float32, -bound, bound)

    return jax.tree.unflatten(treedef, [init(s, k) for s, k in zip(leaves, keys, strict=True)])


def abstract_adapters(config: ModelConfig, lora: LoRAConfig) -> dict:
    """The adapter tree as fp32 ``jax.ShapeDtypeStruct`` leaves."""
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, jnp.float32),
        adapter_specs(config, lora),
        is_leaf=lambda x: isinstance(x, ParamSpec),
    )


def adapter_shardings(config: ModelConfig, lora: LoRAConfig, mesh) -> dict:
    """``NamedSharding`` leaves for the adapters: sharded like their base weights."""
    axes = jax.tree.map(
        lambda s: s.logical_axes,
        adapter_specs(config, lora),
        is_leaf=lambda x: isinstance(x, ParamSpec),
    )
    return tree_shardings(mesh, axes, abstract_adapters(config, lora))


def delta(a: jax.Array, b: jax.Array, name: str, scale: float) -> jax.Array:
    """``scale * a @ b`` in the stacked weight's shape ``[L, (E,) *in, *out]``."""
    return lora_delta(a, b, 2 if name in _EXPERT_LEAVES else 1, scale)


def attach(base: dict, adapters: dict, lora: LoRAConfig) -> dict:
    """``base`` with every targeted weight a ``LoRAWeight`` over it (merged per layer by the
    forward pass). ``base`` may be quantized; nothing is copied."""
    out = dict(base)
    for stack, targets in adapters.items():
        layer = dict(base[stack])
        for name, ab in targets.items():
            layer[name] = LoRAWeight(layer[name], ab["a"], ab["b"], lora.scale)
        out[stack] = layer
    return out


def merge(params: dict, adapters: dict, lora: LoRAConfig) -> dict:
    """``params`` with every targeted weight replaced by ``W + scale * a @ b`` (in W's dtype)."""
    out = dict(params)
    for stack, targets in adapters.items():
        layer = dict(params[stack])
        for name, ab in targets.items():
            w = layer[name]
            layer[name] = (w + delta(ab["a"], ab["b"], name, lora.scale)).astype(w.dtype)
        out[stack] = layer
    return out
