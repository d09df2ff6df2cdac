"""Mixture-of-experts layer speed: tokens/s of the MoE MLP against a dense SwiGLU of equal
active parameters, and the grouped-matmul path (``ragged_dot``) against the per-expert loop.

The MoE layer routes N tokens (``--tokens``) of width ``--hidden`` to ``--top-k`` of
``--experts`` experts of width ``--expert-mlp``; the dense peer has width ``top_k * expert_mlp``,
so both do the same matmul FLOPs per token (the router aside). Each variant is jitted, warmed up
once, then timed over ``--repeats`` calls of forward (``--backward``: forward + gradient).
Prints one JSON object: tokens/s per variant and the ratios.

Run (idle machine)::

    python benchmarks/moe.py
    python benchmarks/moe.py --tokens 8192 --hidden 1024 --experts 64 --top-k 8 --backward
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp

from r1jax.config.model import MoEConfig
from r1jax.model import layers, moe


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - start) / repeats


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--expert-mlp", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backward", action="store_true")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)

    dtype = jnp.dtype(args.dtype)
    cfg = MoEConfig(
        num_experts=args.experts, experts_per_token=args.top_k, expert_mlp_dim=args.expert_mlp
    )
    d, e, f = args.hidden, args.experts, args.expert_mlp
    keys = iter(jax.random.split(jax.random.key(0), 8))
    normal = lambda *shape: (0.05 * jax.random.normal(next(keys), shape)).astype(dtype)
    x = normal(1, args.tokens, d) * 20
    p = {
        "router": normal(d, e),
        "expert_gate": normal(e, d, f),
        "expert_up": normal(e, d, f),
        "expert_down": normal(e, f, d),
    }
    width = args.top_k * f
    dense_p = {"gate": normal(d, width), "up": normal(d, width), "down": normal(width, d)}

    def moe_with(experts_fn):
        def run(x, p):
            x_ND = x.reshape(-1, d)
            weights, chosen, _, _ = moe.route(x_ND, p["router"], None, cfg)
            w = (p["expert_gate"], p["expert_up"], p["expert_down"])
            return experts_fn(x_ND, weights, chosen, *w)

        return run

    variants = {
        "moe_grouped": (moe_with(moe.experts_grouped), p),
        "moe_loop": (moe_with(moe.experts_loop), p),
        "dense_equal_active": (
            lambda x, p: layers.swiglu(x, p["gate"], p["up"], p["down"]),
            dense_p,
        ),
    }
    result = {
        "shape": vars(args),
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
    }
    for name, (fn, params) in variants.items():
        if args.backward:
            fn = jax.grad(lambda x, p, fn=fn: jnp.sum(fn(x, p).astype(jnp.float32) ** 2), (0, 1))
        seconds = _time(jax.jit(fn), x, params, repeats=args.repeats)
        result[name] = {"tokens_per_s": round(args.tokens / seconds), "ms": round(seconds * 1e3, 2)}
    speed = lambda name: result[name]["tokens_per_s"]
    result["grouped_over_loop"] = round(speed("moe_grouped") / speed("moe_loop"), 2)
    result["moe_over_dense"] = round(speed("moe_grouped") / speed("dense_equal_active"), 2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
