"""The one train step: value_and_grad of an objective, micro-batch accumulation, optax update.

``make_train_step`` returns ``step(state, batch) -> (state, metrics)``, jitted once with explicit
in/out shardings (state sharded by the model's logical axes, every batch leaf split over the
"batch" rule's mesh axes on its leading dimension) and the state donated. The objective is chosen
by the caller (``r1jax.train.objectives``); the step has no loss-specific branches.

Exactness of accumulation: the objective's normaliser is computed once over the FULL batch and
passed to every micro-batch, whose losses and gradients are then summed (see ``r1jax.losses``).
Micro-batch j takes rows j, j+M, j+2M, ... so that each device's contiguous shard of the batch
feeds every micro-batch (no cross-device reshuffle). An objective with an ``empty`` test (packed
GRPO) has the micro-batches it finds empty skipped at run time (``lax.cond``): they add zero loss
and gradient, and their metrics are left out of the averages.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.config.lora import LoRAConfig
from r1jax.model import ModelConfig, param_shardings
from r1jax.model.lora import adapter_shardings, attach
from r1jax.model.quant import base_shardings
from r1jax.sharding import current_rules
from r1jax.train import adapters
from r1jax.train.objectives import Objective, completion_logprobs, packed_logprobs
from r1jax.train.state import TrainState, train_state_shardings


def batch_sharding(mesh) -> NamedSharding:
    """Leading dimension over the mesh axes of the "batch" rule, the rest replicated."""
    axes = tuple(a for a in current_rules().mesh_axes("batch") if mesh.shape[a] > 1)
    return NamedSharding(mesh, P(axes or None))


def check_microbatches(rows: int, num_microbatches: int, what: str) -> None:
    """Raises, naming the config fields, unless the global batch of ``rows`` splits into
    ``num_microbatches`` equal micro-batches (checked on global sizes: the same verdict on
    every process count)."""
    if num_microbatches < 1 or rows % num_microbatches:
        raise ValueError(
            f"{what}: the global batch of {rows} rows does not split into "
            f"config.train.num_microbatches={num_microbatches} equal micro-batches; change one"
        )


def split_microbatches(batch: dict, num_microbatches: int, group: int = 1) -> dict:
    """[B, ...] leaves -> [M, B/M, ...]; micro-batch j holds rows j, j+M, j+2M, ..., or with
    ``group`` > 1 the runs of ``group`` rows j, j+M, ... (a run stays in one micro-batch)."""
    m = num_microbatches

    def split(x):
        if x.shape[0] % (m * group):
            raise ValueError(
                f"batch size {x.shape[0]} is not divisible by num_microbatches={m} x row "
                f"groups of {group}"
            )
        x = x.reshape(x.shape[0] // (m * group), m, group, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1).reshape(m, x.shape[0] * group, *x.shape[3:])

    return jax.tree.map(split, batch)


def _microbatch_grads(grad_fn, objective: Objective) -> Callable:
    """``fn(params, frozen, mb, normalizer) -> ((loss, metrics), grads, computed f32 [])``; a
    micro-batch ``objective.empty`` finds empty gives zeros without running the model."""

    def run(params, frozen, mb, normalizer):
        return (*grad_fn(params, frozen, mb, normalizer), jnp.ones((), jnp.float32))

    if objective.empty is None:
        return run

    def fn(params, frozen, mb, normalizer):
        args = (params, frozen, mb, normalizer)
        shapes = jax.eval_shape(run, *args)
        zeros = lambda: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return jax.lax.cond(objective.empty(mb), zeros, lambda: run(*args))

    return fn


def _mean_metrics(metrics_M: dict, computed_M: jax.Array, skips: bool) -> dict:
    """Metrics [M] averaged over the micro-batches computed (all of them unless ``skips``)."""
    if not skips:
        return jax.tree.map(jnp.mean, metrics_M)
    n = jnp.maximum(jnp.sum(computed_M), 1.0)
    mean = jax.tree.map(lambda m: jnp.sum(m * computed_M) / n, metrics_M)
    return mean | {"microbatches_computed": jnp.sum(computed_M)}


def _select(pred, new, old):
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def make_train_step(
    model_config: ModelConfig,
    objective: Objective,
    optimizer: optax.GradientTransformation,
    mesh,
    *,
    num_microbatches: int = 1,
    frozen_config: ModelConfig | None = None,
    schedule: optax.Schedule | None = None,
    donate: bool = True,
    lora: LoRAConfig | None = None,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Builds the jitted ``step(state, batch) -> (new_state, metrics)``.

    Args:
      model_config: the trained model (its ``compute_dtype`` and ``remat_policy`` apply).
      objective: from ``r1jax.train.objectives`` (``sft``, ``distill``, ``grpo``).
      optimizer: from ``make_optimizer`` (clipping is part of it).
      mesh: device mesh; the batch's leading dim must divide by the batch axes' size times
        ``num_microbatches``.
      num_microbatches: gradient accumulation steps (``lax.scan``) within one update.
      frozen_config: ``ModelConfig`` of ``state.frozen`` (None when the state has none).
      schedule: optional learning-rate schedule, reported as ``metrics["learning_rate"]``.
      lora: train adapters over the state's frozen base (``r1jax.train.adapters``): the
        objective runs on the base with adapters attached, its reference is the base.

    Metrics (f32/int32 scalars, replicated): ``loss`` (exact full-batch loss), the objective's
    metrics averaged over micro-batches (those computed, and ``microbatches_computed``, when
    the objective skips empty ones), ``grad_norm`` (before clipping), ``param_norm``,
    ``skipped`` (1 if this update was dropped as non-finite), ``skipped_total``, ``learning_rate``.

    Long because it is the one train step every objective runs, read top to bottom: a 34-line
    ``step`` body (normaliser, accumulation scan, update, skip guard) under its docstring.
    """
    state_sh = train_state_shardings(
        model_config, optimizer, mesh, frozen_config=frozen_config, lora=lora
    )
    batch_sh = batch_sharding(mesh)
    objective = objective if lora is None else adapters.adapted(objective, lora)
    micro_grads = _microbatch_grads(jax.value_and_grad(objective.loss, has_aux=True), objective)

    def train_step(state: TrainState, batch: dict):
        normalizer = objective.normalizer(batch)  # over the FULL batch, before splitting

        def micro(grads, mb):
            mb = jax.lax.with_sharding_constraint(mb, batch_sh)
            (loss, metrics), g, computed = micro_grads(state.params, state.frozen, mb, normalizer)
            return jax.tree.map(jnp.add, grads, g), (loss, metrics, computed)

        zeros = jax.tree.map(jnp.zeros_like, state.params)
        mbs = split_microbatches(batch, num_microbatches, objective.row_group)
        grads, (losses_M, metrics_M, computed_M) = jax.lax.scan(micro, zeros, mbs)
        loss = jnp.sum(losses_M)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        skipped = state.skipped + (~finite).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=_select(finite, params, state.params),
            opt_state=_select(finite, opt_state, state.opt_state),
            skipped=skipped,
        )
        metrics = _mean_metrics(metrics_M, computed_M, objective.empty is not None)
        metrics |= {
            "loss": loss,
            "grad_norm": grad_norm,
            "param_norm": optax.tree.norm(new_state.params),
            "skipped": (~finite).astype(jnp.int32),
            "skipped_total": skipped,
        }
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        return new_state, metrics

    jitted = jax.jit(
        train_step,
        in_shardings=(state_sh, batch_sh),
        out_shardings=(state_sh, NamedSharding(mesh, P())),
        donate_argnums=(0,) if donate else (),
    )

    def step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        with jax.set_mesh(mesh):  # the model's activation constraints read the ambient mesh
            return jitted(state, batch)

    step.jitted = jitted  # for .lower(...).compile() (benchmarks, AOT checks)
    step.mesh = mesh
    step.num_microbatches = num_microbatches  # packed GRPO orders its rows by micro-batch
    return step


