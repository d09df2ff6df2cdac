"""``r1jax train`` for GRPO: the config -> objects wiring around ``r1jax.train.grpo.train``.

    r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_grpo_tiny

Builds the model/mesh/optimizer (``loop.build_setup``), the tokenizer and the RL prompt pipeline
(``make_rl_dataset``), one ``CompositeReward`` (its process pool lives for the whole run), the
``Sampler``, the jitted train step and log-prob function; restores the latest checkpoint (state,
reference params, data-iterator position) or starts fresh; then runs the loop with metrics
(JSONL + TensorBoard), a progress bar, checkpoints every N steps and on SIGTERM, and an evaluation
hook (pass@1 over k samples at temperature 0.6 / top-p 0.95 on held-out prompts).

Multi-process (a pod, ``launch/local.sh``): every process builds the same global prompt batch
and keeps its data shard's contiguous block of it (``make_rl_dataset``), samples them with the
sampler running over the global mesh, scores its completions in its own reward pool, and the
rows are assembled into one global batch for the update; advantages and metrics are computed
over all processes' rows. The global batch, and so the run, is the same on any process count.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from r1jax import multihost
from r1jax.checkpoint import CHECKPOINTS, Checkpointer
from r1jax.model import ModelConfig
from r1jax.rewards import CompositeReward
from r1jax.sampling import Sampler
from r1jax.train import loop as loop_lib
from r1jax.train import objectives
from r1jax.train.grpo import GRPOParts, LoopOptions, grpo_iteration, sample_fn_for
from r1jax.train.metrics import MetricsWriter, Progress
from r1jax.train.preemption import PreemptionGuard
from r1jax.train.rollout import ClippedVocabTokenizer, RolloutOptions, sample_and_score
from r1jax.train.state import abstract_train_state, create_train_state, refresh_frozen
from r1jax.train.step import check_microbatches, make_logprobs_fn, make_train_step

PROGRESS_KEYS = ("reward/total", "accuracy", "response_length/mean", "kl")


def split_grpo_config(cfg: Mapping) -> tuple[RolloutOptions, objectives.GRPOOptions, LoopOptions]:
    """The flat ``config.grpo`` section -> (rollout, loss, loop) options; unknown keys raise."""
    cfg = dict(cfg)
    if "stop_strings" in cfg:
        cfg["stop_strings"] = tuple(cfg["stop_strings"])
    out, used = [], set()
    for cls in (RolloutOptions, objectives.GRPOOptions, LoopOptions):
        names = {f.name for f in dataclasses.fields(cls)}
        out.append(cls(**{k: v for k, v in cfg.items() if k in names}))
        used |= names
    unknown = set(cfg) - used
    if unknown:
        raise ValueError(f"config.grpo: unknown fields {sorted(unknown)}; known {sorted(used)}")
    rollout, loss, loop = out
    if loss.temperature != rollout.temperature:
        raise ValueError("config.grpo.temperature is shared by the sampler and the loss")
    if loss.tis_cap is not None and not rollout.keep_sampler_logprobs:
        rollout = dataclasses.replace(rollout, keep_sampler_logprobs=True)
    return rollout, loss, loop


def make_reward(config) -> CompositeReward:
    """One ``CompositeReward`` from ``config.rewards`` with ``config.reward_pool`` options."""
    pool = dict(config.get("reward_pool") or {})
    return CompositeReward.from_config(config.rewards.to_dict(), **pool)


def restore_or_create(ckpt: Checkpointer, setup, seed: int, with_reference: bool, init_params=None):
    """(state, data iterator state or None); the reference params are saved and restored with
    the state (beta > 0), or made a copy of the initial policy for a fresh run. A fresh run starts
    from ``init_params`` when given (e.g. the SFT stage's model), else from a random init."""
    frozen_config = setup.model_config if with_reference else None
    if ckpt.latest_step() is not None:
        target = abstract_train_state(
            setup.model_config, setup.optimizer, setup.mesh, frozen_config=frozen_config
        )
        state, data_state, _ = ckpt.restore(target)
        return state, data_state
    state = create_train_state(
        setup.model_config, setup.optimizer, jax.random.key(seed), setup.mesh, params=init_params
    )
    return (refresh_frozen(state) if with_reference else state), None


def make_eval_fn(config, parts: GRPOParts, tokenizer):
    """``fn(state, step) -> metrics``: k samples (T 0.6, top-p 0.95) per held-out prompt, scored
    with the run's reward; reports mean reward per component and accuracy (pass@1 over k)."""
    from r1jax.data import make_rl_dataset

    ev = config.get("eval") or {}
    num_prompts, k = int(ev.get("num_prompts", 16)), int(ev.get("num_samples", 4))
    shard = multihost.batch_feed(parts.mesh, num_prompts, "config.eval.num_prompts")
    dataset = make_rl_dataset(
        loop_lib.make_source(config.data),
        tokenizer,
        batch_size=num_prompts,
        seed=int(ev.get("seed", config.data.seed + 1)),
        shard_index=shard.index,
        shard_count=shard.count,
    )
    prompts = next(iter(dataset))
    opts = dataclasses.replace(
        parts.rollout,
        num_samples=k,
        temperature=float(ev.get("temperature", 0.6)),
        top_p=float(ev.get("top_p", 0.95)),
        dynamic_sampling=False,
    )
    eval_parts = dataclasses.replace(parts, rollout=opts)

    def eval_fn(state, step):
        sample_fn = sample_fn_for(state, eval_parts, 1_000_000 + step)
        ro = sample_and_score(prompts, lambda p: sample_fn(p, 0), parts.reward, tokenizer, opts)
        mean = lambda x: float(np.mean(multihost.gather_shards(x, parts.mesh)))  # all rows
        out = {f"reward/{n}": mean(v) for n, v in sorted(ro.components.items())}
        out["reward/total"] = mean(ro.rewards)
        out["response_length/mean"] = mean(ro.lengths)
        if parts.loop.accuracy_key in ro.components:
            out["pass@1"] = mean((ro.components[parts.loop.accuracy_key] > 0.5).astype(np.float32))
        return out

    return eval_fn


def build(config, workdir: Path):
    """(setup, parts, tokenizer, dataset) for a GRPO config."""
    from r1jax.data import make_rl_dataset

    rollout, loss, loop = split_grpo_config(config.grpo)
    model_config = ModelConfig.from_mapping(config.model)
    frozen_config = model_config if loss.beta > 0 else None
    setup = loop_lib.build_setup(config, objectives.grpo(model_config, loss), frozen_config)
    tokenizer = ClippedVocabTokenizer(loop_lib.make_tokenizer(config.data, workdir))
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(
            f"tokenizer vocab {tokenizer.vocab_size} > config.model.vocab_size "
            f"{model_config.vocab_size}"
        )
    # This process's share of each global prompt batch: its data shard's contiguous block.
    rows = loop.num_prompts * rollout.num_samples
    check_microbatches(rows, setup.loop.num_microbatches, "config.grpo.num_prompts x num_samples")
    shard = multihost.batch_feed(setup.mesh, loop.num_prompts, "config.grpo.num_prompts")
    dataset = make_rl_dataset(
        loop_lib.make_source(config.data),
        tokenizer,
        batch_size=loop.num_prompts,
        seed=config.data.seed,
        buckets=tuple(config.data.get("buckets", (64, 128, 256, 512))),
        shard_index=shard.index,
        shard_count=shard.count,
    )
    step_fn = make_train_step(
        model_config,
        setup.objective,
        setup.optimizer,
        setup.mesh,
        num_microbatches=setup.loop.num_microbatches,
        frozen_config=frozen_config,
        schedule=setup.schedule,
    )
    parts = GRPOParts(
        sampler=Sampler(model_config, mesh=setup.mesh, pad_id=tokenizer.pad_id),
        reward=make_reward(config),
        tokenizer=tokenizer,
        step_fn=step_fn,
        logprobs_fn=make_logprobs_fn(model_config, setup.mesh, temperature=loss.temperature),
        rollout=rollout,
        loss=loss,
        loop=loop,
        pad_id=tokenizer.pad_id,
        mesh=setup.mesh,
    )
    return setup, parts, tokenizer, dataset


def run(config, workdir: str | Path, *, init_params=None) -> dict[str, float]:
    """Runs (or resumes) a GRPO job; returns the last logged metrics.

    ``init_params``: the policy to start a fresh run from (ignored when resuming).
    """
    workdir = Path(workdir)
    setup, parts, tokenizer, dataset = build(config, workdir)
    ckpt = Checkpointer(
        workdir / CHECKPOINTS,
        save_every=setup.loop.checkpoint_every,
        keep=setup.loop.keep_checkpoints,
    )
    try:
        state, data_state = restore_or_create(
            ckpt, setup, config.seed, parts.loss.beta > 0, init_params=init_params
        )
        data_iter = iter(dataset)
        if data_state is not None:
            data_iter.set_state(data_state)
        eval_fn = make_eval_fn(config, parts, tokenizer) if setup.loop.eval_every else None
        return _loop(state, data_iter, parts, setup.loop, config, workdir, ckpt, eval_fn)
    finally:
        parts.reward.close()
        ckpt.close()


def _loop(state, data_iter, parts, loop, config, workdir, ckpt, eval_fn) -> dict[str, float]:
    """Iterations with logging, evaluation, checkpoints and the preemption guard."""
    save = lambda s, force=False: ckpt.save(
        s, data_state=data_iter.get_state(), config=config.to_dict(), force=force
    )
    step = int(jax.device_get(state.step)) // parts.loop.mu
    data = _PoppingStats(data_iter)
    last: dict[str, float] = {}
    with (
        PreemptionGuard() as guard,
        MetricsWriter(workdir) as writer,
        Progress(loop.steps, initial=step, keys=PROGRESS_KEYS, desc="grpo") as bar,
    ):
        while step < loop.steps:
            state, metrics = grpo_iteration(state, data, parts, step)
            step += 1
            metrics["data/dropped_too_long"] = float(data.dropped)
            if step % loop.log_every == 0 or step == loop.steps:
                last = writer.write(step, metrics)
            bar.update(step, metrics)
            if eval_fn is not None and step % loop.eval_every == 0:
                writer.write(step, {f"eval/{k}": v for k, v in eval_fn(state, step).items()})
            if guard.stop:
                save(state, force=True)
                print(f"preempted: checkpoint saved at step {step}", flush=True)
                return last
            save(state)
        save(state, force=True)
    return last


class _PoppingStats:
    """The data iterator with each batch's ``stats`` popped (Python ints, never sent to jit)."""

    def __init__(self, it):
        self.it, self.dropped = it, 0

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        self.dropped += int(batch.pop("stats", {}).get("dropped_too_long", 0))
        return batch
