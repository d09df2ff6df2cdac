"""The chips a plan compiles for: Cloud TPU slices by name (devices from
``jax.experimental.topologies``, no TPU needed on this host) or this host's own devices.

    target = resolve_target("v5e-8")     # 8 v5e chips, 15.75 GiB HBM each
    target = resolve_target("local")     # jax.devices() here (GPU, TPU or CPU)

A slice name is ``<generation>-<n>`` as Cloud TPU spells it: ``n`` counts chips for v5e/v6e and
TensorCores (two per chip) for v4/v5p, so ``v5p-64`` is 32 chips.
"""

from __future__ import annotations

import dataclasses
import math
import os

from r1jax.errors import SetupError

GIB = 2**30


@dataclasses.dataclass(frozen=True)
class ChipSpec:
    """One chip: usable HBM (bytes), dense bf16 peak (FLOP/s), HBM bandwidth (bytes/s)."""

    kind: str
    hbm_bytes: int
    peak_flops: float | None
    hbm_bandwidth: float | None


# Public figures (Cloud TPU / NVIDIA data sheets); TPU HBM as XLA's compiler lets a program use
# it per chip (the largest buffer it compiles: v4 15.25 GiB per TensorCore device).
CHIPS: dict[str, ChipSpec] = {
    "v4": ChipSpec("TPU v4", int(30.5 * GIB), 275e12, 1.2e12),
    "v5e": ChipSpec("TPU v5e", int(15.75 * GIB), 197e12, 819e9),
    "v5p": ChipSpec("TPU v5p", int(95.74 * GIB), 459e12, 2.765e12),
    "v6e": ChipSpec("TPU v6e", int(31.25 * GIB), 918e12, 1.64e12),
    "H100": ChipSpec("NVIDIA H100", 80 * 10**9, 989e12, 3.35e12),
    "H200": ChipSpec("NVIDIA H200", 141 * 10**9, 989e12, 4.8e12),
    "A100": ChipSpec("NVIDIA A100", 80 * 10**9, 312e12, 2.04e12),
}
# Chips -> physical topology, per generation family (2D torus for v5e/v6e, 3D for v4/v5p).
TOPOLOGY_2D = {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16",
               256: "16x16"}  # fmt: skip
TOPOLOGY_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
               256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16"}  # fmt: skip
CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a plan's programs would run: the devices and what one device has (a chip; half a
    v4 chip, whose TensorCores are separate devices)."""

    name: str
    devices: tuple
    chip: ChipSpec

    @property
    def chips(self) -> int:
        return len(self.devices)


def tpu_names() -> list[str]:
    """Every slice name ``resolve_target`` knows."""
    names = []
    for gen, per_chip in CORES_PER_CHIP.items():
        table = TOPOLOGY_3D if per_chip == 2 else TOPOLOGY_2D
        names += [f"{gen}-{chips * per_chip}" for chips in table]
    return names


def tpu_topology(name: str) -> tuple[str, str]:
    """``"v5p-64"`` -> (``"v5p"``, ``"v5p:2x4x4"``); a clear error for an unknown name."""
    gen, _, count = name.partition("-")
    per_chip = CORES_PER_CHIP.get(gen)
    table = TOPOLOGY_3D if per_chip == 2 else TOPOLOGY_2D
    if per_chip is None or not count.isdigit() or int(count) % per_chip:
        raise ValueError(f"unknown topology {name!r}; known: local, {', '.join(tpu_names())}")
    chips = int(count) // per_chip
    if chips not in table:
        raise ValueError(f"unknown topology {name!r}; known: local, {', '.join(tpu_names())}")
    return gen, f"{gen}:{table[chips]}"


def _tpu_devices(topology: str) -> tuple:
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    try:
        from jax.experimental import topologies

        gen, shape = topology.split(":")
        dims = [int(d) for d in shape.split("x")]
        # A slice smaller than one host (v5e-1, v5e-4 on a 2x4 host...) is its own host.
        per_host = {} if math.prod(dims) >= 4 else {"chips_per_host_bounds": [*dims, 1][:3]}
        desc = topologies.get_topology_desc(topology_name=topology, platform="tpu", **per_host)
    except Exception as e:  # no libtpu: jax raises its own errors, by version
        raise SetupError(
            f"compiling for {topology} needs the TPU compiler on this host: "
            f"pip install -e '.[tpu]' (in its own venv) ({type(e).__name__}: {e})"
        ) from e
    return tuple(desc.devices)


# ``device_kind`` strings of the TPUs (as jax names them) -> ``CHIPS``; GPUs by name.
TPU_KINDS = {"TPU v4": "v4", "TPU v5 lite": "v5e", "TPU v5e": "v5e", "TPU v5": "v5p",
             "TPU v5p": "v5p", "TPU v6 lite": "v6e", "TPU v6e": "v6e"}  # fmt: skip


def _local_chip(devices) -> ChipSpec:
    """The local devices' chip: its peak and bandwidth from ``CHIPS``, its memory as the
    runtime lets this process use it (``bytes_limit``: an A100 of 40 GB, a GPU's preallocated
    share) where it says."""
    kind = devices[0].device_kind
    if devices[0].platform == "cpu":  # host memory shared by the fake devices
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        return ChipSpec(f"CPU ({kind})", total // len(devices), None, None)
    gpus = [name for name in ("H200", "H100", "A100") if name.lower() in kind.lower()]
    name = TPU_KINDS.get(kind) or (gpus[0] if gpus else None)
    stats = getattr(devices[0], "memory_stats", lambda: None)() or {}
    limit = int(stats.get("bytes_limit", 0))
    if name is None:
        return ChipSpec(kind, limit, None, None)
    spec = CHIPS[name]
    return dataclasses.replace(spec, hbm_bytes=limit) if limit else spec


def resolve_target(name: str) -> Target:
    """A ``Target`` by name: ``"local"`` or a Cloud TPU slice (``tpu_names()``)."""
    if name == "local":
        import jax

        devices = tuple(jax.devices())
        return Target("local", devices, _local_chip(devices))
    gen, topology = tpu_topology(name)
    devices = _tpu_devices(topology)
    chips = int(name.partition("-")[2]) // CORES_PER_CHIP[gen]
    spec, split = CHIPS[gen], len(devices) // chips  # v4: one device per TensorCore
    if split > 1:
        spec = ChipSpec(
            f"{spec.kind} (1/{split} chip)",
            spec.hbm_bytes // split,
            spec.peak_flops / split,
            spec.hbm_bandwidth / split,
        )
    return Target(name, devices, spec)
