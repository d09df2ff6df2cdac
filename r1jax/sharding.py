"""Device mesh and logical-axis sharding rules.

Every parameter and activation is annotated with *logical* axis names (``"embed"``, ``"heads"``,
``"batch"``, ...). A rules table, which is plain data, maps each logical name to zero or more
*mesh* axes (``"data"``, ``"fsdp"``, ``"tensor"``). Changing how a model is parallelised means
changing the mesh shape or the rules, never the model code.

A mesh axis is only used for a dimension it divides evenly; otherwise that dimension is
replicated over it (e.g. 2 KV heads on a tensor axis of 8). ``describe_fallbacks`` reports such
cases so a large parameter is never replicated silently.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. Params: "embed" is FSDP-sharded, the wide dims are tensor-sharded.
# Activations: the batch is split over every data-parallel axis; features over "tensor".
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", ("tensor",)),
    ("embed", ("fsdp",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("head_dim", ()),
    ("layers", ()),
    ("seq", ()),
    ("cache_seq", ()),
    ("act_embed", ()),
    ("act_heads", ("tensor",)),
    ("act_kv_heads", ("tensor",)),
    ("act_mlp", ("tensor",)),
    ("act_vocab", ("tensor",)),
    ("norm", ()),
)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the ``data``, ``fsdp``, ``tensor`` mesh axes; one may be -1 (the rest)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> MeshConfig:
        unknown = set(cfg) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"config.mesh: unknown axes {sorted(unknown)}; expected {MESH_AXES}")
        return cls(**{k: int(v) for k, v in cfg.items()})

    def resolve(self, num_devices: int) -> tuple[int, int, int]:
        sizes = [self.data, self.fsdp, self.tensor]
        if sizes.count(-1) > 1:
            raise ValueError(f"config.mesh: at most one axis may be -1, got {sizes}")
        if any(s == 0 or s < -1 for s in sizes):
            raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {sizes}")
        known = math.prod(s for s in sizes if s != -1)
        if -1 in sizes:
            if num_devices % known:
                raise ValueError(
                    f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
                    f"{dict(zip(MESH_AXES, sizes, strict=True))}"
                )
            sizes[sizes.index(-1)] = num_devices // known
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"config.mesh: {dict(zip(MESH_AXES, sizes, strict=True))} needs "
                f"{math.prod(sizes)} devices, {num_devices} available"
            )
        return tuple(sizes)


def make_mesh(mesh_config: MeshConfig | Mapping | None = None, devices=None) -> Mesh:
    """Builds a ``("data", "fsdp", "tensor")`` mesh over ``devices`` (default: all devices)."""
    if mesh_config is None:
        mesh_config = MeshConfig()
    elif not isinstance(mesh_config, MeshConfig):
        mesh_config = MeshConfig.from_mapping(mesh_config)
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_config.resolve(len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):  # lets jax order devices by the physical topology
        return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types, devices=devices)
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=axis_types)


@dataclasses.dataclass(frozen=True)
class ShardingRules:
    """A logical-axis -> mesh-axes table. Rejects a mesh axis used twice in one spec."""

    rules: tuple[tuple[str, tuple[str, ...]], ...] = DEFAULT_RULES

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Sequence[str] | str | None]) -> ShardingRules:
        table = dict(DEFAULT_RULES)
        for name, axes in overrides.items():
            if axes is None:
                axes = ()
            elif isinstance(axes, str):
                axes = (axes,)
            bad = set(axes) - set(MESH_AXES)
            if bad:
                raise ValueError(f"sharding rule {name!r}: unknown mesh axes {sorted(bad)}")
            table[name] = tuple(axes)
        return cls(tuple(table.items()))

    def mesh_axes(self, logical: str | None) -> tuple[str, ...]:
        if logical is None:
            return ()
        for name, axes in self.rules:
            if name == logical:
                return axes
        raise KeyError(f"no sharding rule for logical axis {logical!r}")

    def spec(
        self, logical_axes: Sequence[str | None], shape: Sequence[int], mesh_shape: Mapping
    ) -> P:
        """PartitionSpec for an array of ``shape`` whose dims carry ``logical_axes``.

        A mesh axis that does not divide its dimension (or has size 1) is dropped for that dim.
        """
        if len(logical_axes) != len(shape):
            raise ValueError(f"logical axes {logical_axes} do not match shape {tuple(shape)}")
        used: set[str] = set()
        entries = []
        for logical, dim in zip(logical_axes, shape, strict=True):
            kept = []
            for axis in self.mesh_axes(logical):
                if axis in used:
                    raise ValueError(f"mesh axis {axis!r} used twice in {logical_axes}")
                size = mesh_shape.get(axis, 1)
                if size > 1 and dim % (math.prod(mesh_shape[a] for a in kept) * size) == 0:
                    kept.append(axis)
                    used.add(axis)
            entries.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
        return P(*entries)


def named_sharding(
    mesh: Mesh, logical_axes: Sequence[str | None], shape, rules: ShardingRules | None = None
) -> NamedSharding:
    rules = rules or ShardingRules()
    return NamedSharding(mesh, rules.spec(logical_axes, shape, dict(mesh.shape)))


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names under the ambient mesh; a no-op without one.

    Model code calls this on activations; a mesh is made ambient with ``jax.set_mesh(mesh)``.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = ShardingRules().spec(logical_axes, x.shape, dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, spec)


def tree_shardings(mesh: Mesh, logical_tree, shape_tree, rules: ShardingRules | None = None):
    """Maps a pytree of logical-axes tuples and a matching pytree of shapes to NamedShardings."""
    return jax.tree.map(
        lambda axes, shaped: named_sharding(mesh, axes, shaped.shape, rules),
        logical_tree,
        shape_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(a, str | None) for a in x),
    )


def describe_fallbacks(mesh: Mesh, logical_tree, shape_tree, rules=None, min_size=2**20):
    """Lists params of at least ``min_size`` elements that a rule wanted sharded but is not."""
    rules = rules or ShardingRules()
    notes = []
    flat_axes = jax.tree_util.tree_flatten_with_path(
        logical_tree, is_leaf=lambda x: isinstance(x, tuple)
    )[0]
    flat_shapes = jax.tree.leaves(shape_tree)
    for (path, axes), shaped in zip(flat_axes, flat_shapes, strict=True):
        wanted = {a for logical in axes for a in rules.mesh_axes(logical) if mesh.shape[a] > 1}
        spec = rules.spec(axes, shaped.shape, dict(mesh.shape))
        got = {a for e in spec if e for a in ((e,) if isinstance(e, str) else e)}
        if wanted - got and math.prod(shaped.shape) >= min_size:
            notes.append(
                f"{jax.tree_util.keystr(path)}{tuple(shaped.shape)}: not split on "
                f"{sorted(wanted - got)} (dimension not divisible)"
            )
    return notes
