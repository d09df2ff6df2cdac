"""LoRA / QLoRA training: only adapters are trained, over a frozen (optionally quantized) base.

The train state's ``params`` are the adapters and its ``frozen`` is the base
(``r1jax.train.state``). ``adapted(objective, lora)`` is the objective seen from the adapters:
the model it runs is the base with the adapters attached (``r1jax.model.lora.attach``, merged
one layer at a time in the forward), and the ``frozen`` params it is given, GRPO's KL
reference, are the base itself: the policy with its adapters off, with no second copy of the
weights. The step's gradient, optimizer state and checkpoints are the adapters' alone.

    base = make_base(params, config, lora, mesh)      # compute dtype or int8/int4/NF4, sharded
    state = create_train_state(config, opt, rng, mesh, frozen=base, lora=lora)
    step = make_train_step(config, objectives.grpo(config, grpo), opt, mesh, lora=lora)
"""

from __future__ import annotations

from pathlib import Path

import jax
from jax.tree_util import DictKey

from r1jax.config.lora import LoRAConfig
from r1jax.model import ModelConfig
from r1jax.model.lora import attach
from r1jax.model.quant import base_shardings, convert_leaf, frozen_base
from r1jax.train.objectives import Objective
from r1jax.train.setup import check_shapes


def adapted(objective: Objective, lora: LoRAConfig) -> Objective:
    """``objective`` over adapters: ``loss(adapters, base, batch, normalizer)`` runs the inner
    loss on ``attach(base, adapters)`` with ``base`` as its frozen params (the reference)."""
    inner = objective.loss

    def loss(adapters, base, batch, normalizer):
        return inner(attach(base, adapters, lora), base, batch, normalizer)

    return objective._replace(loss=loss)


def make_base(params: dict, config: ModelConfig, lora: LoRAConfig, mesh) -> dict:
    """The frozen base of ``params`` (full model params, any placement) on ``mesh``: every leaf
    in the compute dtype, the projections quantized per ``lora.base_quant``, each shard made
    in place (``jit`` with the base's out shardings). ``params`` is left untouched."""
    fn = jax.jit(
        lambda p: frozen_base(p, config, lora), out_shardings=base_shardings(config, lora, mesh)
    )
    with jax.set_mesh(mesh):
        return fn(params)


def _leaf_converter(config: ModelConfig, lora: LoRAConfig, mesh):
    """``fn(keys, array, config) -> base leaf``: one jitted conversion per leaf, each made in
    its base sharding (the full-precision input is dropped by the caller)."""
    shardings = base_shardings(config, lora, mesh)

    def convert(keys, array, loaded_config=None):  # hf.load's transform signature
        target = shardings
        for k in keys:
            target = target[k]
        fn = jax.jit(lambda w: convert_leaf(keys, w, config, lora), out_shardings=target)
        with jax.set_mesh(mesh):
            return fn(array)

    return convert


def load_base(path: str, config: ModelConfig, lora: LoRAConfig, mesh, seed: int = 0) -> dict:
    """A LoRA run's frozen base on ``mesh``: the model of ``path`` (``init_from``: a Hugging
    Face directory, read and converted one leaf at a time so a quantized base never holds
    the full-precision model, or an r1jax run), or without a path the random init of
    ``seed`` (``init_params(config, key(seed))``: what ``r1jax.checkpoint`` re-creates when it
    merges a run's adapters). Its shapes must be ``config``'s."""
    from r1jax.checkpoint import load_params
    from r1jax.model import hf, init_params

    if not path:
        return make_base(init_params(config, jax.random.key(seed), mesh), config, lora, mesh)
    convert = _leaf_converter(config, lora, mesh)
    if (Path(path) / "config.json").exists():
        loaded, base = hf.load(path, mesh, transform=convert, param_dtype=config.compute_dtype)
    else:
        loaded, params = load_params(path, mesh=mesh)
        base = jax.tree_util.tree_map_with_path(
            lambda p, w: convert(tuple(k.key for k in p if isinstance(k, DictKey)), w), params
        )
    check_shapes(loaded, config, f"config.init_from={path}")
    return base


def stage_base(stage, setup) -> dict | None:
    """A training stage's frozen base when it trains adapters (``setup.lora``; from its
    ``init_from``, else its seed's random init), attached to the state and never
    checkpointed; None otherwise."""
    if setup.lora is None:
        return None
    return load_base(stage.link("init_from"), stage.model, setup.lora, setup.mesh, stage.seed)
