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

import contextlib
import dataclasses
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.config.schema import MESH_AXES, MeshConfig

# Logical axis -> mesh axes. Params: "embed" is FSDP-sharded (over the expert axis too: with
# experts, it is one more data-parallel axis for every other weight), the wide dims are
# tensor-sharded; experts are split over "expert".
# Activations: the batch is split over every data-parallel axis; features over "tensor".
DEFAULT_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("vocab", ("tensor",)),
    ("embed", ("fsdp", "expert")),
    ("expert_embed", ("fsdp",)),
    ("heads", ("tensor",)),
    ("kv_heads", ("tensor",)),
    ("mlp", ("tensor",)),
    ("experts", ("expert",)),
    ("expert_mlp", ("tensor",)),
    # MLA: the latents' up-projections (q_b, kv_b) are FSDP-split on their latent input dim,
    # the down-projections' latent output ("latent") stays whole (their "embed" is split).
    ("q_lora", ("fsdp", "expert")),
    ("kv_lora", ("fsdp", "expert")),
    ("latent", ()),
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


def mesh_shape(mesh_config: MeshConfig, num_devices: int) -> tuple[int, ...]:
    """The sizes of ``MESH_AXES`` (data, fsdp, expert, tensor) of ``mesh_config`` (one axis may
    be -1: the rest) on ``num_devices`` devices."""
    sizes = [getattr(mesh_config, axis) for axis in MESH_AXES]
    named = lambda s: dict(zip(MESH_AXES, s, strict=True))
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {named(sizes)}")
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {named(sizes)}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"config.mesh: {num_devices} devices are not divisible by the fixed axes "
                f"{named(sizes)}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh: {named(sizes)} needs {math.prod(sizes)} devices, {num_devices} available"
        )
    return tuple(sizes)


def make_mesh(mesh_config: MeshConfig | Mapping | None = None, devices=None) -> Mesh:
    """Builds a ``("data", "fsdp", "expert", "tensor")`` mesh over ``devices`` (default: all
    devices) and makes ``mesh_config.rules`` the ambient sharding rules (``current_rules``).

    ``mesh_config``: a ``MeshConfig`` or a mapping of its fields, e.g. ``{"data": -1}``."""
    from r1jax.config.typed import resolve_mesh, section

    if isinstance(mesh_config, Mapping):
        mesh_config = section(MeshConfig, mesh_config, "mesh")
    mesh_config = resolve_mesh(mesh_config or MeshConfig())
    set_rules(ShardingRules.from_mapping(mesh_config.rules))
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_config, len(devices))
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


_RULES = [ShardingRules()]  # the ambient rules: set with the mesh (``make_mesh``)


def current_rules() -> ShardingRules:
    """The sharding rules every placement and ``constrain`` uses (the mesh config's). Read when
    a function is traced: build the mesh (``make_mesh``) before jitting the model."""
    return _RULES[-1]


def set_rules(rules: ShardingRules) -> None:
    _RULES[-1] = rules


@contextlib.contextmanager
def use_rules(rules: ShardingRules) -> Iterator[ShardingRules]:
    """Temporarily ambient ``rules`` (tests, a second model on other rules)."""
    _RULES.append(rules)
    try:
        yield rules
    finally:
        _RULES.pop()


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None], shape) -> NamedSharding:
    spec = current_rules().spec(logical_axes, shape, dict(mesh.shape))
    return NamedSharding(mesh, spec)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """``with_sharding_constraint`` by logical names under the ambient mesh; a no-op without one.

    Model code calls this on activations; a mesh is made ambient with ``jax.set_mesh(mesh)``.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = current_rules().spec(logical_axes, x.shape, dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, spec)


def tree_shardings(mesh: Mesh, logical_tree, shape_tree):
    """Maps a pytree of logical-axes tuples and a matching pytree of shapes to NamedShardings."""
    return jax.tree.map(
        lambda axes, shaped: named_sharding(mesh, axes, shaped.shape),
        logical_tree,
        shape_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(isinstance(a, str | None) for a in x),
    )


def describe_fallbacks(mesh: Mesh, logical_tree, shape_tree, min_size=2**20):
    """Lists params of at least ``min_size`` elements that a rule wanted sharded but is not."""
    rules = current_rules()
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


def replicated_leaves(tree, min_size: int) -> list[str]:
    """Leaves of ``tree`` (arrays or ShapeDtypeStructs with a sharding) of at least ``min_size``
    elements that every device holds whole: ``"path shape"`` strings."""
    found = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        sharding = getattr(leaf, "sharding", None)
        size = math.prod(getattr(leaf, "shape", ()))
        if sharding is None or size < min_size or len(sharding.device_set) == 1:
            continue
        if sharding.is_fully_replicated:
            found.append(f"{jax.tree_util.keystr(path)}{tuple(leaf.shape)}")
    return found


def report_replication(tree, mesh_config: MeshConfig, what: str = "train state") -> list[str]:
    """Warns about (``mesh.strict``: raises on) large leaves left fully replicated on the mesh,
    e.g. a parameter whose dimensions no rule's mesh axis divides."""
    found = replicated_leaves(tree, mesh_config.replicated_warn_size)
    if found:
        message = (
            f"{what}: {len(found)} leaves of >= {mesh_config.replicated_warn_size} elements are "
            f"replicated on every device (no mesh axis splits them): {', '.join(found[:8])}"
            f"{' ...' if len(found) > 8 else ''}; change config.mesh.rules or the mesh shape"
        )
        if mesh_config.strict:
            raise ValueError(message + " (config.mesh.strict=True)")
        warnings.warn(message, stacklevel=2)
    return found
