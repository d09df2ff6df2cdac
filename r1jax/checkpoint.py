"""Checkpoint I/O: the on-disk layout, the training ``Checkpointer``, and ``load_params``.

An r1jax checkpoint is an orbax ``CheckpointManager`` directory, ``<workdir>/checkpoints/``, one
subdirectory per step; ``<step>/`` holds named items::

    params/     PARAMS     the model params            (sharded arrays, OCDBT/zarr)
    opt_state/  OPT_STATE  the optax state
    meta/       META       {"step", "rng", "skipped"}  (small arrays)
    frozen/     FROZEN     the frozen params, when the state has them (GRPO reference)
    data/       DATA       JSON: {"global": iterator state} (one state: every process walks the
                           same global order, so it restores onto any process count)
    config/     CONFIG     JSON: the run's config (its "model" section describes ``params``)

Only ``params`` and ``config`` are needed to read a model (``save_params`` writes just those).
A LoRA run (``config.lora.rank > 0``) saves its adapters as ``params`` and never its frozen
base; ``load_params`` merges them into the base the config names (``init_from``, or the random
init of its ``seed``), and ``load_adapters`` reads them alone (the PEFT export).

Atomicity: orbax writes each step into a temporary directory and renames it when complete, so a
crash (even SIGKILL) mid-save leaves only a temporary directory that ``latest_step`` ignores and
the next manager cleans up. Saves are asynchronous (the arrays are copied to host first, the train
loop continues); ``wait()`` blocks until the last one is on disk.

Restore onto any mesh: ``Checkpointer.restore`` takes ``abstract_train_state(...)`` for the
target mesh, ``load_params`` a mesh; each array is read directly into its target sharding.

``load_params`` is the one way to read a model as ``(ModelConfig, params)``: from an r1jax run
directory, its ``checkpoints`` directory, or a Hugging Face directory (``config.json`` +
``*.safetensors``, read by ``r1jax.model.hf.load``). Used by distillation teachers, ``init_from``,
``r1jax sample``/``eval``/``rejection-sample``/``convert`` and the recipes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import orbax.checkpoint as ocp

from r1jax.model import ModelConfig, abstract_params, hf, param_shardings

if TYPE_CHECKING:
    from r1jax.train.state import TrainState

CHECKPOINTS = "checkpoints"  # the CheckpointManager directory inside a run's workdir
PARAMS = "params"
OPT_STATE = "opt_state"
META = "meta"
FROZEN = "frozen"
DATA = "data"
CONFIG = "config"

FORMATS = ("auto", "r1jax", "hf")


def with_shardings(abstract_tree, shardings):
    """``abstract_tree``'s leaves (anything with ``shape``/``dtype``) as ``jax.ShapeDtypeStruct``
    placed on the matching leaf of ``shardings`` (a restore or ``jit`` target)."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract_tree, shardings
    )


# ----------------------------------------------------------------------------- train state


