"""The one training loop, for SFT, distillation, GRPO and the reward model.

    r1jax train --config=configs/sft_tiny.py --workdir=/tmp/sft
    r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/grpo

``run(stage, workdir)`` asks the stage's objective for a ``Job`` (``sft_job.build`` for "sft"
and "distill", ``grpo_job.build`` for "grpo", ``reward_model_job.build`` for "reward_model"
(started from a policy, it swaps the LM head for a fresh score head): the objective, its
frozen params and its batch source, as one ``iteration`` callable) and owns everything around
it: restore-or-create (the latest checkpoint with the data iterator's position, or a fresh
state), the replication report, the preemption guard (SIGTERM -> checkpoint -> exit), the
metrics writer (JSONL + TensorBoard) and progress bar, the evaluation hook, periodic checkpoints
and the transfer guard the jitted update runs under (an accidental host->device copy inside it
fails loudly). A resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax

from r1jax import sharding
from r1jax.checkpoint import CHECKPOINTS, Checkpointer
from r1jax.config import TRAINING_KINDS, Stage
from r1jax.model.reward import with_score_head
from r1jax.train.metrics import MetricsWriter, Progress
from r1jax.train.preemption import Preempted, PreemptionGuard
from r1jax.train.resume_check import check_resumable
from r1jax.train.setup import Job, check_shapes
from r1jax.train.state import TrainState, abstract_train_state, create_train_state, refresh_frozen


def restore_or_create(ckpt: Checkpointer, job: Job, seed: int, params=None, config=None):
    """(state, data iterator state or None): the latest checkpoint if any (its stored config
    checked against ``config``, ``resume_check``), else a fresh state from ``params`` (e.g. the
    previous stage's model) or a random init with ``seed``."""
    setup = job.setup
    if ckpt.latest_step() is not None:
        frozen_config = setup.frozen_config if job.reference else None
        target = abstract_train_state(
            setup.model_config,
            setup.optimizer,
            setup.mesh,
            frozen_config=frozen_config,
            lora=setup.lora,
        )
        state, data_state, stored = ckpt.restore(target)
        if config is not None:
            check_resumable(stored, config, f"{ckpt.directory}/{ckpt.latest_step()}")
        if job.frozen is not None:
            state = state.replace(frozen=job.frozen)
        return state, data_state
    state = create_train_state(
        setup.model_config,
        setup.optimizer,
        jax.random.key(seed),
        setup.mesh,
        params=params,
        frozen=job.frozen,
        frozen_config=setup.frozen_config if job.frozen is not None else None,
        lora=setup.lora,
    )
    return (refresh_frozen(state) if job.reference else state), None


def initial_params(path: str, job: Job):
    """A fresh run's starting model (``init_from``: an r1jax run or a Hugging Face directory),
    placed on the run's mesh; its shapes must be the configured model's."""
    from r1jax.checkpoint import load_params

    loaded, params = load_params(path, mesh=job.setup.mesh)
    check_shapes(loaded, job.setup.model_config, f"config.init_from={path}")
    return params


def build_job(stage: Stage, workdir: Path) -> Job:
    """The objective's job: the one place that dispatches on ``stage.kind``."""
    if stage.kind in ("sft", "distill"):
        from r1jax.train import sft_job

        return sft_job.build(stage, workdir)
    if stage.kind == "grpo":
        from r1jax.train import grpo_job

        return grpo_job.build(stage, workdir)
    if stage.kind == "reward_model":
        from r1jax.train import reward_model_job

        return reward_model_job.build(stage, workdir)
    raise ValueError(f"config.kind={stage.kind!r} is not a training kind ({TRAINING_KINDS})")


def run(stage: Stage, workdir: str | Path, *, init_params=None) -> dict[str, float]:
    """Runs (or resumes) a training stage; returns the last logged metrics.

    ``init_params``: the model a fresh run starts from (ignored when resuming); without it,
    the stage's ``init_from`` (a path) when set, else a random init.
    """
    workdir = Path(workdir)
    job = build_job(stage, workdir)
    train = stage.train
    ckpt = Checkpointer(
        workdir / CHECKPOINTS, save_every=train.checkpoint_every, keep=train.keep_checkpoints
    )
    try:
        if job.setup.lora is not None and init_params is not None:
            raise ValueError(
                "a LoRA stage (config.lora.rank > 0) reads its frozen base from init_from; "
                "it cannot start from another stage's in-memory params"
            )
        fresh = ckpt.latest_step() is None and job.setup.lora is None  # LoRA: base in the job
        if init_params is None and stage.link("init_from") and fresh:
            init_params = initial_params(stage.link("init_from"), job)
        if init_params is not None and stage.model.score_head and "score" not in init_params:
            init_params = with_score_head(  # a policy -> the reward model's starting point
                init_params, stage.model, jax.random.key(stage.seed + 1), job.setup.mesh
            )
        config = stage.to_dict()
        state, data_state = restore_or_create(ckpt, job, stage.seed, init_params, config)
        if data_state is not None:
            job.data.set_state(data_state)
        sharding.report_replication(state, stage.mesh)
        save = lambda state, force=False: ckpt.save(
            state,
            data_state=job.data.get_state(),
            config=config,
            force=force,
            include_frozen=job.reference,
        )
        return train_loop(job, state, train, workdir, save)
    finally:
        job.close()
        ckpt.close()


def train_loop(job: Job, state: TrainState, train, workdir: Path, save) -> dict[str, float]:
    """Iterations until ``train.steps`` with logging, evaluation, checkpoints and preemption."""
    step = int(jax.device_get(state.step)) // job.steps_per_iteration
    guard = lambda: jax.transfer_guard(train.transfer_guard)
    last: dict[str, float] = {}
    with (
        PreemptionGuard() as preemption,
        MetricsWriter(workdir, after_step=step) as writer,
        Progress(train.steps, initial=step, keys=job.progress_keys, desc=job.desc) as bar,
    ):
        tic, since = time.perf_counter(), 0
        while step < train.steps:
            state, metrics = job.iteration(state, step, guard)
            step, since = step + 1, since + 1
            if step % train.log_every == 0 or step == train.steps:
                metrics = jax.device_get(metrics)  # explicit: allowed by the guard
                toc = time.perf_counter()
                if job.throughput is not None:
                    metrics = {**metrics, **job.throughput((toc - tic) / since)}
                last = writer.write(step, metrics)
                bar.update(step, last)
                tic, since = toc, 0
            if job.eval_fn is not None and train.eval_every and step % train.eval_every == 0:
                results = job.eval_fn(state, step) or {}
                writer.write(step, {f"eval/{k}": v for k, v in results.items()})
            if preemption.stop:
                save(state, force=True)
                print(f"preempted: checkpoint saved at step {step}", flush=True)
                raise Preempted(step)
            save(state)
        save(state, force=True)
    return last
