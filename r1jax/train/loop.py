"""The SFT and logit-distillation loops: data -> sharded batch -> train step -> metrics/checkpoints.

    r1jax train --config=configs/sft_tiny.py --workdir=/tmp/sft
    r1jax train --config=configs/distill_tiny.py --workdir=/tmp/distill

Each step: next packed batch from ``r1jax.data.make_sft_dataset`` (its ``stats`` popped and
logged), assembled into one global array per field with the batch sharding
(``jax.make_array_from_process_local_data``: every process feeds its own rows), then the jitted
step under ``jax.transfer_guard("disallow")`` so an accidental host->device copy inside the loop
fails loudly instead of silently slowing every step. Checkpoints hold the data iterator's state,
so a resumed run sees exactly the batches an uninterrupted one would.

The pieces (``build_setup``, ``restore_or_create``, ``global_batch``, ``make_tokenizer``) are
reused by the GRPO loop.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from r1jax import multihost, sharding
from r1jax.checkpoint import CHECKPOINTS, Checkpointer, load_params
from r1jax.model import ModelConfig, init_params
from r1jax.train import objectives
from r1jax.train.metrics import MetricsWriter, Progress
from r1jax.train.optim import OptimConfig, make_optimizer, make_schedule
from r1jax.train.preemption import PreemptionGuard
from r1jax.train.state import TrainState, abstract_train_state, create_train_state
from r1jax.train.step import batch_sharding, check_microbatches, make_train_step

EvalFn = Callable[[TrainState, int], Mapping[str, float] | None]


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The ``config.train`` section."""

    objective: str = "sft"
    steps: int = 100
    batch_size: int = 8  # global, over all processes
    seq_len: int = 128
    num_microbatches: int = 1
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    eval_every: int = 0
    transfer_guard: str = "disallow"

    @classmethod
    def from_mapping(cls, cfg: Mapping) -> LoopConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in dict(cfg).items() if k in names}
        return cls(**known)  # other keys belong to the objective's own loop (e.g. GRPO)


@dataclasses.dataclass(frozen=True)
class TrainSetup:
    """Everything static about a run, built once from the config."""

    model_config: ModelConfig
    mesh: Any
    optimizer: Any
    schedule: Any
    objective: objectives.Objective
    frozen_config: ModelConfig | None
    loop: LoopConfig


def build_setup(config, objective: objectives.Objective | None = None, frozen_config=None):
    """Model, mesh, optimizer and (for "sft"/"distill") the objective from a ConfigDict."""
    model_config = ModelConfig.from_mapping(config.model)
    mesh = sharding.make_mesh(sharding.MeshConfig.from_mapping(config.mesh))
    optim = OptimConfig.from_mapping(config.optim)
    loop = LoopConfig.from_mapping(config.train)
    if objective is None and loop.objective == "sft":
        objective = objectives.sft(model_config)
    elif objective is None and loop.objective == "distill":
        options = distill_options(config)
        objective = objectives.distill(model_config, options)
        frozen_config = options.teacher_config if options.teacher == "online" else None
    elif objective is None:
        raise ValueError(f"config.train.objective={loop.objective!r}: 'sft' or 'distill' here")
    return TrainSetup(
        model_config,
        mesh,
        make_optimizer(optim),
        make_schedule(optim),
        objective,
        frozen_config,
        loop,
    )


def distill_options(config) -> objectives.DistillOptions:
    d = config.distill
    teacher_config = ModelConfig.from_mapping(d.teacher_model) if d.teacher == "online" else None
    return objectives.DistillOptions(
        kind=d.kind,
        beta=d.beta,
        temperature=d.temperature,
        teacher=d.teacher,
        teacher_config=teacher_config,
    )


def load_teacher(config, setup: TrainSetup):
    """Teacher params for online distillation: an r1jax run's checkpoints, an HF directory, or
    (for smoke tests only) a random model with ``config.distill.teacher_seed``."""
    d, mesh, teacher_config = config.distill, setup.mesh, setup.frozen_config
    if d.get("teacher_checkpoint"):
        _, params = load_params(d.teacher_checkpoint, teacher_config, mesh, format="r1jax")
        return params
    if d.get("teacher_hf"):
        _, params = load_params(d.teacher_hf, mesh=mesh, format="hf")
        return params
    return init_params(teacher_config, jax.random.key(d.get("teacher_seed", 1)), mesh=mesh)


def restore_or_create(
    ckpt: Checkpointer, setup: TrainSetup, seed: int, *, frozen=None, params=None
) -> tuple[TrainState, Any]:
    """(state, data iterator state or None): the latest checkpoint if any, else a fresh state.

    ``frozen`` (e.g. a teacher) is attached when given and not itself checkpointed.
    """
    if ckpt.latest_step() is not None:
        target = abstract_train_state(setup.model_config, setup.optimizer, setup.mesh)
        state, data_state, _ = ckpt.restore(target)
        if frozen is not None:
            state = state.replace(frozen=frozen)
        return state, data_state
    state = create_train_state(
        setup.model_config,
        setup.optimizer,
        jax.random.key(seed),
        setup.mesh,
        params=params,
        frozen=frozen,
        frozen_config=setup.frozen_config,
    )
    return state, None


