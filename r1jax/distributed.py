"""Multi-process JAX: ``jax.distributed`` set-up from config or environment (per-process data
and host-side collectives on the resulting mesh: ``r1jax.multihost``).

One code path runs on a laptop CPU and on a pod: every process runs the same program, calls
``initialize(config)`` before touching any device, builds the mesh over ``jax.devices()`` (all
processes' devices), reads only its own shard of each global batch and assembles global arrays
with ``r1jax.multihost.host_local_to_global``.

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
import logging
import os
import re
from collections.abc import Callable, Mapping

import jax

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
