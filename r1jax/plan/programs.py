"""The programs a run executes, at the run's shapes, mesh and shardings, as jitted functions and
abstract arguments (``jax.ShapeDtypeStruct`` with shardings: nothing is allocated).

  train_step       ``make_train_step`` of the stage's objective on one global batch: GRPO rows
                   ``num_prompts * num_samples`` x (prompt bucket + ``max_new_tokens``); SFT and
                   distillation rows ``train.batch_size`` x ``train.seq_len``; a reward model's
                   ``train.batch_size`` pairs of two such rows
  sampler_prefill  (GRPO) the prompts once, the KV cache for prompt + completion
  sampler_decode   (GRPO) the decode loop (one ``while_loop``; its memory is a step's)
  sampler_continuous  (GRPO with ``grpo.decode_slots``) both in one program: the prefill,
                   then ``decode_slots`` slots decoding from the queue of requests
  sampler_admit / sampler_advance  (GRPO with ``grpo.partial_lanes``) a batch of prompts into
                   the partial-rollout pool; the pool's slots decoding until a batch is complete
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from r1jax.checkpoint import with_shardings
from r1jax.config import Stage, pool_layout
from r1jax.config.typed import model_config as typed_model_config
from r1jax.model import abstract_params, param_shardings
from r1jax.model.lora import abstract_adapters, adapter_shardings, attach
from r1jax.model.quant import abstract_base, base_shardings
from r1jax.sampling import continuous, paged, paged_shards, pool_shards
from r1jax.sampling import loop as sampling_loop
from r1jax.sampling import pool as pool_lib
from r1jax.sampling.methods import make_method
from r1jax.sharding import named_sharding
from r1jax.train import objectives, reward_objective
from r1jax.train.optim import make_optimizer, make_schedule
from r1jax.train.prompt_sharing import prompt_groups
from r1jax.train.state import abstract_train_state
from r1jax.train.step import batch_sharding, make_train_step


@dataclasses.dataclass(frozen=True)
class Program:
    """A jitted function, its abstract arguments, the mesh it runs under, and the work it does
    per call (model FLOPs: 6 x params x trained tokens (+2x for a reference forward) +
    attention; 2x for inference)."""

    name: str
    fn: Callable
    args: tuple
    arg_names: tuple[str, ...]
    model_flops: float
    tokens: int
    mesh: jax.sharding.Mesh

    def lower(self) -> jax.stages.Lowered:
        """The program as a run lowers it: under its mesh, so that the model's activation
        constraints (``r1jax.sharding.constrain``) apply, as they do in ``step()``."""
        with jax.set_mesh(self.mesh):
            return self.fn.lower(*self.args)


PREFILL_ARGS = ("params", "prompt", "prompt_mask", "key", "stop_table")
DECODE_ARGS = ("params", "state", "stop_table")
STOP_WIDTH = 8  # tokens of the stop table's rows (the stop strings' longest encoding, bounded)


def _abstract(shape, dtype, mesh, logical) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype, sharding=named_sharding(mesh, logical, shape))


def _batch(fields: dict[str, tuple[tuple[int, ...], Any]], mesh) -> dict:
    sh = batch_sharding(mesh)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=sh) for k, (s, d) in fields.items()}


def attention_flops(config, rows: int, queries: int, context: float) -> float:
    """Forward FLOPs of QK^T and PV: ``rows`` x ``queries`` attending to ``context`` keys."""
    return 4.0 * rows * queries * context * config.num_heads * config.head_dim * config.num_layers


def matmul_params(config) -> int:
    """Parameters a token's forward multiplies with (the LM head included, the lookup not; of a
    mixture of experts, the chosen experts only). A tied embedding is the LM head too, except
    in a reward model (its score head replaces the LM head)."""
    embed = config.vocab_size * config.hidden_size
    lookup_only = not config.tie_embeddings or config.score_head
    return config.num_active_params - (embed if lookup_only else 0)


def _grpo_inputs(stage: Stage, mesh):
    """GRPO's objective, reference config, batch fields and (rows, seq, trained tokens per row)."""
    model, grpo = stage.model, stage.grpo
    if grpo.pack_length:
        raise ValueError(
            "plan: packed GRPO batches (config.grpo.pack_length) are not planned yet; plan "
            "the padded layout (--config.grpo.pack_length=0), an upper bound on memory"
        )
    rows, prompt, completion = (
        grpo.num_prompts * grpo.num_samples,
        max(stage.data.buckets),
        grpo.max_new_tokens,
    )
    fields = {
        "prompt_tokens": ((rows, prompt), jnp.int32),
        "prompt_mask": ((rows, prompt), jnp.int32),
        "completion_tokens": ((rows, completion), jnp.int32),
        "completion_mask": ((rows, completion), jnp.int32),
        "old_logprobs": ((rows, completion), jnp.float32),
        "advantages": ((rows,), jnp.float32),
    }
    if grpo.keep_sampler_logprobs:
        fields["sampler_logprobs"] = ((rows, completion), jnp.float32)
    if grpo.routing_replay:
        k = model.moe.experts_per_token
        fields["routing"] = ((rows, prompt + completion, model.moe_layers, k), jnp.int16)
    frozen_config = model if grpo.beta > 0 else None
    micro, length = stage.train.num_microbatches, prompt + completion
    groups = prompt_groups(grpo, model, mesh, num_microbatches=micro, max_length=length)
    return (
        objectives.grpo(model, grpo, groups),
        frozen_config,
        fields,
        (rows, prompt + completion, completion),
    )


