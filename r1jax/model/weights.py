"""Lazy weight leaves: what a layer stack's weight may be besides a plain array.

The forward pass scans over stacked layers and turns each layer's slice into compute-dtype
arrays with ``materialize`` before using it, so a weight leaf may be

  * an array (any float dtype; cast),
  * a ``qwix.QArray`` (a quantized frozen base, ``r1jax.model.quant``; dequantised),
  * a ``LoRAWeight`` (a base weight plus low-rank adapters, ``r1jax.model.lora``: the merged
    ``W + scale * a @ b``).

Only one layer's weights are materialised at a time (inside the scan body, recomputed under
remat), so a quantized or adapted model costs the compute-dtype copy of ONE layer; gradients
reach the adapters through the merge (``d a = x^T (g b^T)``-like products of one layer).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from r1jax.model.quant import QArray, dequantize


def lora_delta(a: jax.Array, b: jax.Array, lead: int, scale: float) -> jax.Array:
    """``scale * a @ b`` in the weight's shape: ``a [*lead, *in, r]``, ``b [*lead, r, *out]``
    -> ``[*lead, *in, *out]`` (lead: the layer axis, and the expert axis of expert weights,
    as many as the arrays have)."""
    in_shape, out_shape, rank = a.shape[lead:-1], b.shape[lead + 1 :], a.shape[-1]
    a2 = a.reshape(*a.shape[:lead], math.prod(in_shape), rank)
    b2 = b.reshape(*b.shape[:lead], rank, math.prod(out_shape))
    out = jnp.matmul(a2, b2) * scale
    return out.reshape(*a.shape[:lead], *in_shape, *out_shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LoRAWeight:
    """A frozen ``base`` weight (array or ``QArray``) with adapters ``a [..., *in, r]`` and
    ``b [..., r, *out]`` (``...``: the stacked layer, and expert, dims the base has too);
    ``scale`` = alpha / r is static. The layer scan slices all three along the layer axis."""

    base: jax.Array | QArray
    a: jax.Array
    b: jax.Array
    scale: float = dataclasses.field(metadata=dict(static=True))

    def materialize(self, dtype) -> jax.Array:
        """The merged weight ``base + scale * a @ b`` in ``dtype``."""
        lead = self.a.ndim + self.b.ndim - self.base.ndim - 2  # stacked layer (expert) dims
        delta = lora_delta(self.a.astype(dtype), self.b.astype(dtype), lead, self.scale)
        return _materialize_leaf(self.base, dtype) + delta


def _materialize_leaf(w, dtype) -> jax.Array:
    if isinstance(w, LoRAWeight):
        return w.materialize(dtype)
    if isinstance(w, QArray):
        return dequantize(w, dtype)
    return w.astype(dtype)


def materialize(tree, dtype):
    """Every weight of ``tree`` (e.g. one layer's params) as a ``dtype`` array."""
    return jax.tree.map(
        lambda w: _materialize_leaf(w, dtype),
        tree,
        is_leaf=lambda x: isinstance(x, LoRAWeight | QArray),
    )
