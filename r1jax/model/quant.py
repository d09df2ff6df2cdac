"""The frozen base of LoRA training, in the compute dtype or quantized (QLoRA's int8/int4/NF4).

Quantization is ``qwix``'s (``qwix.quantize`` / ``qwix.dequantize``, its ``QArray``: the
quantized values in the weight's own shape and a scale per tile), so the formats and their
numerics are a maintained library's. Each layer projection ``W [L, (E,) *in, *out]`` is tiled
along its last input dim in blocks of ``quant_block`` (every other dim gets its own scale):
scales ``[L, (E,) ..., in_last / block, *out]`` in the compute dtype. The base stays in its
params tree layout, with ``QArray`` leaves where weights were quantized, so it shards by the
same logical axes (scales by their weight's) and the layer scan slices it per layer; the
forward dequantises one layer at a time (``r1jax.model.weights.materialize``).

    base = frozen_base(params, config, lora)            # jit-able; memory: the quantized tree
    logits, _ = forward(base, tokens, config)           # the base model, dequantised per layer
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import qwix
from jax.tree_util import DictKey

from r1jax.config.lora import LoRAConfig
from r1jax.config.model import ModelConfig
from r1jax.model.params import abstract_params, logical_axes
from r1jax.sharding import named_sharding

QArray = qwix.QArray
_QTYPES = {"int8": jnp.int8, "int4": jnp.int4, "nf4": "nf4"}
# Layer projections: leading (layer, expert) dims and input dims of each.
PROJECTIONS = {
    **dict.fromkeys(("q", "k", "v", "gate", "up", "down", "q_a", "q_b", "kv_a", "kv_b"), (1, 1)),
    **dict.fromkeys(("shared_gate", "shared_up", "shared_down"), (1, 1)),
    **dict.fromkeys(("expert_gate", "expert_up", "expert_down"), (2, 1)),
    "o": (1, 2),
}
STACKS = ("dense_layers", "layers")


def quantize_weight(w: jax.Array, name: str, lora: LoRAConfig, dtype) -> QArray:
    """One stacked projection -> ``QArray`` (absmax scales in ``dtype``, one per tile of
    ``lora.quant_block`` of its last input dim, per output column and per layer/expert).
    Quantized one layer at a time (``lax.map``): the fp32 temporaries are one layer's."""
    lead, in_dims = PROJECTIONS[name]
    axis = lead + in_dims - 2  # in the per-layer slice
    if w.shape[axis + 1] % lora.quant_block:
        raise ValueError(
            f"config.lora.quant_block={lora.quant_block} does not divide {name}'s input dim "
            f"{w.shape[axis + 1]} (weight {tuple(w.shape)}); choose a divisor"
        )
    others = tuple(i for i in range(w.ndim - 1) if i != axis)
    quantize = lambda w_l: qwix.quantize(
        w_l.astype(jnp.float32),
        _QTYPES[lora.base_quant],
        channelwise_axes=others,
        tiled_axes={axis: lora.quant_block},
        scale_dtype=dtype,
    )
    return jax.lax.map(quantize, w)


def convert_leaf(keys: tuple[str, ...], w: jax.Array, config: ModelConfig, lora: LoRAConfig):
    """One leaf of the params (at dict ``keys``, e.g. ``("layers", "q")``) as the frozen base
    keeps it: quantized if it is a layer projection and ``lora.base_quant`` is set, else in
    the compute dtype."""
    if lora.base_quant and keys[0] in STACKS and keys[-1] in PROJECTIONS:
        return quantize_weight(w, keys[-1], lora, config.dtype)
    return w.astype(config.dtype)


def frozen_base(params: dict, config: ModelConfig, lora: LoRAConfig) -> dict:
    """The base params as LoRA training keeps them: every leaf in ``config.dtype`` (it is never
    updated, and the forward casts to that dtype anyway), the layer projections quantized when
    ``lora.base_quant`` is set. Pure: jit it with ``base_shardings``' out shardings."""

    def convert(path, w):
        return convert_leaf(tuple(k.key for k in path if isinstance(k, DictKey)), w, config, lora)

    return jax.tree_util.tree_map_with_path(convert, params)


def abstract_base(config: ModelConfig, lora: LoRAConfig) -> dict:
    """``frozen_base``'s tree as ``jax.ShapeDtypeStruct`` leaves."""
    return jax.eval_shape(lambda p: frozen_base(p, config, lora), abstract_params(config))


def base_shardings(config: ModelConfig, lora: LoRAConfig, mesh) -> dict:
    """``NamedSharding`` leaves for ``frozen_base``'s tree: each weight's logical axes, for its
    quantized values and (dims divided by the tiles) its scales alike."""
    axes = logical_axes(config)

    def sharding(path, leaf):
        leaf_axes = axes
        for k in path:
            if isinstance(k, DictKey):
                leaf_axes = leaf_axes[k.key]
        return named_sharding(mesh, leaf_axes, leaf.shape)

    return jax.tree_util.tree_map_with_path(sharding, abstract_base(config, lora))


def dequantize(w: QArray, dtype) -> jax.Array:
    return qwix.dequantize(w).astype(dtype)


def storage_bits(dtype) -> int:
    """Bits per element in device memory: 4-bit types are packed two to a byte (TPU and GPU
    layouts; NumPy's itemsize says 1 byte)."""
    return 4 if jnp.dtype(dtype) in (jnp.int4, jnp.uint4) else 8 * jnp.dtype(dtype).itemsize


def base_bytes(config: ModelConfig, lora: LoRAConfig) -> int:
    """Bytes of the frozen base in device memory."""
    leaves = jax.tree.leaves(abstract_base(config, lora))
    return sum(x.size * storage_bits(x.dtype) // 8 for x in leaves)