def _token_inputs(stage: Stage, mesh):
    """SFT's or online distillation's objective, teacher config, batch fields and shape."""
    model, train = stage.model, stage.train
    rows, seq = train.batch_size, train.seq_len
    frozen_config, topk = None, {}
    if stage.kind == "sft":
        objective = objectives.sft(model)
    elif stage.distill.teacher == "topk":  # the stored top-k: [rows, seq, K] per field
        objective = objectives.distill(model, stage.distill)
        k = stage.distill.top_k
        topk = {
            "teacher_topk_indices": ((rows, seq, k), jnp.int32),
            "teacher_topk_logprobs": ((rows, seq, k), jnp.float32),
        }
    else:
        frozen_config = typed_model_config(stage.distill.teacher_model, "distill.teacher_model")
        objective = objectives.distill(model, stage.distill, frozen_config)
    fields = {
        k: ((rows, seq), jnp.int32) for k in ("tokens", "loss_mask", "segment_ids", "positions")
    }
    return objective, frozen_config, fields | topk, (rows, seq, seq)


def _preference_inputs(stage: Stage, mesh):
    """The reward model's objective and batch fields: B pairs of two rows of ``seq_len``."""
    rows, seq = stage.train.batch_size, stage.train.seq_len
    fields = {f"{side}_tokens": ((rows, seq), jnp.int32) for side in ("chosen", "rejected")}
    fields |= {f"{side}_last": ((rows,), jnp.int32) for side in ("chosen", "rejected")}
    fields["pair_mask"] = ((rows,), jnp.int32)
    return reward_objective.reward_model(stage.model), None, fields, (2 * rows, seq, seq)


def train_step(stage: Stage, mesh) -> Program:
    """The stage's train step on one global batch (see the module docstring)."""
    model, train = stage.model, stage.train
    inputs = {"grpo": _grpo_inputs, "reward_model": _preference_inputs}.get(
        stage.kind, _token_inputs
    )
    objective, frozen_config, fields, (rows, seq, trained) = inputs(stage, mesh)
    lora = stage.lora  # None unless config.lora.rank > 0
    optimizer = make_optimizer(stage.optim)
    step = make_train_step(
        model,
        objective,
        optimizer,
        mesh,
        num_microbatches=train.num_microbatches,
        frozen_config=None if lora else frozen_config,
        schedule=make_schedule(stage.optim),
        donate=True,
        lora=lora,
    )
    if lora is None:
        state = abstract_train_state(model, optimizer, mesh, frozen_config=frozen_config)
    else:  # the adapters' state, the frozen base attached (it is the reference too)
        state = abstract_train_state(model, optimizer, mesh, lora=lora)
        base = with_shardings(abstract_base(model, lora), base_shardings(model, lora, mesh))
        state = state.replace(frozen=base)
    forward = 2 * matmul_params(model) * rows * seq + attention_flops(model, rows, seq, seq / 2)
    flops = 3 * forward
    if frozen_config is not None:  # the reference's / teacher's forward
        teacher = 2 * matmul_params(frozen_config) * rows * seq
        flops += teacher + attention_flops(frozen_config, rows, seq, seq / 2)
    args = (state, _batch(fields, mesh))
    names = ("state", "batch")
    return Program("train_step", step.jitted, args, names, flops, rows * trained, mesh)


def model_params(stage: Stage, mesh):
    """The abstract params the sampler runs on: the model's, or with ``config.lora`` the
    frozen (quantized) base with the adapters attached, each with its sharding."""
    model, lora = stage.model, stage.lora
    if lora is None:
        return with_shardings(abstract_params(model), param_shardings(model, mesh))
    base = with_shardings(abstract_base(model, lora), base_shardings(model, lora, mesh))
    adapters = with_shardings(abstract_adapters(model, lora), adapter_shardings(model, lora, mesh))
    return attach(base, adapters, lora)