def model_param_shardings(model_config: ModelConfig, mesh, lora: LoRAConfig | None = None):
    """Shardings of ``TrainState.model_params()``: the params', or with ``lora`` the base's
    with the adapters' attached."""
    if lora is None:
        return param_shardings(model_config, mesh)
    base = base_shardings(model_config, lora, mesh)
    return attach(base, adapter_shardings(model_config, lora, mesh), lora)


_PADDED_KEYS = ("prompt_tokens", "prompt_mask", "completion_tokens")
_PACKED_KEYS = ("tokens", "segment_ids", "positions")


def make_logprobs_fn(
    model_config: ModelConfig,
    mesh,
    *,
    temperature: float = 1.0,
    lora: LoRAConfig | None = None,
    prompt_groups: int = 1,
) -> Callable[[dict, dict], jax.Array]:
    """Jitted ``fn(params, grpo_batch) -> f32 [B, T]``: completion log-probs at ``temperature``;
    ``prompt_groups``: ``objectives.grpo``'s (the same sharing as the update's forward).

    ``params``: the model's (``TrainState.model_params()``: with ``lora``, the base with the
    adapters attached).

    Recomputes pi_old (or reference log-probs) for a GRPO batch, e.g. before mu > 1 inner
    updates; uses the batch keys ``prompt_tokens``, ``prompt_mask``, ``completion_tokens``
    (and ``routing``, replayed, when the batch has it).
    A packed batch (``grpo_packing``: it has ``segment_ids``) gives f32 [B, T] (T its row
    length) aligned with its ``old_logprobs``, from ``tokens``, ``segment_ids``, ``positions``.
    """
    batch_sh = batch_sharding(mesh)

    def fn(params, batch):
        if "segment_ids" in batch:
            return packed_logprobs(params, batch, model_config, temperature)
        return completion_logprobs(params, batch, model_config, temperature, prompt_groups)

    jitted = jax.jit(
        fn,
        in_shardings=(model_param_shardings(model_config, mesh, lora), batch_sh),
        out_shardings=batch_sh,
    )

    def logprobs(params, batch):
        keys = _PACKED_KEYS if "segment_ids" in batch else _PADDED_KEYS
        keys += ("routing",) if "routing" in batch else ()  # routing replay
        with jax.set_mesh(mesh):
            return jitted(params, {k: batch[k] for k in keys})

    return logprobs
