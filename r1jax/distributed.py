"""Multi-process JAX: ``jax.distributed`` set-up from config or environment, and per-process data.

One code path runs on a laptop CPU and on a pod: every process runs the same program, calls
``initialize(config)`` before touching any device, builds the mesh over ``jax.devices()`` (all
processes' devices), reads only its own shard of each global batch and assembles global arrays
with ``host_local_to_global``.

Where the coordinator and ranks come from (first match wins; ``detect_plan`` is a pure function
of the environment, so each case is unit-tested with a fake one):

  explicit  ``config.distributed.{coordinator,num_processes,process_id}`` or the environment
            ``R1JAX_COORDINATOR`` ("host:port"), ``R1JAX_NUM_PROCESSES``, ``R1JAX_PROCESS_ID``
            (optional ``R1JAX_LOCAL_DEVICE_IDS``="0,1"). ``launch/local.sh`` uses these.
  slurm     ``srun``: ``SLURM_PROCID`` / ``SLURM_NTASKS``; coordinator = first host of
            ``SLURM_STEP_NODELIST`` (else ``SLURM_JOB_NODELIST``), port ``R1JAX_COORDINATOR_PORT``
            or derived from ``SLURM_JOB_ID`` (as JAX does). With several tasks per node (one per
            GPU) each task sees only GPU ``SLURM_LOCALID`` (unless SLURM already bound it one
            via ``CUDA_VISIBLE_DEVICES``); with one task per node, all of them.
  xpk       XPK GPU workloads: ``JAX_COORDINATOR_ADDRESS`` (+ ``JAX_COORDINATOR_PORT``),
            ``NNODES``, ``NODE_RANK``.
  jobset    a GKE JobSet of one replicated Job in Indexed mode: rank ``JOB_COMPLETION_INDEX``
            (+ ``JOB_INDEX`` x ``R1JAX_PROCESSES_PER_JOB`` when the replicated job has several
            replicas), count ``R1JAX_NUM_PROCESSES``, coordinator = pod 0's stable DNS name
            ``<JOBSET_NAME>-<REPLICATED_JOB_NAME>-0-0.<R1JAX_SUBDOMAIN or JOBSET_NAME>:<port>``
            (JobSet's ``network.enableDNSHostnames``); ``launch/gke/jobset.yaml`` sets all of it.
  tpu       a Cloud TPU VM (``/dev/accel*`` or ``/dev/vfio`` present, or ``TPU_WORKER_HOSTNAMES``
            / ``TPU_ACCELERATOR_TYPE`` set; also TPU on GKE): ``jax.distributed.initialize()``
            without arguments, JAX reads the topology from the TPU metadata.
  single    nothing found (or ``config.distributed.mode = "off"``): no-op.

On the CPU backend the cross-process collectives are gloo
(``jax_cpu_collectives_implementation``); set before the backend starts.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping

import jax
import numpy as np

log = logging.getLogger(__name__)

MODES = ("auto", "off", "explicit", "slurm", "xpk", "jobset", "tpu")
DEFAULT_PORT = 8476  # any free port works; every process must agree on it


@dataclasses.dataclass(frozen=True)
class Plan:
    """How (and whether) to call ``jax.distributed.initialize``.

    ``source``: which rule matched ("single", "explicit", "slurm", "xpk", "jobset", "tpu").
    ``auto``: call ``initialize()`` with no arguments (TPU: JAX finds the rest itself).
    """

    source: str
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None
    auto: bool = False

    @property
    def is_distributed(self) -> bool:
        return self.auto or (self.num_processes or 1) > 1

    def initialize_kwargs(self) -> dict:
        """Keyword arguments for ``jax.distributed.initialize``."""
        if self.auto:
            return {}
        kwargs = dict(
            coordinator_address=self.coordinator_address,
            num_processes=self.num_processes,
            process_id=self.process_id,
        )
        if self.local_device_ids is not None:
            kwargs["local_device_ids"] = list(self.local_device_ids)
        return kwargs


# ------------------------------------------------------------------------- detection


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise ValueError(f"environment {name}={env[name]!r}: expected an integer") from None


def _device_ids(text: str | None) -> tuple[int, ...] | None:
    if text in (None, ""):
        return None
    return tuple(int(x) for x in str(text).split(","))


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM hostlist: "gpu[003-007,010],cpu1" -> "gpu003"."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m or not m.group(1):
        raise ValueError(f"SLURM nodelist {nodelist!r}: cannot parse the first host")
    prefix, ranges = m.groups()
    if ranges is None:
        return prefix
    return prefix + re.split(r"[,\-]", ranges)[0]


def _explicit(cfg: Mapping, env: Mapping[str, str]) -> Plan | None:
    coordinator = cfg.get("coordinator") or env.get("R1JAX_COORDINATOR")
    num = cfg.get("num_processes") or env.get("R1JAX_NUM_PROCESSES")
    pid = cfg.get("process_id")
    pid = env.get("R1JAX_PROCESS_ID") if pid is None else pid
    if coordinator is None and pid is None:  # a bare R1JAX_NUM_PROCESSES is the JobSet's
        return None
    if coordinator is None or num is None or pid is None:
        raise ValueError(
            "explicit distributed set-up needs all of coordinator (R1JAX_COORDINATOR=host:port), "
            f"num_processes (R1JAX_NUM_PROCESSES) and process_id (R1JAX_PROCESS_ID); got "
            f"coordinator={coordinator!r}, num_processes={num!r}, process_id={pid!r}"
        )
    if ":" not in str(coordinator):
        raise ValueError(f"coordinator {coordinator!r}: expected host:port")
    num, pid = int(num), int(pid)
    if not 0 <= pid < num:
        raise ValueError(f"process_id={pid} must be in [0, num_processes={num})")
    ids = cfg.get("local_device_ids") or env.get("R1JAX_LOCAL_DEVICE_IDS")
    if ids is not None and not isinstance(ids, str):
        ids = ",".join(map(str, ids))
    return Plan("explicit", str(coordinator), num, pid, _device_ids(ids))


def _slurm(env: Mapping[str, str]) -> Plan | None:
    if not all(k in env for k in ("SLURM_JOB_ID", "SLURM_PROCID", "SLURM_NTASKS")):
        return None
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise ValueError("SLURM: neither SLURM_STEP_NODELIST nor SLURM_JOB_NODELIST is set")
    port = env.get("R1JAX_COORDINATOR_PORT")
    port = int(port) if port else _int(env, "SLURM_JOB_ID") % 2**12 + (65535 - 2**12 + 1)
    ntasks = _int(env, "SLURM_NTASKS")
    nnodes = int(env.get("SLURM_STEP_NUM_NODES") or env.get("SLURM_JOB_NUM_NODES") or ntasks)
    ids = None
    # Several tasks per node: one GPU each, unless SLURM already bound one (--gpus-per-task=1
    # leaves each task a single visible GPU, whose local id is then 0).
    bound = len([d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]) == 1
    if ntasks > nnodes and "SLURM_LOCALID" in env and not bound:
        ids = (_int(env, "SLURM_LOCALID"),)
    return Plan(
        "slurm", f"{first_slurm_host(nodelist)}:{port}", ntasks, _int(env, "SLURM_PROCID"), ids
    )


def _xpk(env: Mapping[str, str]) -> Plan | None:
    if not all(k in env for k in ("JAX_COORDINATOR_ADDRESS", "NNODES", "NODE_RANK")):
        return None
    address = env["JAX_COORDINATOR_ADDRESS"]
    if ":" not in address:
        address = f"{address}:{env.get('JAX_COORDINATOR_PORT', DEFAULT_PORT)}"
    return Plan("xpk", address, _int(env, "NNODES"), _int(env, "NODE_RANK"))


def _jobset(env: Mapping[str, str]) -> Plan | None:
    if "JOB_COMPLETION_INDEX" not in env or "JOBSET_NAME" not in env:
        return None
    if "R1JAX_NUM_PROCESSES" not in env:
        raise ValueError("JobSet: set R1JAX_NUM_PROCESSES (parallelism x replicas) in the pod env")
    jobset, rjob = env["JOBSET_NAME"], env.get("REPLICATED_JOB_NAME", "workers")
    subdomain = env.get("R1JAX_SUBDOMAIN") or jobset
    port = env.get("R1JAX_COORDINATOR_PORT", DEFAULT_PORT)
    pid = _int(env, "JOB_COMPLETION_INDEX")
    if "JOB_INDEX" in env:
        pid += _int(env, "JOB_INDEX") * int(env.get("R1JAX_PROCESSES_PER_JOB", 0) or 0)
    return Plan(
        "jobset", f"{jobset}-{rjob}-0-0.{subdomain}:{port}", _int(env, "R1JAX_NUM_PROCESSES"), pid
    )


def _tpu(env: Mapping[str, str], tpu_vm: bool) -> Plan | None:
    if tpu_vm or "TPU_WORKER_HOSTNAMES" in env or "TPU_ACCELERATOR_TYPE" in env:
        return Plan("tpu", auto=True)
    return None


def detect_plan(
    config: Mapping | None = None, env: Mapping[str, str] | None = None, *, tpu_vm: bool = False
) -> Plan:
    """The distributed plan for ``config`` (the ``distributed`` section) and ``env``.

    Pure: reads only its arguments. ``config.mode``: "auto" (default; first rule that matches,
    see the module docstring), "off", or one rule's name to insist on it.
    """
    cfg = dict(config or {})
    env = dict(os.environ if env is None else env)
    mode = cfg.get("mode") or env.get("R1JAX_DISTRIBUTED") or "auto"
    if mode not in MODES:
        raise ValueError(f"config.distributed.mode={mode!r}; expected one of {MODES}")
    if mode == "off":
        return Plan("single")
    rules: dict[str, Callable[[], Plan | None]] = {
        "explicit": lambda: _explicit(cfg, env),
        "slurm": lambda: _slurm(env),
        "xpk": lambda: _xpk(env),
        "jobset": lambda: _jobset(env),
        "tpu": lambda: _tpu(env, tpu_vm or mode == "tpu"),
    }
    for name in rules if mode == "auto" else (mode,):
        plan = rules[name]()
        if plan is not None:
            return plan
    if mode != "auto":
        raise ValueError(f"config.distributed.mode={mode!r} but its environment is not set")
    return Plan("single")


def on_tpu_vm() -> bool:
    """Whether TPU chips are attached to this host (the device files libtpu opens)."""
    return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))


# ---------------------------------------------------------------------- initialisation


def _section(config) -> Mapping:
    if config is None:
        return {}
    if "distributed" in config:
        config = config["distributed"]
    return dict(config.to_dict() if hasattr(config, "to_dict") else config)


def _cpu_backend() -> bool:
    platforms = jax.config.jax_platforms or os.environ.get("JAX_PLATFORMS", "")
    return platforms.split(",")[0].strip() == "cpu"


def initialize(config=None, *, env: Mapping[str, str] | None = None) -> Plan:
    """Initialises ``jax.distributed`` once; a no-op for a single process or a second call.

    ``config``: the whole config (its ``distributed`` section is used), the section itself, a
    mapping, or None (environment only). Must run before any device is used. Returns the plan.
    """
    section = _section(config)
    plan = detect_plan(section, env, tpu_vm=on_tpu_vm())
    if not plan.is_distributed or jax.distributed.is_initialized():
        return plan
    if _cpu_backend():  # cross-process CPU collectives; must precede the backend's start
        jax.config.update(
            "jax_cpu_collectives_implementation", section.get("cpu_collectives") or "gloo"
        )
    kwargs = plan.initialize_kwargs()
    if section.get("initialization_timeout"):
        kwargs["initialization_timeout"] = int(section["initialization_timeout"])
    log.info("jax.distributed.initialize via %s: %s", plan.source, kwargs or "(auto)")
    jax.distributed.initialize(**kwargs)
    return plan


def is_main_process() -> bool:
    """True on process 0: the one that logs, writes metrics and dumps artefacts."""
    return jax.process_index() == 0


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


# ------------------------------------------------------------------------ per-process data


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


def _batch_axes(mesh, rules) -> tuple[str, ...]:
    from r1jax.sharding import ShardingRules

    return tuple(a for a in (rules or ShardingRules()).mesh_axes("batch") if mesh.shape[a] > 1)


def batch_splits(mesh, rules=None) -> int:
    """Into how many shards the mesh splits a batch (the product of the "batch" rule's axes)."""
    return math.prod(mesh.shape[a] for a in _batch_axes(mesh, rules))


def data_shard(mesh, rules=None, process_index: int | None = None) -> DataShard:
    """Which contiguous block of the batch dimension ``process_index``'s devices hold.

    The batch is split over the "batch" rule's mesh axes; the devices of one process must hold
    a contiguous run of those shards (true for ``jax.make_mesh`` meshes).
    """
    pid = jax.process_index() if process_index is None else process_index
    axes = _batch_axes(mesh, rules)
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


def batch_feed(mesh, global_rows: int, what: str, rules=None) -> DataShard:
    """This process's data shard for a global batch of ``global_rows``, checked to split.

    Processes that hold the same batch shard (the tensor or fsdp axis spanning hosts) get the
    same shard and must read the same records: data pipelines shard by it, not by process.
    """
    shard = data_shard(mesh, rules)
    if global_rows % shard.count:
        raise ValueError(
            f"{what}={global_rows} must divide by the {shard.count} data shards of the mesh's "
            f"processes"
        )
    return shard


def shard_owners(mesh, rules=None) -> list[int]:
    """The first process holding each batch shard, in shard order: whose rows of a
    ``gather_rows`` to keep so that each shard counts once (``gather_shards``)."""
    owners: dict[int, int] = {}
    for p in range(1 + max(d.process_index for d in mesh.devices.flat)):
        owners.setdefault(data_shard(mesh, rules, process_index=p).index, p)
    return [owners[i] for i in sorted(owners)]


def gather_shards(x, mesh, rules=None) -> np.ndarray:
    """``gather_rows`` with one copy of each batch shard, in shard order: every process's host
    rows ``[n, ...]`` -> ``[shards * n, ...]`` (the global batch's rows, each once, even when
    several processes hold the same shard). A collective: all processes must call."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x
    blocks = gather_rows(x[None])  # [processes, n, ...]
    return np.concatenate([blocks[p] for p in shard_owners(mesh, rules)], axis=0)


def host_local_to_global(batch, mesh, logical_axes=None, rules=None):
    """Assembles each process's rows into global ``jax.Array``s (no cross-host copy).

    Args:
      batch: pytree of host arrays holding THIS process's rows (``data_shard(mesh).rows``).
      mesh: the global mesh.
      logical_axes: pytree matching ``batch`` of logical-axis tuples, or None: the leading dim
        is "batch" (split like ``r1jax.train.step.batch_sharding``), the rest replicated.
    Returns the pytree of global arrays, leading dim ``count x`` the local one.
    """
    from r1jax.sharding import named_sharding

    shard = data_shard(mesh, rules)
    splits = batch_splits(mesh, rules)

    def one(x, axes=None):
        x = np.asarray(x)
        axes = axes or ("batch",) + (None,) * (x.ndim - 1)
        shape = (x.shape[0] * shard.count, *x.shape[1:])
        if shard.count > 1 and shape[0] % splits:
            raise ValueError(
                f"{shape[0]} rows ({x.shape[0]} per process) do not split over the mesh's "
                f"{splits} batch shards: use a global batch (e.g. prompts per step) divisible "
                f"by {splits}"
            )
        sharding = named_sharding(mesh, axes, shape, rules)
        return jax.make_array_from_process_local_data(sharding, x, shape)

    if logical_axes is None:
        return jax.tree.map(one, batch)
    return jax.tree.map(one, batch, logical_axes)  # axes tuples sit at the batch's leaves


def process_local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a global array split on its leading dim, as one host array.

    The inverse of ``host_local_to_global``: e.g. the sampled completions a process scores
    itself (rewards are computed where the completions are). Replicas are read once; an array
    not split on its leading dim comes back whole.
    """
    shards = {}
    for shard in x.addressable_shards:
        start = shard.index[0].start or 0  # None: the dim is not split
        shards.setdefault(start, shard)
    return np.concatenate([np.asarray(shards[k].data) for k in sorted(shards)], axis=0)
