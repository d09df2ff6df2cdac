"""GRPO as a ``loop.Job``: the config -> objects wiring around ``r1jax.train.grpo``.

    r1jax train --config=configs/grpo_tiny.py --workdir=/tmp/r1jax_grpo_tiny

Builds the tokenizer and the RL prompt pipeline (``make_rl_dataset``), one ``CompositeReward``
(its process pool lives for the whole run), the ``Sampler``, the jitted train step and log-prob
function; each loop iteration is ``grpo.grpo_iteration`` (rollout, advantages, update). The
evaluation hook samples ``eval.num_samples`` completions per held-out prompt with the eval
section's settings (R1's T 0.6 / top-p 0.95) and reports mean rewards and pass@1.

With ``config.lora.rank > 0`` the state trains adapters over a frozen base (``init_from``,
quantized per ``config.lora.base_quant``; ``r1jax.train.adapters``): the sampler and the
log-prob recompute run the base with adapters attached, the KL reference is the base itself,
and checkpoints hold the adapters and their optimizer state only.

Multi-process (a pod, ``launch/local.sh``): every process builds the same global prompt batch
and keeps its data shard's contiguous block of it, samples them with the sampler running over
the global mesh, scores its completions in its own reward pool, and the rows are assembled into
one global batch for the update; advantages and metrics are computed over all processes' rows.
The global batch, and so the run, is the same on any process count.
"""

from __future__ import annotations

import collections
import dataclasses
import sys
from pathlib import Path

import numpy as np

from r1jax import distributed, multihost
from r1jax.config import Stage
from r1jax.evaluation.metrics import pass_at_1
from r1jax.evaluation.stage import DEFAULT_TASK_PROMPTS
from r1jax.rewards import CompositeReward
from r1jax.sampling import Sampler
from r1jax.train import adapters, objectives
from r1jax.train.grpo import GRPOParts, grpo_iteration, sample_fn_for
from r1jax.train.prompt_sharing import prompt_groups
from r1jax.train.rollout import ClippedVocabTokenizer, sample_and_score
from r1jax.train.setup import Job, build_setup, check_vocab, make_source, make_tokenizer
from r1jax.train.step import check_microbatches, make_logprobs_fn, make_train_step

PROGRESS_KEYS = (
    "reward/total",
    "accuracy",
    "response_length/mean",
    "kl",
    "sample/useful_tokens_per_s",
)


def make_reward(stage: Stage, mesh=None, tokenizer=None):
    """One ``CompositeReward`` from ``config.rewards`` with ``config.reward_pool`` options; with
    a ``reward_model_from`` link, a ``MixedReward`` of it and that reward model on ``mesh``."""
    rules = CompositeReward.from_config(stage.rewards, **dataclasses.asdict(stage.reward_pool))
    path = stage.link("reward_model_from")
    if not path:
        return rules
    from r1jax.checkpoint import load_params
    from r1jax.train.model_reward import MixedReward, ModelScorer

    config, params = load_params(path, mesh=mesh)
    if not config.score_head:
        raise ValueError(
            f"reward_model_from={path}: not a reward model (its model has no score head)"
        )
    options = stage.reward_model
    length = options.max_length or max(stage.data.buckets) + stage.grpo.max_new_tokens + 1
    return MixedReward(rules, ModelScorer(config, params, mesh, tokenizer, length), options)


def make_eval_fn(stage: Stage, parts: GRPOParts, tokenizer):
    """``fn(state, step) -> metrics``: ``eval.num_samples`` samples per held-out prompt, scored
    with the run's reward; mean reward per component, length and pass@1 (over the samples)."""
    from r1jax.data import make_rl_dataset

    ev = stage.eval
    num_prompts = ev.num_prompts or DEFAULT_TASK_PROMPTS
    shard = multihost.batch_feed(parts.mesh, num_prompts, "config.eval.num_prompts")
    dataset = make_rl_dataset(
        make_source(stage.data),
        tokenizer,
        batch_size=num_prompts,
        seed=ev.seed,
        shard_index=shard.index,
        shard_count=shard.count,
    )
    prompts = next(iter(dataset))
    opts = dataclasses.replace(
        parts.grpo,
        num_samples=ev.num_samples,
        max_new_tokens=ev.max_new_tokens,
        temperature=ev.temperature,
        top_k=ev.top_k,
        top_p=ev.top_p,
        dynamic_sampling=False,
        overlong_cache=0,
    )
    eval_parts = dataclasses.replace(parts, grpo=opts)

    def eval_fn(state, step):
        sample_fn = sample_fn_for(state, eval_parts, 1_000_000 + step)
        ro = sample_and_score(prompts, lambda p: sample_fn(p, 0), parts.reward, tokenizer, opts)
        gather = lambda x: multihost.gather_shards(x, parts.mesh)  # all rows
        out = {f"reward/{n}": float(np.mean(gather(v))) for n, v in sorted(ro.components.items())}
        out["reward/total"] = float(np.mean(gather(ro.rewards)))
        out["response_length/mean"] = float(np.mean(gather(ro.lengths)))
        if parts.grpo.accuracy_key in ro.components:
            out["pass@1"] = pass_at_1(gather(ro.components[parts.grpo.accuracy_key]))
        return out

    return eval_fn


