"""The train state: fp32 master params, optimizer state, counters, PRNG key, frozen params.

``TrainState`` is a registered pytree dataclass, so it is passed whole through ``jax.jit`` (and
donated there). Shardings derive from the model's logical axes: params by the mesh rules, the
optimizer's per-param moments exactly like the params they track, scalars replicated. The state
is created directly in its shards by ``jit(out_shardings=...)`` over ``jax.eval_shape``'s
abstract tree; it is never materialised whole on the host or one device.

``frozen`` holds params the objective reads but never updates: the GRPO reference policy (absent
when beta = 0; refreshed from the policy by ``refresh_frozen``) or a distillation teacher (its
``ModelConfig`` may differ from the student's, so its shardings come from its own config).

With LoRA (``lora``, static): ``params`` are the adapters (all the optimizer sees, all a
checkpoint holds) and ``frozen`` is the base (``r1jax.model.quant.frozen_base``: compute dtype,
or quantized), which is also the GRPO reference; ``model_params()`` is what the model runs.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.checkpoint import with_shardings
from r1jax.config.lora import LoRAConfig
from r1jax.model import ModelConfig, abstract_params, init_params, param_shardings
from r1jax.model import lora as lora_lib
from r1jax.model.quant import base_shardings
from r1jax.sharding import current_rules


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a train step reads and writes.

    Attributes:
      step: int32 [] number of steps taken (skipped non-finite updates included).
      params: the model param tree, in ``model_config.param_dtype`` (fp32 master weights).
      opt_state: the optax state; per-param moments have the params' shapes and shardings.
      rng: uint32 raw key data (``jax.random.key_data``); ``TrainState.key()`` wraps it.
      skipped: int32 [] number of updates dropped because the loss or gradient was non-finite.
      frozen: optional frozen param tree (reference policy or teacher; LoRA's base), or None.
      lora: static; the ``LoRAConfig`` when ``params`` are adapters over ``frozen``, else None.
    """

    step: jax.Array
    params: dict
    opt_state: optax.OptState
    rng: jax.Array
    skipped: jax.Array
    frozen: dict | None = None
    lora: LoRAConfig | None = dataclasses.field(default=None, metadata=dict(static=True))

    def key(self) -> jax.Array:
        """The typed PRNG key of this state."""
        return jax.random.wrap_key_data(self.rng)

    def model_params(self) -> dict:
        """The params the model runs: ``params``, or with LoRA the base with the adapters
        attached (merged per layer by the forward; nothing copied)."""
        if self.lora is None:
            return self.params
        return lora_lib.attach(self.frozen, self.params, self.lora)

    def replace(self, **changes) -> TrainState:
        return dataclasses.replace(self, **changes)


def _replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def train_state_shardings(
    model_config: ModelConfig,
    optimizer: optax.GradientTransformation,
    mesh,
    *,
    frozen_config: ModelConfig | None = None,
    lora: LoRAConfig | None = None,
) -> TrainState:
    """A ``TrainState`` of ``NamedSharding`` leaves for ``mesh``.

    ``frozen_config``: the ``ModelConfig`` of the frozen params (the policy's own config for a
    GRPO reference, the teacher's for distillation), or None when there are none.
    ``lora``: params are adapters (sharded like their weights), frozen is the base.
    """
    p_shard = _trained_shardings(model_config, mesh, lora)
    abstract_opt = jax.eval_shape(optimizer.init, _trained_abstract(model_config, lora))
    rep = _replicated(mesh)
    opt_shard = optax.tree_map_params(
        optimizer, lambda _, s: s, abstract_opt, p_shard, transform_non_params=lambda _: rep
    )
    if lora is not None:
        frozen = base_shardings(model_config, lora, mesh)
    else:
        frozen = None if frozen_config is None else param_shardings(frozen_config, mesh)
    return TrainState(
        step=rep,
        params=p_shard,
        opt_state=opt_shard,
        rng=rep,
        skipped=rep,
        frozen=frozen,
        lora=lora,
    )


def _trained_abstract(model_config: ModelConfig, lora: LoRAConfig | None) -> dict:
    if lora is None:
        return abstract_params(model_config)
    return lora_lib.abstract_adapters(model_config, lora)


def _trained_shardings(model_config: ModelConfig, mesh, lora: LoRAConfig | None) -> dict:
    if lora is None:
        return param_shardings(model_config, mesh)
    return lora_lib.adapter_shardings(model_config, lora, mesh)