def sampler(stage: Stage, mesh) -> list[Program]:
    """GRPO's sampler: the prefill of ``num_prompts`` prompts and the decode loop of their
    ``num_prompts * num_samples`` rows, the KV cache holding prompt + ``max_new_tokens``."""
    grpo, model = stage.grpo, stage.model
    q, g, p, t = grpo.num_prompts, grpo.num_samples, max(stage.data.buckets), grpo.max_new_tokens
    method = make_method(temperature=grpo.temperature, top_k=grpo.top_k, top_p=grpo.top_p)
    params = model_params(stage, mesh)
    prompt = _abstract((q, p), jnp.int32, mesh, ("batch", None))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=named_sharding(mesh, (), ()))
    table = _abstract((max(len(grpo.stop_strings), 1), STOP_WIDTH), jnp.int32, mesh, (None, None))
    args = (params, prompt, prompt, key, table)
    with jax.set_mesh(mesh):  # the sampler's own programs, in the state layout it would use
        pair = sampling_loop.programs(
            *args,
            config=model,
            method=method,
            num_samples=g,
            max_new_tokens=t,
            pad_id=0,
            mesh=mesh,
        )
    shardings = sampling_loop.state_shardings(model, q * g, t, STOP_WIDTH, p + t, mesh)
    state = jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), pair.state, shardings
    )
    prefill, decode = pair.prefill, pair.decode
    prefill_flops = 2 * matmul_params(model) * q * p + attention_flops(model, q, p, p / 2)
    decode_flops = 2 * matmul_params(model) * q * g + attention_flops(model, q * g, 1, p + t)
    return [
        Program("sampler_prefill", prefill, args, PREFILL_ARGS, prefill_flops, q * p, mesh),
        Program(
            "sampler_decode", decode, (params, state, table), DECODE_ARGS, decode_flops, q * g, mesh
        ),
    ]


def continuous_sampler(stage: Stage, mesh) -> list[Program]:
    """GRPO's sampler with continuous batching (``grpo.decode_slots``): one program, the
    prompts' prefill then the slots' loop (FLOPs: the prefill and one decode step); with
    ``grpo.decode_page_size`` over a paged cache of ``grpo.decode_pages`` pages (one store per
    batch shard, ``paged_shards``)."""
    grpo, model = stage.grpo, stage.model
    q, g, p, t = grpo.num_prompts, grpo.num_samples, max(stage.data.buckets), grpo.max_new_tokens
    c, z = grpo.decode_slots, grpo.decode_page_size
    method = make_method(temperature=grpo.temperature, top_k=grpo.top_k, top_p=grpo.top_p)
    params = model_params(stage, mesh)
    prompt = _abstract((q, p), jnp.int32, mesh, ("batch", None))
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=named_sharding(mesh, (), ()))
    table = _abstract((max(len(grpo.stop_strings), 1), STOP_WIDTH), jnp.int32, mesh, (None, None))
    common = dict(config=model, method=method, num_samples=g, max_new_tokens=t, pad_id=0)
    common |= dict(windows=sampling_loop.DECODE_WINDOWS)  # the sampler's default
    if z:  # the paged cache (``grpo.decode_page_size``): pages, not slots x reach
        paged.page_counts(p, t, z)  # checks that Z divides the prompt bucket
        gen_pages = grpo.decode_pages or c * paged.request_pages(t, z)
        fn = functools.partial(
            paged_shards.sample, mesh=mesh, num_slots=c, page_size=z, gen_pages=gen_pages, **common
        )
    else:
        fn = functools.partial(
            continuous.sample, num_slots=c, min_slots=grpo.decode_min_slots, mesh=mesh, **common
        )
    fn = jax.jit(fn)
    flops = 2 * matmul_params(model) * (q * p + c) + attention_flops(model, q, p, p / 2)
    flops += attention_flops(model, c, 1, p + t)
    args = (params, prompt, prompt, key, table)
    return [Program("sampler_continuous", fn, args, PREFILL_ARGS, flops, q * p + c, mesh)]


