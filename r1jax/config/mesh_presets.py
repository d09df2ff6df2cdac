"""Mesh shapes for common slices, as data: ``PRESETS[name] -> MeshPreset``.

Mesh axes (``r1jax.sharding``): ``data`` (pure data parallel: params replicated, gradients
all-reduced), ``fsdp`` (batch AND params/optimizer state split; params all-gathered per layer),
``tensor`` (heads/MLP split; an all-reduce per layer inside the forward pass). The outer axis of
``jax.make_mesh`` spans the slowest links (hosts or nodes), the inner ones the fastest.

Rules of thumb behind the table, for <= 8B dense models trained in fp32 master weights with Adam
(16 bytes/param: params + two moments + gradient):

* FSDP first. It divides the 16 bytes/param by the fsdp size and its all-gathers overlap with
  compute; it is the cheapest way to fit the model. Keep it on fast links (ICI, NVLink).
* data across the slow links (DCN between TPU slices, InfiniBand/Ethernet between GPU nodes):
  one gradient all-reduce per step, nothing per layer.
* tensor only when a layer no longer fits or the per-device batch would drop below ~1 row;
  the heads must divide it (Qwen2.5-1.5B has 2 KV heads, 7B has 4; Llama-3.1-8B has 8). It also
  speeds up GRPO decoding, which is latency bound.
* the global batch (rows) must divide by data x fsdp.
"""

from __future__ import annotations

import dataclasses

from r1jax.config.schema import MeshConfig


@dataclasses.dataclass(frozen=True)
class MeshPreset:
    """A slice: how many devices and hosts JAX sees there, the mesh and why."""

    name: str
    devices: int
    hosts: int
    data: int
    fsdp: int
    tensor: int
    why: str

    def __post_init__(self):
        if self.data * self.fsdp * self.tensor != self.devices:
            raise ValueError(f"mesh preset {self.name}: data x fsdp x tensor != {self.devices}")

    @property
    def mesh(self) -> MeshConfig:
        return MeshConfig(data=self.data, fsdp=self.fsdp, tensor=self.tensor)

    @property
    def axes(self) -> tuple[int, int, int]:
        return (self.data, self.fsdp, self.tensor)

    def flags(self) -> list[str]:
        """The override that selects this mesh on any command."""
        return [f"--config.mesh.preset={self.name}"]


PRESETS: dict[str, MeshPreset] = {
    p.name: p
    for p in (
        MeshPreset(
            "cpu-8", 8, 1, 8, 1, 1,
            "8 fake CPU devices (tests, laptops): pure data parallel, params replicated.",
        ),
        MeshPreset(
            "v5e-8", 8, 1, 1, 8, 1,
            "One v5litepod-8 host, 8 chips x 16 GiB HBM. A 7B model needs ~112 GiB for fp32 "
            "params + Adam: fsdp=8 gives 14 GiB/chip of state, so everything goes to fsdp "
            "(a 1.5B model would also fit data=8, but fsdp=8 keeps room for activations).",
        ),
        MeshPreset(
            "v5p-64", 32, 8, 2, 16, 1,
            "v5p-64 = 64 TensorCores = 32 megacore chips (JAX devices) on 8 hosts, 95 GiB each, "
            "one 3D-torus ICI slice. fsdp=16 puts 8B x 16 bytes at 8 GiB/chip; data=2 halves "
            "the all-gather group and keeps the batch granularity at 32 rows.",
        ),
        MeshPreset(
            "8xH100", 8, 1, 1, 8, 1,
            "One node, 8 x 80 GiB on NVLink: fsdp=8 (8B x 16 bytes = 128 GiB -> 16 GiB/GPU). "
            "For faster GRPO decoding of a 7B model try data=1, fsdp=4, tensor=2.",
        ),
        MeshPreset(
            "2x8xH100", 16, 2, 2, 8, 1,
            "Two nodes: fsdp=8 inside each node (NVLink), data=2 across nodes (InfiniBand "
            "carries one gradient all-reduce per step). data is the outer mesh axis, so it spans "
            "the nodes. Run one process per node (srun --ntasks-per-node=1) or per GPU.",
        ),
    )
}  # fmt: skip


def get(name: str) -> MeshPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown mesh preset {name!r}; known: {sorted(PRESETS)}") from None
