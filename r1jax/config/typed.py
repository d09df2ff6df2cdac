"""ConfigDict <-> typed config: the generated defaults config files edit, and the one conversion
into frozen sections at the edge (``r1jax.config.schema`` holds every default).

    config = defaults("grpo")          # ConfigDict: every section of a GRPO stage, defaults in
    config.grpo.variant = "dapo"       # a config file states only what it changes
    stage = typed(config)              # Stage(kind="grpo", grpo=GRPOConfig(...), ...), frozen

Unknown keys are rejected with the nearest valid key; a GRPO ``variant`` fills the fields left
unset (None) from ``schema.VARIANTS`` (``GRPOConfig`` itself does); ``optim.total_steps`` 0
becomes ``train.steps``; a mesh ``preset`` sets the mesh axes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

import ml_collections
from ml_collections import config_dict

from r1jax.config import schema
from r1jax.config.model import MLAConfig, ModelConfig, MoEConfig


@dataclasses.dataclass(frozen=True)
class Stage:
    """One run or recipe stage, typed: ``kind`` and the sections ``schema.SECTIONS[kind]`` lists
    (others None); ``links`` holds the kind's top-level paths / stage names (``schema.LINKS``).
    ``lora`` is None unless ``config.lora.rank > 0``."""

    kind: str
    seed: int = schema.SEED
    model: ModelConfig | None = None
    mesh: schema.MeshConfig = schema.MeshConfig()
    optim: schema.OptimConfig | None = None
    train: schema.TrainConfig | None = None
    data: schema.DataConfig | None = None
    grpo: schema.GRPOConfig | None = None
    distill: schema.DistillConfig | None = None
    rewards: Mapping[str, Mapping[str, Any]] | None = None
    reward_pool: schema.RewardPoolConfig | None = None
    reward_model: schema.RewardModelConfig | None = None
    eval: schema.EvalConfig | None = None
    rejection: schema.RejectionConfig | None = None
    tokenizer: schema.TokenizerConfig | None = None
    sample: schema.SampleConfig | None = None
    convert: schema.ConvertConfig | None = None
    distributed: schema.DistributedConfig | None = None
    lora: schema.LoRAConfig | None = None
    links: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def link(self, name: str) -> str:
        return self.links.get(name, "")

    def to_dict(self) -> dict:
        """Plain data (saved next to checkpoints)."""
        out = {"kind": self.kind, "seed": self.seed, **dict(self.links)}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("kind", "seed", "links") or value is None:
                continue
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return _plain(out)


# ----------------------------------------------------------------------------- defaults


def _field_value(f: dataclasses.Field, owner: type):
    """A dataclass field's default as a ConfigDict value (typed placeholders for None)."""
    if f.default_factory is not dataclasses.MISSING:
        return ml_collections.ConfigDict(f.default_factory(), type_safe=False)
    value = f.default
    if value is None:
        kinds = [a for a in typing.get_args(_hints(owner)[f.name]) if a is not type(None)]
        base = typing.get_origin(kinds[0]) or kinds[0] if kinds else object
        return config_dict.placeholder(base) if base in (int, float, str, bool) else None
    return value


def _hints(cls: type) -> dict:
    return typing.get_type_hints(cls)


def section_dict(cls: type) -> ml_collections.ConfigDict:
    """The ConfigDict of one section's defaults."""
    return ml_collections.ConfigDict(
        {f.name: _field_value(f, cls) for f in dataclasses.fields(cls)}
    )