def build(stage: Stage, workdir: Path) -> Job:
    """The job of a "grpo" stage."""
    from r1jax.data import make_rl_dataset

    grpo, model_config = stage.grpo, stage.model
    setup = build_setup(stage, model_config if grpo.beta > 0 else None)
    tokenizer = ClippedVocabTokenizer(make_tokenizer(stage.data, workdir))
    check_vocab(tokenizer, model_config)
    # This process's share of each global prompt batch: its data shard's contiguous block.
    rows = grpo.num_prompts * grpo.num_samples
    check_microbatches(rows, stage.train.num_microbatches, "config.grpo.num_prompts x num_samples")
    shard = multihost.batch_feed(setup.mesh, grpo.num_prompts, "config.grpo.num_prompts")
    dataset = make_rl_dataset(
        make_source(stage.data),
        tokenizer,
        batch_size=grpo.num_prompts,
        seed=stage.data.seed,
        buckets=stage.data.buckets,
        shard_index=shard.index,
        shard_count=shard.count,
    )
    pad = tokenizer.pad_id
    parts = GRPOParts(
        sampler=Sampler(
            model_config, mesh=setup.mesh, pad_id=tokenizer.pad_id, **sampler_options(grpo)
        ),
        reward=make_reward(stage, setup.mesh, tokenizer),
        tokenizer=tokenizer,
        **update_fns(stage, setup),
        grpo=grpo,
        pad_id=pad,
        mesh=setup.mesh,
        prompt_length=max(stage.data.buckets),
    )
    data = _PoppingStats(iter(dataset))

    def iteration(state, step, guard):
        state, metrics = grpo_iteration(state, data, parts, step, guard)
        return state, {**metrics, "data/dropped_too_long": float(data.dropped)}

    return Job(
        setup=setup,
        iteration=iteration,
        data=data,
        frozen=adapters.stage_base(stage, setup),
        reference=grpo.beta > 0 and setup.lora is None,
        steps_per_iteration=grpo.mu,
        progress_keys=PROGRESS_KEYS,
        desc="grpo",
        eval_fn=make_eval_fn(stage, parts, tokenizer) if stage.train.eval_every else None,
        close=parts.reward.close,
    )


def update_fns(stage: Stage, setup) -> dict:
    """``GRPOParts``' ``step_fn``, ``logprobs_fn`` and ``prompt_groups``: the jitted update and
    log-prob functions, sharing prompts where ``prompt_sharing.prompt_groups`` says so."""
    grpo, model_config, lora = stage.grpo, stage.model, setup.lora
    microbatches = stage.train.num_microbatches
    groups = prompt_groups(
        grpo, model_config, setup.mesh, num_microbatches=microbatches,
        max_length=max(stage.data.buckets) + grpo.max_new_tokens,
    )  # fmt: skip
    step_fn = make_train_step(
        *(model_config, objectives.grpo(model_config, grpo, groups), setup.optimizer, setup.mesh),
        num_microbatches=microbatches,
        frozen_config=setup.frozen_config,  # LoRA: None, the reference is the base
        schedule=setup.schedule,
        lora=lora,
    )
    logprobs_fn = make_logprobs_fn(
        model_config, setup.mesh, temperature=grpo.temperature, lora=lora, prompt_groups=groups
    )
    if distributed.is_main_process():
        shared = f"shared by its {groups} rows" if groups > 1 else "run in each of its rows"
        print(
            f"grpo: each prompt's forward in the update is {shared} "
            f"(config.grpo.share_prompts={grpo.share_prompts!r})",
            file=sys.stderr,
            flush=True,
        )
    return dict(step_fn=step_fn, logprobs_fn=logprobs_fn, prompt_groups=groups)


def sampler_options(grpo) -> dict:
    """The ``Sampler`` keywords of ``config.grpo`` (continuous batching's slots, pages)."""
    return dict(
        slots=grpo.decode_slots,
        min_slots=grpo.decode_min_slots,
        page_size=grpo.decode_page_size,
        pages=grpo.decode_pages,
        record_routing=grpo.routing_replay,
    )


class _PoppingStats:
    """The data iterator with each batch's ``stats`` popped (Python ints, never sent to jit).

    ``pending``: the states from before each batch drawn but not yet trained on (a partial-
    rollout pool's batches in flight, oldest first); a checkpoint saves the oldest, so a
    resumed run, whose pool starts empty, draws those prompts again instead of skipping them.
    """

    def __init__(self, it):
        self.it, self.dropped, self.pending = it, 0, collections.deque()

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        self.dropped += int(batch.pop("stats", {}).get("dropped_too_long", 0))
        return batch

    def position(self) -> dict:
        """The pipeline's state and the count so far (a resumed run goes on counting)."""
        return {"pipeline": self.it.get_state(), "dropped_too_long": self.dropped}

    def get_state(self) -> dict:
        """What a checkpoint saves: the ``position`` from before the oldest ``pending`` batch,
        or the current one."""
        return self.pending[0] if self.pending else self.position()

    def set_state(self, state: dict) -> None:
        if "pipeline" in state:  # else a checkpoint from before the count was saved
            self.dropped, state = int(state["dropped_too_long"]), state["pipeline"]
        self.it.set_state(state)