class Checkpointer:
    """Save every ``save_every`` steps, keep the last ``keep``; async by default."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        save_every: int = 1000,
        keep: int | None = 3,
        async_save: bool = True,
    ):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_every,
            max_to_keep=keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(
        self,
        state: TrainState,
        *,
        data_state: Any = None,
        config: dict | None = None,
        force: bool = False,
        include_frozen: bool = True,
    ) -> bool:
        """Saves ``state`` at ``int(state.step)`` if the interval says so (or ``force``).

        ``data_state``: the JSON-serialisable iterator state of the global data order (the same
        on every process; checked, since a difference would make the resume depend on which
        process's state is read). ``config``: a JSON-serialisable dict (e.g. ``config.to_dict()``).
        ``include_frozen=False`` skips ``state.frozen`` (a teacher loaded from elsewhere).
        Returns whether a save was started.
        """
        step = int(jax.device_get(state.step))
        if step in self._manager.all_steps():
            return False  # already saved (e.g. the interval save before a forced final one)
        if not force and not self._manager.should_save(step):
            return False
        items = {
            PARAMS: ocp.args.StandardSave(state.params),
            OPT_STATE: ocp.args.StandardSave(state.opt_state),
            META: ocp.args.StandardSave(_meta(state)),
            DATA: ocp.args.JsonSave({"global": agreed_data_state(data_state)}),
            CONFIG: ocp.args.JsonSave(json.loads(json.dumps(config or {}, default=str))),
        }
        if state.frozen is not None and include_frozen:
            items[FROZEN] = ocp.args.StandardSave(state.frozen)
        return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(
        self, abstract_state: TrainState, step: int | None = None
    ) -> tuple[TrainState, Any, dict]:
        """(state, the global data state or None, config dict) at ``step`` (default latest).

        ``abstract_state`` (from ``abstract_train_state``) gives the structure, dtypes and the
        target shardings; its ``frozen`` decides whether frozen params are restored.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        items = {
            PARAMS: ocp.args.StandardRestore(abstract_state.params),
            OPT_STATE: ocp.args.StandardRestore(abstract_state.opt_state),
            META: ocp.args.StandardRestore(_meta(abstract_state)),
            DATA: ocp.args.JsonRestore(),
            CONFIG: ocp.args.JsonRestore(),
        }
        if abstract_state.frozen is not None:
            items[FROZEN] = ocp.args.StandardRestore(abstract_state.frozen)
        out = self._manager.restore(step, args=ocp.args.Composite(**items))
        meta = out[META]
        state = abstract_state.replace(
            step=meta["step"],
            params=out[PARAMS],
            opt_state=out[OPT_STATE],
            rng=meta["rng"],
            skipped=meta["skipped"],
            frozen=out[FROZEN] if abstract_state.frozen is not None else None,
        )
        return state, _global_data_state(out[DATA] or {}, step), out[CONFIG] or {}

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def _meta(state: TrainState) -> dict:
    return {"step": state.step, "rng": state.rng, "skipped": state.skipped}


def agreed_data_state(local_state: Any) -> Any:
    """``local_state``, after checking that every process holds the same one (a collective
    when multi-process)."""
    if jax.process_count() == 1:
        return local_state
    from r1jax import multihost

    states = multihost.gather_objects(local_state)
    if any(s != states[0] for s in states):
        raise RuntimeError(
            "data iterator states differ between processes: every process must walk the same "
            "global order (build the pipelines with the global batch size and a data shard)"
        )
    return local_state


def _global_data_state(data: dict, step: int) -> Any:
    """The saved global iterator state; per-process states of older checkpoints only when one
    process wrote them (several processes' strided shards do not map onto the global order)."""
    if "global" in data:
        return data["global"]
    if set(data) == {"process_0"}:
        return data["process_0"]
    if not data:
        return None
    raise ValueError(
        f"checkpoint step {step}: data state written per process by an older r1jax "
        f"({sorted(data)}); the data position cannot be mapped onto the global order. Resume "
        "with a fresh data position by removing the step's data/ item, or restart the run"
    )


# ----------------------------------------------------------------------------- params


def _orbax_dir(path: Path) -> Path | None:
    for candidate in (path / CHECKPOINTS, path):
        if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir()):
            return candidate
    return None


def _param_shardings(model_config: ModelConfig, mesh) -> dict:
    """The rules' shardings on ``mesh``; without one, every leaf on the first local device."""
    if mesh is not None:
        return param_shardings(model_config, mesh)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda _: device, abstract_params(model_config))


def _load_r1jax(path: Path, model_config, mesh, step, overrides) -> tuple[ModelConfig, dict]:
    with _open_run(path, step) as run:
        stored = run.config
    if model_config is None:
        if "model" not in stored:
            raise ValueError(f"{run.where}: the stored config has no 'model' section")
        model_config = ModelConfig.from_mapping({**stored["model"], **overrides})
    elif overrides:
        model_config = ModelConfig.from_mapping({**model_config.to_dict(), **overrides})
    lora = run_lora(stored)
    if lora is not None:  # a LoRA run: its adapters merged into the base it trained on
        from r1jax.model.lora import merge

        adapters = load_adapters(path, model_config, lora, mesh, step)
        return model_config, merge(_lora_base(stored, model_config, mesh), adapters, lora)
    target = with_shardings(abstract_params(model_config), _param_shardings(model_config, mesh))
    with _open_run(path, step) as run:
        return model_config, run.restore(**{PARAMS: ocp.args.StandardRestore(target)})[PARAMS]


@dataclasses.dataclass
class _Run:
    where: str
    config: dict
    restore: Any


@contextlib.contextmanager
def _open_run(path: Path, step: int | None) -> Iterator[_Run]:
    """An r1jax run's checkpoint at ``step`` (default: the latest): its stored config and a
    ``restore(**items)`` of its items."""
    directory = _orbax_dir(path)
    if directory is None:
        raise FileNotFoundError(
            f"{path}: no r1jax checkpoints (expected <dir>/{CHECKPOINTS}/<step>)"
        )
    with ocp.CheckpointManager(directory.resolve()) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no complete checkpoint")
        restore = lambda **items: manager.restore(step, args=ocp.args.Composite(**items))
        config = restore(**{CONFIG: ocp.args.JsonRestore()})[CONFIG] or {}
        yield _Run(f"{directory}/{step}", config, restore)


def run_config(path: str | os.PathLike, step: int | None = None) -> dict:
    """The config an r1jax run stored with its checkpoint at ``step`` (default: the latest)."""
    with _open_run(Path(path), step) as run:
        return run.config


