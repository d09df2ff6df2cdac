"""SFT and logit distillation as a ``loop.Job``: packed batches -> the jitted train step.

Each iteration: the next packed global batch from ``r1jax.data.make_sft_dataset`` (its
``stats`` logged with the metrics), this process's rows assembled into one global array per
field with the batch sharding (``jax.make_array_from_process_local_data``: explicit transfers),
then the jitted step under the loop's transfer guard. Distillation's online teacher is the
state's ``frozen`` params, read from ``distill.teacher_from`` (not checkpointed with the run);
SFT with ``config.lora.rank > 0`` trains adapters over a frozen base there instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from r1jax import multihost
from r1jax.checkpoint import load_params
from r1jax.config import Stage
from r1jax.config.typed import model_config as typed_model_config
from r1jax.model import init_params
from r1jax.train import adapters, objectives
from r1jax.train.setup import Job, Setup, build_setup, check_vocab, make_source, make_tokenizer
from r1jax.train.step import batch_sharding, check_microbatches, make_train_step


def global_batch(
    local: Mapping[str, np.ndarray], batch_sh, global_rows: int
) -> dict[str, jax.Array]:
    """This process's rows -> global arrays of ``global_rows`` split over the batch axes
    (explicit transfers; processes sharing a batch shard pass the same rows)."""
    make = lambda v: jax.make_array_from_process_local_data(
        batch_sh, v, (global_rows, *v.shape[1:])
    )
    return {k: make(np.asarray(v)) for k, v in local.items()}


def load_teacher(stage: Stage, setup: Setup):
    """The online teacher's params: an r1jax run / checkpoints or an HF directory
    (``distill.teacher_from``), else (plumbing tests only) a random model with ``teacher_seed``."""
    d = stage.distill
    if d.teacher_from:
        _, params = load_params(d.teacher_from, setup.frozen_config, setup.mesh)
        return params
    return init_params(setup.frozen_config, jax.random.key(d.teacher_seed), mesh=setup.mesh)


def _objective(stage: Stage):
    """(objective, teacher ModelConfig or None) of an "sft" or "distill" stage."""
    if stage.kind == "sft":
        return objectives.sft(stage.model), None
    d = stage.distill
    teacher = None
    if d.teacher == "online":
        teacher = typed_model_config(d.teacher_model, "config.distill.teacher_model")
    return objectives.distill(stage.model, d, teacher), teacher


def build(stage: Stage, workdir: Path) -> Job:
    """The job of an "sft" or "distill" stage."""
    from r1jax.data import make_sft_dataset

    objective, teacher_config = _objective(stage)
    setup = build_setup(stage, frozen_config=teacher_config)
    train = stage.train
    check_microbatches(train.batch_size, train.num_microbatches, "config.train.batch_size")
    # This process's rows of each global batch: its data shard's contiguous block (processes
    # sharing a shard read the same rows; the global batch is the same on any process count).
    shard = multihost.batch_feed(setup.mesh, train.batch_size, "config.train.batch_size")
    tokenizer = make_tokenizer(stage.data, workdir)
    check_vocab(tokenizer, setup.model_config)
    dataset = make_sft_dataset(
        make_source(stage.data),
        tokenizer,
        batch_size=train.batch_size,
        seq_len=train.seq_len,
        seed=stage.data.seed,
        shard_index=shard.index,
        shard_count=shard.count,
        teacher_topk=stage.kind == "distill" and stage.distill.teacher == "topk",
    )
    if setup.lora is not None:  # adapters over a frozen base (``r1jax.train.adapters``)
        frozen = adapters.stage_base(stage, setup)
    else:
        frozen = load_teacher(stage, setup) if teacher_config is not None else None
    step_fn = make_train_step(
        setup.model_config,
        objective,
        setup.optimizer,
        setup.mesh,
        num_microbatches=train.num_microbatches,
        frozen_config=teacher_config,
        schedule=setup.schedule,
        lora=setup.lora,
    )
    data_iter, batch_sh = iter(dataset), batch_sharding(setup.mesh)

    def iteration(state, step, guard):
        local = next(data_iter)
        stats = local.pop("stats")
        batch = global_batch(local, batch_sh, train.batch_size)
        with guard():
            state, metrics = step_fn(state, batch)
        return state, {**metrics, "data": stats}

    tokens = train.batch_size * train.seq_len
    return Job(
        setup=setup,
        iteration=iteration,
        data=data_iter,
        frozen=frozen,
        throughput=lambda seconds: {"tokens_per_s": tokens / seconds},
        desc=stage.kind,
    )