def abstract_train_state(
    model_config: ModelConfig,
    optimizer: optax.GradientTransformation,
    mesh,
    *,
    frozen_config: ModelConfig | None = None,
    rng_impl=None,
    lora: LoRAConfig | None = None,
) -> TrainState:
    """``jax.ShapeDtypeStruct`` leaves carrying their target shardings (restore targets).
    With ``lora`` the frozen base is left out (not checkpointed: attach it after restoring)."""
    shardings = train_state_shardings(
        model_config, optimizer, mesh, frozen_config=frozen_config, lora=lora
    )

    def make(key):
        params = _trained_abstract(model_config, lora)
        frozen = None if frozen_config is None else abstract_params(frozen_config)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            rng=jax.random.key_data(key),
            skipped=jnp.zeros((), jnp.int32),
            frozen=frozen,
            lora=lora,
        )

    shapes = jax.eval_shape(make, jax.random.key(0, impl=rng_impl))
    return with_shardings(shapes, shardings.replace(frozen=None if lora else shardings.frozen))


def create_train_state(
    model_config: ModelConfig,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    mesh,
    *,
    params: dict | None = None,
    frozen: dict | None = None,
    frozen_config: ModelConfig | None = None,
    lora: LoRAConfig | None = None,
) -> TrainState:
    """A fresh state, created directly in its shards.

    Args:
      model_config: the trained model's shape.
      optimizer: from ``make_optimizer``.
      rng: typed PRNG key; split into the init key and the state's key.
      mesh: the device mesh.
      params: optional initial params (e.g. from ``hf.load``); resharded (copied) if needed.
        Default: ``init_params`` from ``rng``.
      frozen: optional frozen params (teacher or reference); copied into their shardings so the
        state owns distinct buffers (it is donated to the step).
      frozen_config: the ``ModelConfig`` of ``frozen`` (default: ``model_config``).
      lora: train adapters (``params``: initial adapters, default fresh ones from ``rng``)
        over ``frozen``, the base in ``r1jax.model.quant.frozen_base``'s form (required). The
        base is handed over, not copied (two bases would not fit one chip): the caller's
        arrays are donated with the state at the first step.
    """
    if lora is not None:
        if frozen is None:
            raise ValueError("create_train_state(lora=...): pass the frozen base as frozen=")
        frozen_config = None
    elif frozen is None:
        frozen_config = None
    elif frozen_config is None:
        frozen_config = model_config
    shardings = train_state_shardings(
        model_config, optimizer, mesh, frozen_config=frozen_config, lora=lora
    )
    if params is None:
        state = _init_state_fn(model_config, optimizer, mesh, current_rules(), lora)(rng)
    else:  # a copy: the state's buffers are donated to the step, the caller's stay valid
        params = jax.device_put(params, shardings.params, may_alias=False)
        state = _from_params_fn(model_config, optimizer, mesh, current_rules(), lora)(params, rng)
    if frozen is not None:
        frozen = jax.device_put(frozen, shardings.frozen, may_alias=lora is not None)
    return state.replace(frozen=frozen)


def _fresh_state(optimizer, params, key, lora=None) -> TrainState:
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        rng=jax.random.key_data(key),
        skipped=jnp.zeros((), jnp.int32),
        frozen=None,
        lora=lora,
    )


def _without_frozen(shardings: TrainState) -> TrainState:
    return shardings.replace(frozen=None)


# Cached per (config, optimizer, mesh, rules, lora): building a state again does not recompile.
@functools.lru_cache(maxsize=16)
def _init_state_fn(model_config, optimizer, mesh, rules, lora=None):
    shardings = _without_frozen(train_state_shardings(model_config, optimizer, mesh, lora=lora))

    def init(rng):
        init_key, state_key = jax.random.split(rng)
        if lora is None:
            params = init_params(model_config, init_key)
        else:
            params = lora_lib.init_adapters(model_config, lora, init_key)
        return _fresh_state(optimizer, params, state_key, lora)

    return jax.jit(init, out_shardings=shardings)


@functools.lru_cache(maxsize=16)
def _from_params_fn(model_config, optimizer, mesh, rules, lora=None):
    shardings = _without_frozen(train_state_shardings(model_config, optimizer, mesh, lora=lora))

    def init(params, rng):
        return _fresh_state(optimizer, params, jax.random.split(rng)[1], lora)

    return jax.jit(init, out_shardings=shardings, donate_argnums=0)


def refresh_frozen(state: TrainState) -> TrainState:
    """The GRPO reference refresh: ``frozen`` := a copy of the current ``params``.

    Also used to add a reference to a state created without one. The copy keeps the params'
    shardings and owns its buffers, so donating the state later is safe. Refused with LoRA:
    there the reference is the base itself (adapters off), and a refreshed one would be a
    second full copy of the model.
    """
    if state.lora is not None:
        raise ValueError(
            "a LoRA run's KL reference is its frozen base (adapters off); "
            "config.grpo.ref_refresh_every must be 0 with config.lora.rank > 0"
        )
    shardings = jax.tree.map(lambda x: x.sharding, state.params)
    frozen = jax.device_put(state.params, shardings, may_alias=False)
    return state.replace(frozen=frozen)