def run_lora(stored: dict):
    """The ``LoRAConfig`` of a run's stored config when it trained adapters, else None."""
    from r1jax.config import section
    from r1jax.config.lora import LoRAConfig

    values = stored.get("lora") or {}
    lora = section(LoRAConfig, values, "lora") if values else None
    return lora if lora is not None and lora.enabled else None


def load_adapters(path, model_config: ModelConfig, lora, mesh=None, step: int | None = None):
    """The adapters a LoRA run saved (its checkpoints' ``params``), placed like the model's."""
    from r1jax.model.lora import abstract_adapters, adapter_shardings

    abstract = abstract_adapters(model_config, lora)
    if mesh is not None:
        shardings = adapter_shardings(model_config, lora, mesh)
    else:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    target = with_shardings(abstract, shardings)
    with _open_run(Path(path), step) as run:
        return run.restore(**{PARAMS: ocp.args.StandardRestore(target)})[PARAMS]


def _lora_base(stored: dict, model_config: ModelConfig, mesh) -> dict:
    """The full-precision base a LoRA run trained on (a quantized base's original): its
    ``init_from``, or the random init of its ``seed`` (``r1jax.train.adapters.load_base``)."""
    if stored.get("init_from"):
        return load_params(stored["init_from"], model_config, mesh=mesh)[1]
    from r1jax.model import init_params

    params = init_params(model_config, jax.random.key(int(stored.get("seed", 0))), mesh)
    return params if mesh is not None else jax.device_put(params, jax.local_devices()[0])


def _format(path: Path, format: str) -> str:
    if format not in FORMATS:
        raise ValueError(f"checkpoint format {format!r}: one of {list(FORMATS)}")
    if format != "auto":
        return format
    if _orbax_dir(path) is not None:
        return "r1jax"
    if (path / "config.json").exists():
        return "hf"
    raise ValueError(
        f"checkpoint {path}: not recognised (an r1jax run directory with {CHECKPOINTS}/<step>, "
        f"or a Hugging Face directory with config.json)"
    )


def load_params(
    path: str | os.PathLike,
    model_config: ModelConfig | None = None,
    mesh=None,
    step: int | None = None,
    format: str = "auto",
    **overrides,
) -> tuple[ModelConfig, dict]:
    """``(ModelConfig, params)`` of a checkpoint directory, params placed on ``mesh``.

    Args:
      path: an r1jax run directory (``<path>/checkpoints/<step>/``), its ``checkpoints``
        directory, or a Hugging Face directory; ``format`` ("auto", "r1jax", "hf") says which,
        or it is recognised by content.
      model_config: r1jax only: read the params as this model (e.g. a distillation teacher's
        configured model) instead of the stored config's "model" section. A Hugging Face
        directory always reads its own ``config.json``.
      mesh: params sharded by the model's rules on it; None: all on the first local device.
      step: r1jax only: the checkpoint step (default: the latest complete one).
      **overrides: ``ModelConfig`` fields to override (e.g. ``param_dtype="bfloat16"``).

    Returns the model config and the param tree (leaves as in ``abstract_params``, e.g.
    ``layers/q`` [L, D, N, H] in the config's ``param_dtype``).
    """
    if model_config is not None and not isinstance(model_config, ModelConfig):
        raise TypeError(f"load_params: model_config must be a ModelConfig, got {model_config!r}")
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint {p}: not a directory")
    if _format(p, format) == "hf":
        return hf.load(p, mesh=mesh, **overrides)
    return _load_r1jax(p, model_config, mesh, step, overrides)


def save_params(path, model_config: ModelConfig, params: dict, *, step: int = 0) -> Path:
    """Writes ``params`` as an r1jax checkpoint (``<path>/checkpoints/<step>/``: the ``params``
    and ``config`` items, no optimizer state) that ``load_params`` and ``init_from`` read.
    Returns the ``checkpoints`` directory."""
    directory = Path(path).resolve() / CHECKPOINTS
    config = {"model": dataclasses.asdict(model_config)}
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True)) as m:
        m.save(
            step,
            args=ocp.args.Composite(
                **{PARAMS: ocp.args.StandardSave(params), CONFIG: ocp.args.JsonSave(config)}
            ),
            force=True,
        )
        m.wait_until_finished()
    return directory


def find_tokenizer(path) -> Path | None:
    """A tokenizer stored with a checkpoint: ``tokenizer.json``/``tokenizer.model`` in the
    directory (HF, or an r1jax run: they train one into the workdir, and a converted model
    keeps its HF one there), or in its parent (``path`` a run's ``checkpoints`` directory)."""
    p = Path(path)
    for directory in (p, p.parent):
        for name in ("tokenizer.json", "tokenizer.model"):
            if (directory / name).exists():
                return directory / name
    return None