def model_dict(**overrides) -> ml_collections.ConfigDict:
    """``config.model``: ``ModelConfig``'s defaults with ``overrides``."""
    fields = {f.name: _field_value(f, ModelConfig) for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - set(fields)
    if unknown:
        raise ValueError(schema.unknown_key("config.model", sorted(unknown)[0], fields))
    for name, cls in (("moe", MoEConfig), ("mla", MLAConfig)):  # every field overridable
        if overrides.get(name) is not None:
            overrides[name] = dataclasses.asdict(cls()) | dict(overrides[name])
    return ml_collections.ConfigDict(fields | overrides)


def defaults(kind: str, **model_overrides) -> ml_collections.ConfigDict:
    """The ConfigDict of a ``kind`` stage with every default (what config files edit)."""
    if kind not in schema.KINDS:
        raise ValueError(f"kind={kind!r}; one of {schema.KINDS}")
    config = ml_collections.ConfigDict()
    config.kind = kind
    config.seed = schema.SEED
    for name in schema.SECTIONS[kind]:
        if name == "model":
            config.model = model_dict(**model_overrides)
        elif name == "rewards":
            config.rewards = ml_collections.ConfigDict(schema.DEFAULT_REWARDS)
        else:
            config[name] = section_dict(schema.SECTION_TYPES[name])
    for name, value in schema.LINKS[kind].items():
        config[name] = value
    return config


# ----------------------------------------------------------------------------- conversion


def _plain(value):
    """ConfigDicts, FieldReferences and lists -> dicts, values and tuples."""
    if isinstance(value, config_dict.FieldReference):
        value = value.get()
    if isinstance(value, ml_collections.ConfigDict | Mapping):
        return {k: _plain(v) for k, v in dict(value).items()}
    if isinstance(value, list | tuple):
        return tuple(_plain(v) for v in value)
    return value


def _coerce(value, hint, where: str):
    """``value`` in the field's declared type (sequences become tuples, ints may be floats)."""
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    origin = typing.get_origin(hint) or hint
    if origin is tuple:
        return (value,) if isinstance(value, str) else tuple(value)
    if origin is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if origin in (int, float, str, bool, dict) and not isinstance(value, origin):
        raise ValueError(f"{where}={value!r}: expected {origin.__name__}")
    return value


def section(cls: type, values: Mapping, where: str):
    """One frozen section from a mapping: unknown keys rejected, the rest defaulted."""
    values = _plain(values or {})
    hints = _hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in known:
            raise ValueError(schema.unknown_key(where, key, known))
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def model_config(values: Mapping, where: str = "config.model") -> ModelConfig:
    return ModelConfig.from_mapping(_plain(values), where)


def resolve_mesh(mesh: schema.MeshConfig) -> schema.MeshConfig:
    """A ``preset`` sets the axes (which must then be left at their defaults)."""
    if not mesh.preset:
        return mesh
    from r1jax.config import mesh_presets

    preset = mesh_presets.get(mesh.preset)
    axes = (mesh.data, mesh.fsdp, mesh.tensor)
    default = schema.MeshConfig()
    if axes not in ((default.data, default.fsdp, default.tensor), preset.axes):
        raise ValueError(
            f"config.mesh.preset={mesh.preset!r} sets data/fsdp/tensor={preset.axes}; "
            f"config.mesh also sets {axes}: set one or the other"
        )
    return dataclasses.replace(mesh, data=preset.data, fsdp=preset.fsdp, tensor=preset.tensor)


def typed(config: Mapping, where: str = "config") -> Stage:
    """A stage's ConfigDict (or dict) -> ``Stage`` (see the module docstring)."""
    values = dict(_plain(config))
    kind = values.pop("kind", None)
    if kind not in schema.KINDS:
        raise ValueError(f"{where}.kind={kind!r}; one of {schema.KINDS}")
    allowed = {"seed", *schema.SECTIONS[kind], *schema.LINKS[kind]}
    for key in values:
        if key not in allowed:
            raise ValueError(schema.unknown_key(where, key, allowed))
    out: dict[str, Any] = {"kind": kind, "seed": int(values.get("seed", schema.SEED))}
    for name in schema.SECTIONS[kind]:
        given = values.get(name) or {}
        if name == "model":
            out["model"] = model_config(given, f"{where}.model")
        elif name == "rewards":
            out["rewards"] = dict(given) if name in values else dict(schema.DEFAULT_REWARDS)
        else:
            out[name] = section(schema.SECTION_TYPES[name], given, f"{where}.{name}")
    out["links"] = {k: str(values.get(k, v) or "") for k, v in schema.LINKS[kind].items()}
    stage = Stage(**out)
    return _resolved(stage)


def _resolved(stage: Stage) -> Stage:
    changes: dict[str, Any] = {"mesh": resolve_mesh(stage.mesh)}
    if stage.lora is not None and stage.lora.enabled:
        from r1jax.config.lora import check_lora_training

        if stage.kind not in ("sft", "grpo"):
            raise ValueError(
                f"config.lora.rank={stage.lora.rank}: adapters train in sft and grpo stages, "
                f"not {stage.kind!r} (its frozen params are the teacher)"
            )
        check_lora_training(stage.lora, stage.grpo)
    elif stage.lora is not None:  # rank 0: no adapters, the section is dropped
        changes["lora"] = None
    if stage.grpo is not None and stage.grpo.routing_replay and stage.model.moe is None:
        raise ValueError("config.grpo.routing_replay: config.model has no mixture of experts")
    if stage.kind == "reward_model" and not stage.model.score_head:
        changes["model"] = stage.model.replace(score_head=True)  # the scalar head, no LM head
    if stage.optim is not None and stage.optim.total_steps == 0:
        changes["optim"] = dataclasses.replace(stage.optim, total_steps=stage.train.steps)
    return dataclasses.replace(stage, **changes)
