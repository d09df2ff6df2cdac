"""The reward model as a ``loop.Job``: preference pairs -> the Bradley–Terry train step.

    r1jax train --config=configs/reward_model_tiny.py --workdir=/tmp/r1jax_rm

Each iteration takes the next global batch of pairs (``r1jax.data.make_preference_dataset``;
this process's rows assembled on the mesh as in SFT) and runs the jitted train step with the
``reward_model`` objective. The evaluation hook scores ``eval.num_prompts`` held-out pairs
(``eval.path``, else the data task drawn with ``eval.seed``) and reports the pairwise accuracy,
over all pairs and per record ``kind``, and the mean margin.
"""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from r1jax import multihost
from r1jax.config import Stage
from r1jax.evaluation.stage import DEFAULT_TASK_PROMPTS
from r1jax.model import param_shardings
from r1jax.model.reward import sequence_scores
from r1jax.train import reward_objective
from r1jax.train.setup import Job, build_setup, check_vocab, make_source, make_tokenizer
from r1jax.train.sft_job import global_batch
from r1jax.train.step import batch_sharding, check_microbatches, make_train_step


def pair_scores_fn(model_config, mesh):
    """Jitted ``fn(params, batch) -> (chosen f32 [B], rejected f32 [B])`` on ``mesh``."""
    batch_sh = batch_sharding(mesh)

    def fn(params, batch):
        score = lambda side: sequence_scores(
            params, batch[f"{side}_tokens"], batch[f"{side}_last"], model_config
        )
        return score("chosen"), score("rejected")

    jitted = jax.jit(
        fn, in_shardings=(param_shardings(model_config, mesh), batch_sh), out_shardings=batch_sh
    )

    def scores(params, batch):
        with jax.set_mesh(mesh):
            return jitted(params, batch)

    return scores


def pairwise_accuracy(chosen: np.ndarray, rejected: np.ndarray, kinds: list[str]) -> dict:
    """``accuracy`` (chosen > rejected; ties half), ``accuracy/<kind>`` and ``margin``."""
    won = np.where(chosen > rejected, 1.0, np.where(chosen == rejected, 0.5, 0.0))
    out = {"accuracy": float(won.mean()), "margin": float((chosen - rejected).mean())}
    kinds = np.asarray(kinds)
    for kind in sorted(set(kinds) - {""}):
        out[f"accuracy/{kind}"] = float(won[kinds == kind].mean())
    return out


def make_eval_fn(stage: Stage, setup, tokenizer, shard):
    """``fn(state, step) -> metrics``: pairwise accuracy on the held-out pairs (module doc).

    Every process builds the whole held-out batch (its kinds and mask are global) and feeds
    its data shard's rows; the scores are gathered back in global order."""
    from r1jax.data import get_task, make_preference_dataset

    ev, train = stage.eval, stage.train
    if ev.path:
        source = ev.path
    elif ev.task:
        source = get_task(ev.task, **dict(ev.task_options))
    elif stage.data.path:
        raise ValueError(
            "config.data.path is set: set config.eval.path to held-out preference pairs (the "
            "reward model's evaluation reads them)"
        )
    else:
        source = make_source(stage.data)  # the task drawn with eval.seed: other examples
    num = ev.num_prompts or DEFAULT_TASK_PROMPTS
    full = next(
        iter(
            make_preference_dataset(
                source, tokenizer, batch_size=num, seq_len=train.seq_len, seed=ev.seed, num_epochs=1
            )
        )
    )
    kinds, keep = np.asarray(full.pop("kinds")), full["pair_mask"] > 0
    full.pop("stats")
    rows = slice(shard.index * num // shard.count, (shard.index + 1) * num // shard.count)
    batch = global_batch({k: v[rows] for k, v in full.items()}, batch_sharding(setup.mesh), num)
    scores = pair_scores_fn(setup.model_config, setup.mesh)

    def eval_fn(state, step):
        chosen, rejected = (
            multihost.gather_shards(multihost.data_shard_rows(x, setup.mesh), setup.mesh)
            for x in scores(state.params, batch)
        )
        return pairwise_accuracy(chosen[keep], rejected[keep], list(kinds[keep]))

    return eval_fn


def build(stage: Stage, workdir: Path) -> Job:
    """The job of a "reward_model" stage."""
    from r1jax.data import make_preference_dataset

    setup = build_setup(stage)
    train = stage.train
    check_microbatches(train.batch_size, train.num_microbatches, "config.train.batch_size")
    shard = multihost.batch_feed(setup.mesh, train.batch_size, "config.train.batch_size")
    tokenizer = make_tokenizer(stage.data, workdir)
    check_vocab(tokenizer, setup.model_config)
    dataset = make_preference_dataset(
        make_source(stage.data),
        tokenizer,
        batch_size=train.batch_size,
        seq_len=train.seq_len,
        seed=stage.data.seed,
        shard_index=shard.index,
        shard_count=shard.count,
    )
    step_fn = make_train_step(
        setup.model_config,
        reward_objective.reward_model(setup.model_config),
        setup.optimizer,
        setup.mesh,
        num_microbatches=train.num_microbatches,
        schedule=setup.schedule,
    )
    data_iter, batch_sh = iter(dataset), batch_sharding(setup.mesh)

    def iteration(state, step, guard):
        local = next(data_iter)
        stats = local.pop("stats")
        local.pop("kinds")
        batch = global_batch(local, batch_sh, train.batch_size)
        with guard():
            state, metrics = step_fn(state, batch)
        return state, {**metrics, "data": stats}

    eval_fn = make_eval_fn(stage, setup, tokenizer, shard) if train.eval_every else None
    return Job(
        setup=setup,
        iteration=iteration,
        data=data_iter,
        throughput=lambda seconds: {"pairs_per_s": train.batch_size / seconds},
        progress_keys=("loss", "accuracy", "learning_rate"),
        desc="reward_model",
        eval_fn=eval_fn,
    )