def _pool_programs(grpo, model, mesh, statics: dict, shapes: dict, method, request_pages):
    """The abstract empty pool and the jitted admit and advance of ``grpo``'s pool: one pool
    (``pool.py``) or ``grpo.partial_shards`` (``pool_shards.py``)."""
    empty_kw = {k: shapes.pop(k) for k in ("stop_width", "pad_id")} | statics
    if grpo.partial_shards == 1:
        p, c, lanes = shapes["width"], shapes["slots"], shapes["lanes"]
        g, t, z = statics["num_samples"], statics["max_new_tokens"], shapes.get("page_size", 0)
        shardings = pool_lib.pool_shardings(model, lanes, p, g, t, c, STOP_WIDTH, mesh, z)
        abstract = jax.eval_shape(functools.partial(pool_lib.empty_pool, **empty_kw, **shapes),
                                  jax.random.key(0))  # fmt: skip
        lib, kw = pool_lib, {}
    else:
        pool_shards.check_model(model, mesh, grpo.partial_shards, "config.grpo.partial_shards")
        lay = pool_layout.layout(
            grpo.partial_shards, prompts=grpo.num_prompts, samples=grpo.num_samples,
            lanes=shapes["lanes"], slots=shapes["slots"], gen_pages=shapes.get("gen_pages", 0),
            request_pages=request_pages, name="config.grpo.partial_shards",
        )  # fmt: skip
        empty = functools.partial(pool_shards.empty, lay=lay, **empty_kw, **shapes)
        abstract = jax.eval_shape(empty, jax.random.key(0))
        axes = pool_shards.block_axes(mesh, lay.shards)
        shardings = pool_shards.shardings(mesh, axes, abstract)
        lib, kw = pool_shards, dict(lay=lay, mesh=mesh)
    rep = named_sharding(mesh, (), ())  # one paged pool: XLA places it (``pool_shardings``)
    arg_shardings = shardings or jax.tree.map(lambda _: rep, abstract)
    pool = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sh), abstract, arg_shardings
    )
    jit = lambda fn, **kw: jax.jit(
        functools.partial(fn, **statics, **kw), donate_argnums=1, out_shardings=shardings
    )
    admit = jit(lib.admit, pad_id=0, **kw)
    windows = sampling_loop.DECODE_WINDOWS  # the sampler's default
    advance = jit(lib.advance, method=method, windows=windows, **kw or dict(mesh=mesh))
    return pool, admit, advance


def partial_rollout_sampler(stage: Stage, mesh) -> list[Program]:
    """GRPO's sampler with partial rollouts (``grpo.partial_lanes``): admitting a batch of
    prompts into the pool, and advancing the pool (the lanes' prompt cache, the slots' cache,
    every lane's rows); both donate the pool (FLOPs: the prefill, one decode step)."""
    grpo, model = stage.grpo, stage.model
    q, g, p, t = grpo.num_prompts, grpo.num_samples, max(stage.data.buckets), grpo.max_new_tokens
    c, lanes = grpo.decode_slots, grpo.partial_lanes
    method = make_method(temperature=grpo.temperature, top_k=grpo.top_k, top_p=grpo.top_p)
    params = model_params(stage, mesh)
    prompt = _abstract((q, p), jnp.int32, mesh, ("batch", None))
    table = _abstract((max(len(grpo.stop_strings), 1), STOP_WIDTH), jnp.int32, mesh, (None, None))
    statics = dict(config=model, num_samples=g, max_new_tokens=t)
    shapes = dict(lanes=lanes, width=p, slots=c, stop_width=STOP_WIDTH, pad_id=0)
    request_pages = 0
    if z := grpo.decode_page_size:  # the slots' cache in pages
        paged.page_counts(p, t, z)  # checks that Z divides the prompt bucket
        request_pages = paged.request_pages(t, z)
        shapes |= dict(page_size=z, gen_pages=grpo.decode_pages or c * request_pages)
    pool, admit, advance = _pool_programs(grpo, model, mesh, statics, shapes, method, request_pages)
    scalar = _abstract((), jnp.int32, mesh, ())
    prefilled = max(q, grpo.partial_shards)  # shards sharing a prompt each prefill it
    prefill_flops = 2 * matmul_params(model) * prefilled * p
    prefill_flops += attention_flops(model, prefilled, p, p / 2)
    decode_flops = 2 * matmul_params(model) * c + attention_flops(model, c, 1, p + t)
    admit_names = ("params", "pool", "prompt", "prompt_mask")
    advance_names = ("params", "pool", "stop_table", "target_end", "max_steps")
    return [
        Program("sampler_admit", admit, (params, pool, prompt, prompt), admit_names,
                prefill_flops, prefilled * p, mesh),
        Program("sampler_advance", advance, (params, pool, table, scalar, scalar), advance_names,
                decode_flops, c, mesh),
    ]  # fmt: skip


def programs_for(stage: Stage, mesh) -> list[Program]:
    """Every program of a training stage (the sampler's too for GRPO)."""
    out = [train_step(stage, mesh)]
    if stage.kind == "grpo":
        if stage.grpo.partial_lanes:
            out += partial_rollout_sampler(stage, mesh)
        else:
            out += (
                continuous_sampler(stage, mesh) if stage.grpo.decode_slots else sampler(stage, mesh)
            )
    return out
