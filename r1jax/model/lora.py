"""Low-rank adapters (LoRA, Hu et al. 2021) over the model's projection weights, as a separate
param tree, and their Hugging Face PEFT form.

A target weight ``W`` (a leaf of a layer stack, e.g. ``layers/q [L, D, N, H]``) gets ``a [L,
*in, r]`` (its input dims, then the rank) and ``b [L, r, *out]``; the layer computes with
``W + (alpha / r) * a @ b``. ``b`` starts at zero, so fresh adapters leave the model unchanged.
Expert weights ``[L, E, D, F]`` get one adapter per expert (``a [L, E, D, r]``,
``b [L, E, r, F]``).

    adapters = init_adapters(config, lora, rng)
    logits, _ = forward(apply_adapters(params, adapters, lora), tokens, config)
    peft.save_adapters(path, config, adapters, lora)   # adapter_model.safetensors + json

``apply_adapters`` adds each delta to its weight (what a merged checkpoint holds); shape letters
as in ``params``. A ``targets`` name that matches no weight is an error listing those it could.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model.params import ParamSpec, param_specs

# Input dims of each projection (its first dims after the stacked layer, and expert, axes).
_INPUT_DIMS = {"o": 2}
_EXPERT_LEAVES = ("expert_gate", "expert_up", "expert_down")
STACKS = ("dense_layers", "layers")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """``rank`` r, ``alpha`` (the delta is scaled by alpha / r), ``targets``: layer weight
    names (``q k v o gate up down``, and ``expert_gate expert_up expert_down``; MLA's
    ``q q_a q_b kv_a kv_b``). ``dropout``: PEFT's ``lora_dropout``, carried to and from the
    PEFT form (nothing here trains adapters yet: no dropout is applied)."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

    def __post_init__(self):
        if self.rank < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"lora: rank={self.rank} (>= 1), dropout={self.dropout} ([0, 1))")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def adapter_specs(config: ModelConfig, lora: LoRAConfig) -> dict:
    """``{stack: {target: {"a": ParamSpec, "b": ParamSpec}}}`` for every targeted weight."""
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


def delta(a: jax.Array, b: jax.Array, name: str, scale: float) -> jax.Array:
    """``scale * a @ b`` in the weight's shape: ``a [*lead, *in, r]``, ``b [*lead, r, *out]``
    -> ``[*lead, *in, *out]`` (lead: the layer axis, and the expert axis of expert weights)."""
    lead = 2 if name in _EXPERT_LEAVES else 1
    in_shape, out_shape, rank = a.shape[lead:-1], b.shape[lead + 1 :], a.shape[-1]
    a2 = a.reshape(*a.shape[:lead], math.prod(in_shape), rank)
    b2 = b.reshape(*b.shape[:lead], rank, math.prod(out_shape))
    out = jnp.matmul(a2, b2) * scale
    return out.reshape(*a.shape[:lead], *in_shape, *out_shape)


def apply_adapters(params: dict, adapters: dict, lora: LoRAConfig) -> dict:
    """``params`` with every targeted weight replaced by ``W + scale * a @ b`` (in W's dtype)."""
    out = dict(params)
    for stack, targets in adapters.items():
        layer = dict(params[stack])
        for name, ab in targets.items():
            w = layer[name]
            layer[name] = (w + delta(ab["a"], ab["b"], name, lora.scale)).astype(w.dtype)
        out[stack] = layer
    return out
