"""Expert parallelism: each device keeps E / X experts and the tokens travel to them.

X is the size of the mesh's ``expert`` axis. With ``MoEConfig.capacity_factor`` > 0 and X > 1,
``experts_all_to_all`` runs inside ``jax.shard_map`` over the batch's mesh axes (which include
``expert``): each device holds its own tokens and its ``E / X`` experts (their other dims
gathered over FSDP, as FSDP gathers any layer), and per layer

  1. its (token, choice) pairs go to the shard owning their expert: at most C per destination
     (C = ceil(capacity_factor * n * K / X) for its n tokens; a pair past C is dropped, its
     output zero, and counted), packed into a ``[X, C, D]`` send buffer;
  2. one ``all_to_all`` over ``expert`` delivers each shard the ``[X, C, D]`` rows sent to it;
  3. its experts run as grouped matmuls (``jax.lax.ragged_dot``) over those X * C rows, sorted
     by local expert;
  4. a second ``all_to_all`` returns the outputs, which each token sums with its routing
     weights.

Memory per device: its experts (not all E) and 2 x X x C x D rows of buffers; the dropless
``experts_per_shard`` instead gathers every expert of a layer to every device (DeepSeek-V3:
22 GB of bf16 expert weights per layer). With enough capacity (``capacity_factor`` >= X: every
pair fits anywhere) it computes exactly what the dropless path does.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

EXPERT_AXIS = "expert"


def _local(x_ND, weights_NK, experts_NK, gate_LDF, up_LDF, down_LFD, capacity_factor):
    """One device's part (inside ``shard_map``): ``(y [n, D], dropped pairs f32 [])``."""
    n, k = experts_NK.shape
    d = x_ND.shape[1]
    shards = jax.lax.axis_size(EXPERT_AXIS)
    per_shard = gate_LDF.shape[0]  # this device's experts: E / X
    capacity = max(1, math.ceil(capacity_factor * n * k / shards))
    flat = experts_NK.reshape(-1)
    dest_M, local_M = flat // per_shard, flat % per_shard
    # each pair's slot at its destination: its rank among this device's pairs going there
    order = jnp.argsort(dest_M, stable=True)
    counts = jnp.bincount(dest_M, length=shards)
    rank = jnp.arange(n * k) - (jnp.cumsum(counts) - counts)[dest_M[order]]
    slot_M = jnp.zeros_like(flat).at[order].set(rank)
    kept_M = slot_M < capacity  # the others are dropped: scattered out of bounds
    send_XCD = jnp.zeros((shards, capacity, d), x_ND.dtype)
    send_XCD = send_XCD.at[dest_M, slot_M].set(jnp.repeat(x_ND, k, axis=0), mode="drop")
    ids_XC = jnp.full((shards, capacity), -1, jnp.int32)
    ids_XC = ids_XC.at[dest_M, slot_M].set(local_M, mode="drop")
    exchange = lambda a: jax.lax.all_to_all(a, EXPERT_AXIS, 0, 0, tiled=True)
    rows_RD, ids_R = exchange(send_XCD).reshape(-1, d), exchange(ids_XC).reshape(-1)
    y_RD = _grouped(rows_RD, ids_R, gate_LDF, up_LDF, down_LFD).reshape(shards, capacity, d)
    back_XCD = exchange(y_RD)
    y_NKD = back_XCD.at[dest_M, slot_M].get(mode="fill", fill_value=0).reshape(n, k, d)
    y_ND = jnp.einsum("nkd,nk->nd", y_NKD, weights_NK.astype(y_NKD.dtype))
    return y_ND, jnp.sum(~kept_M).astype(jnp.float32)


def _grouped(rows_RD, ids_R, gate_LDF, up_LDF, down_LFD):
    """The local experts over the received rows (id -1: an empty slot, output 0)."""
    per_shard = gate_LDF.shape[0]
    sort_ids = jnp.where(ids_R < 0, per_shard, ids_R)  # empty slots last
    order = jnp.argsort(sort_ids, stable=True)
    sizes = jnp.bincount(sort_ids, length=per_shard + 1)[:per_shard].astype(jnp.int32)
    x = jnp.take(rows_RD, order, axis=0)
    gate = jax.lax.ragged_dot(x, gate_LDF, sizes)
    up = jax.lax.ragged_dot(x, up_LDF, sizes)
    y = jax.lax.ragged_dot(jax.nn.silu(gate) * up, down_LFD, sizes)
    y = jnp.where((jnp.take(sort_ids, order) < per_shard)[:, None], y, 0)  # empty slots: 0
    return jnp.take(y, jnp.argsort(order), axis=0)


def experts_all_to_all(
    x_BTD, weights_BTK, experts_BTK, gate_EDF, up_EDF, down_EFD, *, row_axes, capacity_factor
):
    """``sum_k weight * SwiGLU_expert(x)`` with expert parallelism: ``(y [B, T, D], dropped
    f32 [])``, ``dropped`` the fraction of (token, choice) pairs over capacity. Rows are split
    over ``row_axes`` (the batch rule's mesh axes, which include ``expert``), experts over
    ``expert``; run under the ambient mesh."""
    mesh = jax.sharding.get_abstract_mesh()

    def local(x, w, e, gate, up, down):
        rows = x.shape[0] * x.shape[1]
        flat = lambda a: a.reshape(rows, -1)
        y, dropped = _local(flat(x), flat(w), flat(e), gate, up, down, capacity_factor)
        return y.reshape(x.shape), jax.lax.psum(dropped, row_axes)

    rows, experts = P(row_axes), P(EXPERT_AXIS)
    y, dropped = jax.shard_map(
        local, mesh=mesh, in_specs=(rows, rows, rows, experts, experts, experts),
        out_specs=(rows, P()),
    )(x_BTD, weights_BTK, experts_BTK, gate_EDF, up_EDF, down_EFD)  # fmt: skip
    return y, dropped / experts_BTK.size
