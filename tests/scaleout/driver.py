"""Multi-process acceptance driver: SFT then GRPO steps on a tiny model, checkpoint, param dump.

Every process runs this same script (``launch/local.sh -n 2 -d 4 -- python driver.py ...``, or
plainly with 8 fake devices for the single-process reference). Each process:
  1. ``r1jax.distributed.initialize()`` (from the ``R1JAX_*`` environment; a no-op alone),
  2. builds the mesh over ALL processes' devices (data x fsdp = 4 x 2) and the train state,
  3. per step, builds the same deterministic GLOBAL batch from the seed, keeps only its own
     rows (``data_shard(mesh).rows``) and assembles global arrays with
     ``host_local_to_global`` (``jax.make_array_from_process_local_data``),
  4. runs ``--sft_steps`` SFT steps, then ``--grpo_steps`` GRPO steps (beta > 0, so the frozen
     reference policy is exercised) through the real rollout stages: the jitted sampler over
     the global prompt batch (each process feeds its prompts and reads back its rows), rewards
     scored by each process on its own completions (a deterministic toy reward), group
     advantages, pi_old recomputed by the jitted multi-process log-prob function,
  5. saves the train state with ``r1jax.checkpoint.Checkpointer`` (orbax; every process
     writes its shards to one directory),
  6. writes ``params_p<process>.npz`` (all-gathered params) and, on process 0, ``metrics.json``.

``--restore DIR``: single process; restores the checkpoint at DIR into an 8-device mesh and dumps
its params instead of training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import numpy as np

from r1jax import distributed, multihost

GLOBAL_BATCH = 16
SEQ = 16
PROMPT, COMPLETION, GROUP = 8, 8, 2  # 8 prompts x 2 samples: one prompt per device


def model_config():
    from r1jax.model import ModelConfig

    return ModelConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4,
                       num_kv_heads=2, head_dim=8, mlp_dim=64, qkv_bias=True)  # fmt: skip


def sft_batch(step: int) -> dict:
    """The step's global SFT batch (two packed segments per row), identical on every process."""
    rng = np.random.default_rng(1000 + step)
    tokens = rng.integers(1, 128, (GLOBAL_BATCH, SEQ), dtype=np.int32)
    split = SEQ // 2
    seg = np.where(np.arange(SEQ) < split, 1, 2).astype(np.int32)[None].repeat(GLOBAL_BATCH, 0)
    pos = np.where(np.arange(SEQ) < split, np.arange(SEQ), np.arange(SEQ) - split)
    loss_mask = (rng.random((GLOBAL_BATCH, SEQ)) < 0.7).astype(np.int32)
    return dict(tokens=tokens, loss_mask=loss_mask, segment_ids=seg,
                positions=pos.astype(np.int32)[None].repeat(GLOBAL_BATCH, 0))  # fmt: skip


def prompts_for(step: int) -> list[list[int]]:
    """The step's global prompts, identical on every process: the first half 3-4 tokens long,
    the second 5-8, so that on 2 processes one holds only prompts of the short bucket and the
    sampler must agree on the long one across processes."""
    rng = np.random.default_rng(2000 + step)
    half = GLOBAL_BATCH // GROUP // 2
    lengths = np.concatenate([rng.integers(3, 5, half), rng.integers(5, PROMPT + 1, half)])
    return [rng.integers(1, 128, n).tolist() for n in lengths]