def global_batch(
    local: Mapping[str, np.ndarray], batch_sh, global_rows: int
) -> dict[str, jax.Array]:
    """This process's rows -> global arrays of ``global_rows`` split over the batch axes
    (explicit transfers; processes sharing a batch shard pass the same rows)."""
    make = lambda v: jax.make_array_from_process_local_data(
        batch_sh, v, (global_rows, *v.shape[1:])
    )
    return {k: make(np.asarray(v)) for k, v in local.items()}


def make_tokenizer(data_config, workdir: str | Path):
    """``data.tokenizer`` if set, else a sentencepiece model trained on the task into workdir."""
    from r1jax.data import load_tokenizer, tokenizer_corpus, train_sentencepiece

    if data_config.get("tokenizer"):
        return load_tokenizer(data_config.tokenizer)
    if data_config.get("path"):
        raise ValueError("config.data.path is set: also set config.data.tokenizer (a model path)")
    prefix = Path(workdir) / "tokenizer"
    model = prefix.with_suffix(".model")
    if not model.exists():
        if jax.process_index() == 0:
            source, n = make_source(data_config), data_config.tokenizer_examples
            lines = tokenizer_corpus(source, n, data_config.seed, layout="fields")
            train_sentencepiece(lines, prefix, data_config.vocab_size)
        multihost.barrier("tokenizer")  # the others wait for process 0's file
    return load_tokenizer(str(model))


def make_source(data_config):
    """A built-in task (``data.task``) or JSONL/Parquet path(s) (``data.path``)."""
    from r1jax.data import get_task

    if data_config.get("path"):
        return data_config.path
    return get_task(data_config.task, **dict(data_config.get("task_options") or {}))


def run(
    config, workdir: str | Path, *, eval_fn: EvalFn | None = None, init_params=None
) -> dict[str, float]:
    """Runs (or resumes) an SFT / distillation job; returns the last logged metrics.

    ``init_params``: the model to start a fresh run from (ignored when resuming).
    """
    from r1jax.data import make_sft_dataset

    workdir = Path(workdir)
    setup = build_setup(config)
    loop = setup.loop
    # This process's rows of each global batch: its data shard's contiguous block (processes
    # sharing a shard read the same rows; the global batch is the same on any process count).
    check_microbatches(loop.batch_size, loop.num_microbatches, "config.train.batch_size")
    shard = multihost.batch_feed(setup.mesh, loop.batch_size, "config.train.batch_size")
    tokenizer = make_tokenizer(config.data, workdir)
    if tokenizer.vocab_size > setup.model_config.vocab_size:
        raise ValueError(
            f"tokenizer vocab {tokenizer.vocab_size} > config.model.vocab_size "
            f"{setup.model_config.vocab_size}"
        )
    dataset = make_sft_dataset(
        make_source(config.data),
        tokenizer,
        batch_size=loop.batch_size,
        seq_len=loop.seq_len,
        seed=config.data.seed,
        shard_index=shard.index,
        shard_count=shard.count,
    )
    frozen = load_teacher(config, setup) if setup.frozen_config is not None else None
    ckpt = Checkpointer(
        workdir / CHECKPOINTS, save_every=loop.checkpoint_every, keep=loop.keep_checkpoints
    )
    state, data_state = restore_or_create(
        ckpt, setup, config.seed, frozen=frozen, params=init_params
    )
    data_iter = iter(dataset)
    if data_state is not None:
        data_iter.set_state(data_state)
    step_fn = make_train_step(
        setup.model_config,
        setup.objective,
        setup.optimizer,
        setup.mesh,
        num_microbatches=loop.num_microbatches,
        frozen_config=setup.frozen_config,
        schedule=setup.schedule,
    )
    save = lambda state, force=False: ckpt.save(
        state,
        data_state=data_iter.get_state(),
        config=config.to_dict(),
        force=force,
        include_frozen=False,
    )
    try:
        return train_loop(state, step_fn, data_iter, setup, workdir, save, eval_fn)
    finally:
        ckpt.close()


def train_loop(state, step_fn, data_iter, setup: TrainSetup, workdir, save, eval_fn):
    """The loop body shared by SFT and distillation (see the module docstring)."""
    loop, batch_sh = setup.loop, batch_sharding(setup.mesh)
    step = int(jax.device_get(state.step))
    last: dict[str, float] = {}
    keys = ("loss", "learning_rate", "tokens_per_s")
    with (
        PreemptionGuard() as guard,
        MetricsWriter(workdir) as writer,
        Progress(loop.steps, initial=step, keys=keys) as bar,
    ):
        tic = time.perf_counter()
        while step < loop.steps:
            local = next(data_iter)
            stats = local.pop("stats")
            batch = global_batch(local, batch_sh, loop.batch_size)
            with jax.transfer_guard(loop.transfer_guard):
                state, metrics = step_fn(state, batch)
            step += 1
            if step % loop.log_every == 0 or step == loop.steps:
                metrics = jax.device_get(metrics)  # explicit: allowed by the guard
                toc = time.perf_counter()
                tokens = loop.batch_size * loop.seq_len * loop.log_every
                extra = {"tokens_per_s": tokens / (toc - tic), "data": stats}
                last = writer.write(step, {**metrics, **extra})
                bar.update(step, last)
                tic = toc
            if eval_fn is not None and loop.eval_every and step % loop.eval_every == 0:
                results = eval_fn(state, step) or {}
                writer.write(step, {f"eval/{k}": v for k, v in results.items()})
            if guard.stop:
                save(state, force=True)
                print(f"preempted: checkpoint saved at step {step}", flush=True)
                return last
            save(state)
        save(state, force=True)
    return last
