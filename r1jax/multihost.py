"""Data and host-side values on a mesh that spans several processes (after
``r1jax.distributed.initialize``).

Each process feeds only its rows of a global batch: ``data_shard(mesh)`` says which contiguous
block of the batch dimension its devices hold (processes that share a block, e.g. when the
tensor axis spans hosts, feed the same rows), ``batch_feed`` checks a global batch splits, and
``host_local_to_global`` / ``data_shard_rows`` go between a process's rows and global
``jax.Array``s; ``to_host`` copies global arrays whole to every process. Host-side collectives
for small values: ``gather_rows`` (arrays), ``gather_shards`` (each batch shard once),
``gather_objects`` (JSON records), ``all_processes`` and ``barrier``. With one process all of
them are identities.
"""

from __future__ import annotations

import dataclasses
import json
import math

import jax
import numpy as np


def to_host(tree):
    """A pytree of global ``jax.Array``s as host arrays, whole on every process: ``device_get``
    where this process addresses every shard, else an all-gather (a collective: every process
    calls it, as every process holds part of the arrays)."""
    if all(getattr(x, "is_fully_addressable", True) for x in jax.tree.leaves(tree)):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def gather_rows(x) -> np.ndarray:
    """Every process's host array ``[n, ...]`` (same shape everywhere) concatenated in process
    order: ``[count * n, ...]`` on every process; ``x`` itself with one process. For small
    host-side values (rewards, lengths, counters), not for model data."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def all_processes(flag: bool) -> bool:
    """True when ``flag`` is true on every process (a collective: all processes must call)."""
    return bool(np.all(gather_rows(np.asarray([flag], np.int32))))


def _to_json(obj):
    """JSON fallback for NumPy values (Parquet columns) and anything else (as text)."""
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)


def gather_objects(obj) -> list:
    """Every process's JSON-serialisable ``obj``, in process order, on every process (``[obj]``
    with one process). A collective: all processes must call. For host-side records (judged
    samples, per-question results), sent as UTF-8 JSON through two ``gather_rows``."""
    if jax.process_count() == 1:
        return [obj]
    payload = np.frombuffer(json.dumps(obj, default=_to_json).encode(), np.uint8)
    sizes = gather_rows(np.asarray([payload.size], np.int64))
    padded = np.zeros(int(sizes.max()), np.uint8)
    padded[: payload.size] = payload
    blocks = gather_rows(padded[None]).reshape(len(sizes), -1)
    return [json.loads(bytes(b[:n]).decode()) for b, n in zip(blocks, sizes, strict=True)]


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier ``name`` (no-op with one process):
    e.g. before other processes read a file process 0 has just written."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


@dataclasses.dataclass(frozen=True)
class DataShard:
    """This process's slice of every global batch: rows ``[index * n, (index + 1) * n)`` of a
    global batch of ``count * n`` rows (processes that share data shards, e.g. when the
    tensor axis spans hosts, get the same ``index`` and must feed the same rows)."""

    index: int
    count: int

    def rows(self, global_batch: int) -> slice:
        if global_batch % self.count:
            raise ValueError(f"global batch {global_batch} is not divisible by {self.count} shards")
        n = global_batch // self.count
        return slice(self.index * n, (self.index + 1) * n)


def _batch_axes(mesh) -> tuple[str, ...]:
    from r1jax.sharding import current_rules

    return tuple(a for a in current_rules().mesh_axes("batch") if mesh.shape.get(a, 1) > 1)


def batch_splits(mesh) -> int:
    """Into how many shards the mesh splits a batch (the product of the "batch" rule's axes)."""
    return math.prod(mesh.shape[a] for a in _batch_axes(mesh))


def data_shard(mesh, process_index: int | None = None) -> DataShard:
    """Which contiguous block of the batch dimension ``process_index``'s devices hold.

    The batch is split over the "batch" rule's mesh axes; the devices of one process must hold
    a contiguous run of those shards (true for ``jax.make_mesh`` meshes).
    """
    pid = jax.process_index() if process_index is None else process_index
    axes = _batch_axes(mesh)
    names = list(mesh.axis_names)
    total = math.prod(mesh.shape[a] for a in axes)
    if total == 1:
        return DataShard(0, 1)
    order = [names.index(a) for a in axes]
    dev = mesh.devices
    # Batch-shard id of every device: its mixed-radix index over the batch axes.
    ids = np.zeros(dev.shape, dtype=np.int64)
    for axis in order:
        size = dev.shape[axis]
        shape = [1] * dev.ndim
        shape[axis] = size
        ids = ids * size + np.arange(size).reshape(shape)
    mine = sorted(
        {int(i) for d, i in zip(dev.flat, ids.flat, strict=True) if d.process_index == pid}
    )
    if not mine:
        raise ValueError(f"process {pid} owns no device of the mesh")
    per = len(mine)
    if mine != list(range(mine[0], mine[0] + per)) or mine[0] % per or total % per:
        raise ValueError(f"process {pid} holds batch shards {mine}: not one contiguous block")
    return DataShard(mine[0] // per, total // per)


def batch_feed(mesh, global_rows: int, what: str) -> DataShard:
    """This process's data shard for a global batch of ``global_rows``, checked to split.

    Processes that hold the same batch shard (the tensor or fsdp axis spanning hosts) get the
    same shard and must read the same records: data pipelines shard by it, not by process.
    """
    shard = data_shard(mesh)
    if global_rows % shard.count:
        raise ValueError(
            f"{what}={global_rows} must be a multiple of {shard.count}: the {jax.process_count()} "
            f"processes hold {shard.count} different blocks of the batch and each feeds whole "
            f"examples; change {what} (any multiple of {batch_splits(mesh)}, the mesh's "
            "batch shards, works on every process count)"
        )
    return shard


def shard_owners(mesh) -> list[int]:
    """The first process holding each batch shard, in shard order: whose rows of a
    ``gather_rows`` to keep so that each shard counts once (``gather_shards``)."""
    owners: dict[int, int] = {}
    for p in range(1 + max(d.process_index for d in mesh.devices.flat)):
        owners.setdefault(data_shard(mesh, process_index=p).index, p)
    return [owners[i] for i in sorted(owners)]


def gather_shards(x, mesh) -> np.ndarray:
    """``gather_rows`` with one copy of each batch shard, in shard order: every process's host
    rows ``[n, ...]`` -> ``[shards * n, ...]`` (the global batch's rows, each once, even when
    several processes hold the same shard). A collective: all processes must call."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    blocks = gather_rows(x[None])  # [processes, n, ...]
    return np.concatenate([blocks[p] for p in shard_owners(mesh)], axis=0)


def host_local_to_global(batch, mesh, logical_axes=None):
    """Assembles each process's rows into global ``jax.Array``s with the sharding one process
    would give them (``named_sharding``): the same program and result on any process count.

    Args:
      batch: pytree of host arrays holding THIS process's rows (``data_shard(mesh).rows``).
      mesh: the global mesh.
      logical_axes: pytree matching ``batch`` of logical-axis tuples, or None: the leading dim
        is "batch" (split like ``r1jax.train.step.batch_sharding``), the rest replicated.
    Returns the pytree of global arrays, leading dim ``count x`` the local one. Rows that split
    over the batch shards go straight from each process to its devices; a global row count that
    does not split (one process would replicate it) is gathered first (small inputs only, e.g.
    a few prompts).
    """
    from r1jax.sharding import named_sharding

    shard = data_shard(mesh)

    def one(x, axes=None):
        x = np.asarray(x)
        axes = axes or ("batch",) + (None,) * (x.ndim - 1)
        shape = (x.shape[0] * shard.count, *x.shape[1:])
        sharding = named_sharding(mesh, axes, shape)
        if shard.count > 1 and shape[0] % batch_splits(mesh):
            full = gather_shards(x, mesh)  # every row, on every process
            return jax.make_array_from_callback(shape, sharding, lambda index: full[index])
        return jax.make_array_from_process_local_data(sharding, x, shape)

    if logical_axes is None:
        return jax.tree.map(one, batch)
    return jax.tree.map(one, batch, logical_axes)  # axes tuples sit at the batch's leaves


def data_shard_rows(x: jax.Array, mesh) -> np.ndarray:
    """This process's data-shard block of rows (``data_shard(mesh).rows``) of a global array
    split, partly split or not split on its leading dim (only that dim): the inverse of
    ``host_local_to_global``, e.g. the sampled completions a process scores itself."""
    want = data_shard(mesh).rows(x.shape[0])
    out = np.empty((want.stop - want.start, *x.shape[1:]), x.dtype)
    filled = np.zeros(len(out), bool)
    for piece in x.addressable_shards:
        start, stop, _ = piece.index[0].indices(x.shape[0])
        lo, hi = max(start, want.start), min(stop, want.stop)
        if lo < hi and not filled[lo - want.start : hi - want.start].all():
            out[lo - want.start : hi - want.start] = np.asarray(piece.data)[lo - start : hi - start]
            filled[lo - want.start : hi - want.start] = True
    if not filled.all():
        raise ValueError(f"rows {want} of a {x.shape} array are not all on this process")
    return out
