"""Open any model checkpoint r1jax knows as ``(ModelConfig, params)``.

Formats, recognised by directory content:
  - ``hf``: a Hugging Face directory (``config.json`` + ``*.safetensors``), via ``model.hf.load``;
  - ``r1jax``: a training run's workdir (``<workdir>/checkpoints/<step>/``) or its
    ``checkpoints`` directory (orbax; the run's config is stored next to the arrays).

Used by ``r1jax sample``, ``r1jax eval``, ``r1jax rejection-sample``, ``r1jax convert`` and the
recipes (a stage initialised from the previous stage's output).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import jax

from r1jax.model import ModelConfig, abstract_params, hf, param_shardings

Loader = Callable[..., tuple[ModelConfig, dict]]


def _orbax_dir(path: Path) -> Path | None:
    for candidate in (path / "checkpoints", path):
        if candidate.is_dir() and any(p.name.isdigit() for p in candidate.iterdir()):
            return candidate
    return None


def load_r1jax(path, mesh=None, step: int | None = None, **overrides):
    """Params of the latest (or ``step``) checkpoint of an r1jax run, placed on ``mesh``."""
    import orbax.checkpoint as ocp

    directory = _orbax_dir(Path(path))
    if directory is None:
        raise FileNotFoundError(f"{path}: no r1jax checkpoints (expected <dir>/checkpoints/<step>)")
    with ocp.CheckpointManager(directory.resolve()) as manager:
        step = manager.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{directory}: no complete checkpoint")
        restore = lambda **items: manager.restore(step, args=ocp.args.Composite(**items))
        config = restore(config=ocp.args.JsonRestore())["config"] or {}
        if "model" not in config:
            raise ValueError(f"{directory}/{step}: the stored config has no 'model' section")
        model_config = ModelConfig.from_mapping({**config["model"], **overrides})
        if mesh is not None:
            shardings = param_shardings(model_config, mesh)
        else:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            shardings = jax.tree.map(lambda _: device, abstract_params(model_config))
        target = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_params(model_config),
            shardings,
        )
        return model_config, restore(params=ocp.args.StandardRestore(target))["params"]


LOADERS: dict[str, tuple[Callable[[Path], bool], Loader]] = {
    "r1jax": (lambda p: _orbax_dir(p) is not None, load_r1jax),
    "hf": (lambda p: (p / "config.json").exists(), hf.load),
}


def load_model(path, mesh=None, fmt: str = "auto", **overrides) -> tuple[ModelConfig, dict]:
    """``(ModelConfig, params)`` from a checkpoint directory, by format or auto-detected."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"checkpoint {p}: not a directory")
    if fmt != "auto":
        if fmt not in LOADERS:
            raise ValueError(f"checkpoint format {fmt!r}: one of {['auto', *LOADERS]}")
        return LOADERS[fmt][1](p, mesh=mesh, **overrides)
    for recognises, load in LOADERS.values():
        if recognises(p):
            return load(p, mesh=mesh, **overrides)
    raise ValueError(
        f"checkpoint {p}: not recognised (an r1jax run directory with checkpoints/<step>, or a "
        f"Hugging Face directory with config.json)"
    )


def find_tokenizer(path) -> Path | None:
    """A tokenizer stored with a checkpoint: ``tokenizer.json``/``tokenizer.model`` in the
    directory (HF) or the run's ``tokenizer.model`` (r1jax runs train one into the workdir)."""
    p = Path(path)
    for candidate in (p / "tokenizer.json", p / "tokenizer.model", p.parent / "tokenizer.model"):
        if candidate.exists():
            return candidate
    return None


def save_r1jax(path, model_config: ModelConfig, params: dict, *, step: int = 0) -> Path:
    """Writes ``params`` as an r1jax checkpoint (``<path>/checkpoints/<step>/``) that
    ``load_model`` and a training run's ``init_from`` can read (no optimizer state)."""
    import dataclasses

    import orbax.checkpoint as ocp

    directory = Path(path).resolve() / "checkpoints"
    config = {"model": dataclasses.asdict(model_config)}
    with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True)) as m:
        m.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), config=ocp.args.JsonSave(config)
            ),
            force=True,
        )
        m.wait_until_finished()
    return directory
