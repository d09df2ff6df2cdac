"""The GRPO loop: prompts -> sampler (jit) -> rewards (process pool) -> advantages -> update (jit).

Each iteration has three visible stages:

  1. rollout:  ``rollout.collect`` draws prompt batches, samples G completions per prompt with the
               jitted ``Sampler`` reading the train state's own on-device params (no copy to
               another engine), and scores them on the host with one long-lived
               ``CompositeReward`` (its process pool); DAPO dynamic sampling repeats this until
               the batch holds enough informative groups;
  2. batch:    advantages over the WHOLE batch of complete groups, then the GRPO batch (packed
               into rows of ``grpo.pack_length`` when set: ``r1jax.train.grpo_packing``);
  3. update:   ``update`` recomputes pi_old with the current params when mu > 1 (or for the
               truncated-IS correction) and takes mu jitted train steps on the batch.

``train`` runs that loop over explicit objects (tests and notebooks build them by hand);
``r1jax.train.grpo_job`` builds them from a config for the one training loop
(``r1jax.train.loop``: metrics files, checkpoints with the data-iterator state, evaluation).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np

from r1jax import multihost
from r1jax.config import GRPOConfig
from r1jax.train import grpo_packing, partial_rollouts, rl_metrics
from r1jax.train import rollout as rollout_lib
from r1jax.train.prompt_sharing import check_prompt_groups
from r1jax.train.state import TrainState, refresh_frozen
from r1jax.train.step import batch_sharding


@dataclasses.dataclass
class GRPOParts:
    """Everything one GRPO iteration uses, built once.

    sampler: a ``r1jax.sampling.Sampler`` (compiled programs cached per bucket).
    reward: anything with ``evaluate(prompts, completions, **fields) -> RewardResult``, normally
      one ``CompositeReward`` kept alive for the whole run (its pool is reused).
    step_fn / logprobs_fn: ``make_train_step(...)`` and ``make_logprobs_fn(...)``.
    mesh: the training mesh; with several processes each one samples and scores its share of
    the prompts (``grpo.num_prompts`` is the global count) and the batch is assembled on it.
    prompt_groups: the ``prompt_groups`` step_fn and logprobs_fn were built with (each batch's
    rows are checked to come in such groups before the update; ``prompt_sharing``).
    """

    sampler: Any
    reward: Any
    tokenizer: Any
    step_fn: Callable[[TrainState, dict], tuple[TrainState, dict]]
    logprobs_fn: Callable[[dict, dict], jax.Array] | None
    grpo: GRPOConfig
    pad_id: int = 0
    mesh: Any = None
    prompt_length: int = 0  # partial rollouts: the pool's prompt width (the largest bucket)
    pool: Any = None  # partial rollouts: the ``RolloutPool``, made at the first iteration
    prompt_groups: int = 1


def recomputes_old_logprobs(parts: GRPOParts) -> bool:
    """pi_old comes from the trainer when mu > 1 or under the TIS correction (which compares it
    with the sampler's log-probs); with mu = 1 and no TIS the sampler's log-probs are pi_old."""
    return parts.grpo.mu > 1 or parts.grpo.tis_cap is not None


def update(state: TrainState, batch: dict, parts: GRPOParts) -> tuple[TrainState, dict]:
    """Stage 3: mu jitted train steps on one GRPO batch; metrics of the last one (host floats).

    When mu > 1 (or under TIS) ``old_logprobs`` is recomputed from the current params BEFORE the
    first inner update, so the first step's ratio is exactly 1 and later steps clip against it.
    """
    if recomputes_old_logprobs(parts):
        batch = dict(batch, old_logprobs=parts.logprobs_fn(state.model_params(), batch))
    metrics = {}
    for _ in range(parts.grpo.mu):
        state, metrics = parts.step_fn(state, batch)
    return state, {k: float(v) for k, v in jax.device_get(metrics).items()}


def sample_fn_for(state: TrainState, parts: GRPOParts, step: int):
    """``fn(prompts, round) -> SampleOutput``: the jitted sampler on the state's own params,
    keyed by (state key, step, round) so a resumed run draws the same samples."""
    key = jax.random.fold_in(state.key(), step)
    opts = parts.grpo
    eos = parts.tokenizer.eos_id
    stop_ids = (eos,) if opts.stop_at_eos and eos is not None else ()

    def fn(prompts, round_index):
        return parts.sampler(
            state.model_params(),
            prompts,
            rng=jax.random.fold_in(key, round_index),
            num_samples=opts.num_samples,
            max_new_tokens=opts.max_new_tokens,
            temperature=opts.temperature,
            top_k=opts.top_k,
            top_p=opts.top_p,
            stop_token_ids=stop_ids,
            stop_strings=opts.stop_strings,
            tokenizer=parts.tokenizer,
        )

    return fn


class _Timer:
    """Wall time of calls to a wrapped function, accumulated in ``seconds``."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


class _SamplerWork(_Timer):
    """A timed sampler that also sums each call's ``SampleOutput.work()``."""

    def __init__(self, fn):
        super().__init__(fn)
        self.work: collections.Counter = collections.Counter()

    def __call__(self, *args, **kwargs):
        out = super().__call__(*args, **kwargs)
        self.work.update(out.work())
        return out

    def metrics(self, mesh=None) -> dict[str, float]:
        """``sample/useful_tokens`` (completion tokens kept; partial rollouts: the tokens the
        pool's rows gained during the iteration, net of rewinds) and ``.../useful_tokens_per_s``
        (per second of sampling), ``sample/slot_utilisation`` (kept tokens / slot-steps
        computed; the rest is rows that had finished, or tokens past a stop string) and
        ``sample/prompt_padding`` (the padding fraction of the prefill batch),
        ``sample/queue_wait_steps`` (decode steps a row waited for a continuous-batching slot,
        mean); over every process's rows (a collective)."""
        keys = ("useful_tokens", "slot_steps", "prompt_padding", "prompt_slots")
        keys += ("queue_wait_steps", "rows")
        counts = np.asarray([[self.work[k] for k in keys]], np.float64)
        if mesh is not None:
            counts = multihost.gather_shards(counts, mesh)
        work = dict(zip(keys, counts.sum(0).tolist(), strict=True))
        return {
            "sample/useful_tokens": work["useful_tokens"],
            "sample/useful_tokens_per_s": work["useful_tokens"] / max(self.seconds, 1e-9),
            "sample/slot_utilisation": work["useful_tokens"] / max(work["slot_steps"], 1),
            "sample/prompt_padding": work["prompt_padding"] / max(work["prompt_slots"], 1),
            "sample/queue_wait_steps": work["queue_wait_steps"] / max(work["rows"], 1),
        }


class _TimedReward:
    def __init__(self, reward):
        self.evaluate = _Timer(reward.evaluate)


def grpo_iteration(
    state: TrainState, data: Iterator[Mapping], parts: GRPOParts, step: int, guard=None
) -> tuple[TrainState, dict[str, float]]:
    """One GRPO iteration (the three stages of the module docstring); returns its metrics.

    ``guard()``: the transfer guard the update runs under (the batch is placed on the mesh
    explicitly before it); None runs the update unguarded.
    """
    start = time.perf_counter()
    next_prompts, sample_fn, partial = rollout_source(state, data, parts, step)
    reward = _TimedReward(parts.reward)
    rollout, info = rollout_lib.collect(  # 1. rollout: sampler (jit) + rewards (pool)
        next_prompts,
        sample_fn,
        reward,
        parts.tokenizer,
        parts.grpo,
        num_prompts=local_num_prompts(parts),
        pad_id=parts.pad_id,
        all_done=multihost.all_processes,
        owner_rewards=functools.partial(owner_rewards, mesh=parts.mesh),
    )
    advantages = local_advantages(rollout.rewards, parts.grpo, parts.mesh)  # 2. batch
    batch = rollout_lib.build_grpo_batch(rollout, advantages, parts.grpo)
    check_prompt_groups(batch, parts.prompt_groups)
    batch, pack_info = pack(batch, parts)
    if jax.process_count() > 1:  # this process's rows -> global arrays on the mesh
        batch = multihost.host_local_to_global(batch, parts.mesh)
    elif parts.mesh is not None:  # explicit placement: the update may run under a guard
        batch = jax.device_put(batch, batch_sharding(parts.mesh))
    update_start = time.perf_counter()
    state = maybe_refresh_reference(state, parts, step)
    with guard() if guard is not None else contextlib.nullcontext():
        state, step_metrics = update(state, batch, parts)  # 3. update (jit)
    end = time.perf_counter()
    info = dynamic_counts(info, parts.mesh)
    metrics = rollout_metrics(rollout, parts) | info | rl_metrics.loss_metrics(step_metrics)
    metrics |= pack_info | sample_fn.metrics(parts.mesh)
    metrics |= partial.metrics() if partial is not None else {}
    metrics |= {
        "time/sample": sample_fn.seconds,
        "time/score": reward.evaluate.seconds,
        "time/update": end - update_start,
        "time/step": end - start,
    }
    return state, metrics


def rollout_source(state: TrainState, data: Iterator[Mapping], parts: GRPOParts, step: int):
    """``collect``'s ``(next_prompts, sample_fn)`` (the sampler timed and its work counted)
    and the ``PartialRounds`` behind them with partial rollouts (else None)."""
    if not parts.grpo.partial_lanes:
        return (lambda _: next(data)), _SamplerWork(sample_fn_for(state, parts, step)), None
    if parts.pool is None:
        num_prompts = local_num_prompts(parts)
        parts.pool = partial_rollouts.make_pool(
            parts, state, num_prompts, parts.prompt_length, step
        )
    rounds = partial_rollouts.PartialRounds(parts.pool, data, state.model_params(), step)
    work = _SamplerWork(rounds.sample_fn)

    def next_prompts(round_index):  # the pool decodes here: sampling time
        start = time.perf_counter()
        try:
            return rounds.next_prompts(round_index)
        finally:
            work.seconds += time.perf_counter() - start

    return next_prompts, work, rounds


def pack(batch: dict, parts: GRPOParts) -> tuple[dict, dict[str, float]]:
    """The batch packed into rows of ``grpo.pack_length`` (``grpo_packing``), ordered for the
    step's micro-batches, and its statistics (this process's rows); with 0, the batch as is."""
    if not parts.grpo.pack_length:
        return batch, {}
    return grpo_packing.pack_grpo_batch(
        batch,
        parts.grpo.pack_length,
        num_microbatches=getattr(parts.step_fn, "num_microbatches", 1),
        pad_id=parts.pad_id,
    )


def maybe_refresh_reference(state: TrainState, parts: GRPOParts, step: int) -> TrainState:
    """Copies the policy into the reference every ``ref_refresh_every`` steps (beta > 0 only)."""
    every = parts.grpo.ref_refresh_every
    if parts.grpo.beta > 0 and every > 0 and step > 0 and step % every == 0:
        return refresh_frozen(state)
    return state


def dynamic_counts(info: dict[str, float], mesh=None) -> dict[str, float]:
    """``collect``'s group counts summed over data shards (the rounds are the same on all)."""
    counts = np.asarray([list(info.values())], np.float64)
    totals = (counts if mesh is None else multihost.gather_shards(counts, mesh)).sum(0)
    return dict(zip(info, map(float, totals), strict=True)) | {
        "dynamic/rounds": info["dynamic/rounds"]
    }


def local_num_prompts(parts: GRPOParts) -> int:
    """Groups this process samples per iteration: its data shard's share of
    ``grpo.num_prompts`` (all of them with one process or without a mesh)."""
    if parts.mesh is None or jax.process_count() == 1:
        return parts.grpo.num_prompts
    shard = multihost.batch_feed(parts.mesh, parts.grpo.num_prompts, "grpo.num_prompts")
    return parts.grpo.num_prompts // shard.count


def owner_rewards(rewards_R: np.ndarray, mesh=None) -> np.ndarray:
    """This process's rows' rewards as the first process of its data shard scored them (a
    collective with several processes)."""
    rewards_R = np.asarray(rewards_R, np.float32)
    if mesh is None or jax.process_count() == 1:
        return rewards_R
    everyone = multihost.gather_shards(rewards_R, mesh)
    return everyone[multihost.data_shard(mesh).rows(len(everyone))]


def local_advantages(rewards_R: np.ndarray, options: GRPOConfig, mesh=None) -> np.ndarray:
    """Advantages of this process's rows, computed over the global batch (the same as one
    process holding every row; it matters for ``advantage_scale="batch"``).

    Taken from the global rewards as the first process of each data shard scored them, so that
    processes sharing a shard feed identical rows even if a reward differed between them (a
    sandbox timeout)."""
    rewards_R = np.asarray(rewards_R, np.float32)
    if mesh is None or jax.process_count() == 1:
        return rollout_lib.compute_advantages(rewards_R, options)
    advantages = rollout_lib.compute_advantages(multihost.gather_shards(rewards_R, mesh), options)
    return advantages[multihost.data_shard(mesh).rows(len(advantages))]


def rollout_metrics(rollout: rollout_lib.Rollout, parts: GRPOParts) -> dict[str, float]:
    """Reward per component, accuracy, format rate, lengths, truncation, reflection words; over
    every process's rows (gathered: each process scored its own)."""
    gather = lambda x: multihost.gather_shards(x, parts.mesh) if parts.mesh else np.asarray(x)
    rewards = gather(rollout.rewards)
    truncated = gather((np.asarray(rollout.finish_reason) == "length").astype(np.int32)) > 0
    return (
        rl_metrics.reward_metrics(
            rewards,
            {k: gather(v) for k, v in sorted(rollout.components.items())},
            accuracy_key=parts.grpo.accuracy_key,
            format_key=parts.grpo.format_key,
        )
        | rl_metrics.length_metrics(gather(rollout.lengths), np.where(truncated, "length", "stop"))
        | rl_metrics.reflection_stats(gather(rl_metrics.reflection_counts(rollout.completions)))
        | rl_metrics.group_metrics(rewards, parts.grpo.num_samples)
    )


def train(
    state: TrainState,
    data: Iterator[Mapping],
    parts: GRPOParts,
    *,
    num_steps: int,
    on_step: Callable[[TrainState, int, dict], None] | None = None,
) -> tuple[TrainState, list[dict[str, float]]]:
    """Runs GRPO iterations from ``state.step`` to ``num_steps``; returns the state and history.

    ``on_step(state, step, metrics)`` runs after each iteration (logging, checkpoints, eval).
    """
    history = []
    for step in range(int(jax.device_get(state.step)) // parts.grpo.mu, num_steps):
        state, metrics = grpo_iteration(state, data, parts, step)
        history.append(metrics)
        if on_step is not None:
            on_step(state, step, metrics)
    return state, history