def toy_reward(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Deterministic stand-in for a task reward: the fraction of even completion tokens."""
    even = ((tokens % 2 == 0) & (mask > 0)).sum(1)
    return (even / np.maximum(mask.sum(1), 1)).astype(np.float32)


def grpo_rollout(state, sampler, step: int, mesh) -> dict:
    """Real rollout stages, per process: sample this process's prompts (one jitted program over
    the global batch), score the local completions, group advantages (a process holds whole
    groups), and return (local rewards, this process's rows of the GRPO batch)."""
    from r1jax.losses import group_advantages

    prompts = prompts_for(step)
    local = prompts[multihost.data_shard(mesh).rows(len(prompts))]
    key = jax.random.fold_in(jax.random.key(7), step)
    out = sampler(state.params, local, rng=key, num_samples=GROUP, max_new_tokens=COMPLETION)
    rewards = toy_reward(out.tokens, out.mask)
    return rewards, dict(
        prompt_tokens=out.prompt_tokens,
        prompt_mask=out.prompt_mask,
        completion_tokens=out.tokens,
        completion_mask=out.mask,
        advantages=np.asarray(group_advantages(rewards, GROUP), np.float32),
    )


def local_rows_slice(mesh) -> slice:
    return multihost.data_shard(mesh).rows(GLOBAL_BATCH)


def local_rows(batch: dict, mesh) -> dict:
    rows = local_rows_slice(mesh)
    return {k: v[rows] for k, v in batch.items()}


def dump_params(params, path: str) -> None:
    from jax.experimental import multihost_utils

    host = multihost_utils.process_allgather(params, tiled=True)
    flat = jax.tree_util.tree_flatten_with_path(host)[0]
    np.savez(path, **{jax.tree_util.keystr(k): np.asarray(v) for k, v in flat})


def setup(mc):
    from r1jax.config import MeshConfig, OptimConfig
    from r1jax.sharding import make_mesh
    from r1jax.train.optim import make_optimizer

    mesh = make_mesh(MeshConfig(data=-1, fsdp=2, tensor=1))
    optim = make_optimizer(OptimConfig(learning_rate=1e-3, schedule="constant", total_steps=10))
    return mesh, optim


def train(args) -> None:
    from jax.experimental import multihost_utils

    from r1jax.checkpoint import Checkpointer
    from r1jax.config import GRPOConfig
    from r1jax.sampling import Sampler
    from r1jax.train import objectives
    from r1jax.train.state import create_train_state, refresh_frozen
    from r1jax.train.step import make_logprobs_fn, make_train_step

    mc = model_config()
    mesh, optim = setup(mc)
    state = create_train_state(mc, optim, jax.random.key(args.seed), mesh)
    metrics = {"sft": [], "grpo": [], "reward": []}

    sft_step = make_train_step(mc, objectives.sft(mc), optim, mesh, num_microbatches=2)
    for i in range(args.sft_steps):
        batch = multihost.host_local_to_global(local_rows(sft_batch(i), mesh), mesh)
        state, m = sft_step(state, batch)
        metrics["sft"].append(float(m["loss"]))

    state = refresh_frozen(state)  # the GRPO reference = the SFT policy
    options = GRPOConfig(beta=0.04)
    grpo_step = make_train_step(mc, objectives.grpo(mc, options), optim, mesh, frozen_config=mc)
    logprobs = make_logprobs_fn(mc, mesh)
    # Multi-process: each process passes its prompts and gets its rows; buckets agreed globally.
    sampler = Sampler(mc, mesh=mesh, buckets=(PROMPT // 2, PROMPT))
    for i in range(args.grpo_steps):
        rewards, local = grpo_rollout(state, sampler, i, mesh)
        batch = multihost.host_local_to_global(local, mesh)
        metrics["reward"].append(float(multihost_utils.process_allgather(rewards).mean()))
        batch["old_logprobs"] = logprobs(state.params, batch)  # pi_old: this policy, on-policy
        state, m = grpo_step(state, batch)
        metrics["grpo"].append(float(m["loss"]))

    # The project's multi-host Checkpointer: every process writes its shards (and the global
    # data position, the same on every process: checked when saved) into one directory.
    ckpt = Checkpointer(os.path.join(args.out, "ckpt"), save_every=1)
    data_state = {"batches": args.sft_steps + args.grpo_steps}
    ckpt.save(state, data_state=data_state, config={"driver": True}, force=True)
    ckpt.close()
    dump_params(state.params, os.path.join(args.out, f"params_p{jax.process_index()}.npz"))
    if distributed.is_main_process():
        metrics |= {"process_count": jax.process_count(), "device_count": jax.device_count()}
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f)


def restore(args) -> None:
    from r1jax.checkpoint import Checkpointer
    from r1jax.train.state import abstract_train_state

    mc = model_config()
    mesh, optim = setup(mc)
    target = abstract_train_state(mc, optim, mesh, frozen_config=mc)
    ckpt = Checkpointer(args.restore)
    state, data_state, config = ckpt.restore(target)
    ckpt.close()
    assert int(state.step) == args.sft_steps + args.grpo_steps, int(state.step)
    expected = {"batches": args.sft_steps + args.grpo_steps}
    assert data_state == expected and config == {"driver": True}, (data_state, config)
    dump_params(state.params, os.path.join(args.out, "params_restored.npz"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sft_steps", type=int, default=3)
    parser.add_argument("--grpo_steps", type=int, default=3)
    parser.add_argument("--restore", default=None, help="checkpoint dir to restore and dump")
    args = parser.parse_args(argv)
    distributed.initialize()
    os.makedirs(args.out, exist_ok=True)
    restore(args) if args.restore else train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
