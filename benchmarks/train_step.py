"""Train-step throughput and memory: SFT and GRPO steps, remat on/off, MFU with a peak FLOP/s.

  python benchmarks/train_step.py                                  # tiny model, CPU
  python benchmarks/train_step.py --hidden=1024 --layers=8 --heads=16 --kv-heads=4 \\
      --mlp=4096 --vocab=32000 --batch=8 --seq-len=1024 --compute-dtype=bfloat16 \\
      --peak-flops=989e12 --remat=none,full,dots

For each objective x remat policy: compile time, XLA's compiled memory analysis (arguments,
outputs, temporaries; peak estimate = args + outputs - aliased + temps), steady-state seconds
per step, tokens/s (all positions of the batch, prompt + completion for GRPO), and model FLOPs
utilisation = (6 N + 12 L D_attn T) tokens/s / peak (forward + backward, the PaLM estimate).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from r1jax import sharding
from r1jax.config import GRPOConfig, MeshConfig, OptimConfig
from r1jax.model import ModelConfig
from r1jax.train import objectives
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state, refresh_frozen
from r1jax.train.step import make_train_step


def _args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--objectives", default="sft,grpo")
    p.add_argument("--remat", default="none,full", help="comma list of remat policies")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=256, help="SFT length; GRPO completion length")
    p.add_argument("--prompt-len", type=int, default=64, help="GRPO prompt length")
    p.add_argument("--microbatches", type=int, default=1)
    p.add_argument("--beta", type=float, default=0.0, help="GRPO KL coefficient (>0 adds a ref)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--head-dim", type=int, default=16)
    p.add_argument("--mlp", type=int, default=128)
    p.add_argument("--compute-dtype", default="float32")
    p.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor")
    p.add_argument("--peak-flops", type=float, default=None, help="per-device peak FLOP/s")
    return p.parse_args()


def _batch(kind, args, rng):
    b, t, v = args.batch, args.seq_len, args.vocab
    if kind == "sft":
        return {
            "tokens": rng.integers(0, v, (b, t), dtype=np.int32),
            "loss_mask": np.ones((b, t), np.int32),
            "segment_ids": np.ones((b, t), np.int32),
            "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (b, t)).copy(),
        }, b * t
    p = args.prompt_len
    return {
        "prompt_tokens": rng.integers(0, v, (b, p), dtype=np.int32),
        "prompt_mask": np.ones((b, p), np.int32),
        "completion_tokens": rng.integers(0, v, (b, t), dtype=np.int32),
        "completion_mask": np.ones((b, t), np.int32),
        "old_logprobs": np.full((b, t), -np.log(v), np.float32),
        "advantages": rng.standard_normal(b).astype(np.float32),
    }, b * (p + t)


def _memory(compiled) -> dict[str, float]:
    m = compiled.memory_analysis()
    if m is None:
        return {}
    gib = 2.0**30
    args, out, alias, temp = (
        m.argument_size_in_bytes,
        m.output_size_in_bytes,
        m.alias_size_in_bytes,
        m.temp_size_in_bytes,
    )
    return {
        "args_gib": args / gib,
        "temp_gib": temp / gib,
        "peak_gib": (args + out - alias + temp) / gib,
    }


def bench(kind, remat, args, mesh) -> dict:
    config = ModelConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        num_kv_heads=args.kv_heads,
        head_dim=args.head_dim,
        mlp_dim=args.mlp,
        compute_dtype=args.compute_dtype,
        remat_policy=remat,
    )
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-5, schedule="constant"))
    reference = kind == "grpo" and args.beta > 0
    objective = (
        objectives.sft(config)
        if kind == "sft"
        else objectives.grpo(config, GRPOConfig(beta=args.beta))
    )
    state = create_train_state(config, optimizer, jax.random.key(0), mesh)
    if reference:
        state = refresh_frozen(state)
    step = make_train_step(
        config,
        objective,
        optimizer,
        mesh,
        num_microbatches=args.microbatches,
        frozen_config=config if reference else None,
    )
    batch, tokens = _batch(kind, args, np.random.default_rng(0))
    tic = time.perf_counter()
    with jax.set_mesh(mesh):
        compiled = step.jitted.lower(state, batch).compile()
    compile_s = time.perf_counter() - tic
    state, metrics = step(state, batch)  # warm-up
    jax.block_until_ready(metrics)
    tic = time.perf_counter()
    for _ in range(args.steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    seconds = (time.perf_counter() - tic) / args.steps
    row = {
        "objective": kind,
        "remat": remat,
        "compile_s": compile_s,
        "step_s": seconds,
        "tokens_per_s": tokens / seconds,
        **_memory(compiled),
    }
    if args.peak_flops:
        seq = args.seq_len + (args.prompt_len if kind == "grpo" else 0)
        attn = 12 * config.num_layers * config.num_heads * config.head_dim * seq
        flops_per_token = 6 * config.num_params + attn
        peak = args.peak_flops * mesh.size
        row["mfu"] = flops_per_token * row["tokens_per_s"] / peak
    return row


def main() -> None:
    args = _args()
    mesh_shape = dict(zip(("data", "fsdp", "tensor"), map(int, args.mesh.split(",")), strict=True))
    mesh = sharding.make_mesh(MeshConfig(**mesh_shape))
    print(f"devices: {mesh.size} x {jax.devices()[0].device_kind}; mesh {dict(mesh.shape)}")
    for kind in args.objectives.split(","):
        for remat in args.remat.split(","):
            row = bench(kind, remat, args, mesh)
            print(
                "  ".join(
                    f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                ),
                flush=True,
            )


if __name__ == "__main__":
    from r1jax import host_malloc

    host_malloc.ensure()  # huge-page malloc for XLA:CPU (R1JAX_HOST_MALLOC=0: off)
    main()
