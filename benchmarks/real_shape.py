"""GRPO steps on CPU at a real model shape: Qwen2.5-0.5B (24 layers, hidden 896, vocab 151,936),
random weights, ``--tokens`` per sequence (prompt + completion). Prints seconds per step (the
sampler, the reward and the update separately) and the process's peak RSS.

  python benchmarks/real_shape.py                       # 2 steps, 1 prompt x G=2, 1,024 tokens
  python benchmarks/real_shape.py --steps 3 --samples 4 --tokens 2048

Every row runs to its length (no stop token): the update sees full-length completions. The
first step compiles (reported apart); time the others on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1jax.config import GRPOConfig, OptimConfig, presets  # noqa: E402
from r1jax.model import ModelConfig  # noqa: E402
from r1jax.rewards.compose import RewardResult  # noqa: E402
from r1jax.sampling import Sampler  # noqa: E402
from r1jax.sharding import make_mesh  # noqa: E402
from r1jax.train import objectives  # noqa: E402
from r1jax.train.grpo import GRPOParts, grpo_iteration  # noqa: E402
from r1jax.train.optim import make_optimizer  # noqa: E402
from r1jax.train.state import create_train_state, refresh_frozen  # noqa: E402
from r1jax.train.step import make_logprobs_fn, make_train_step  # noqa: E402

PROMPT = 64


class IdTokenizer:
    """Token ids as text (``"t17 t4 ..."``): no special tokens, nothing to download."""

    pad_id, bos_id, eos_id = 0, None, None

    def decode(self, ids, *, skip_special=True):
        return " ".join(f"t{int(i)}" for i in ids)


class DistinctTokens:
    """A reward that varies between random completions: the share of distinct tokens."""

    def evaluate(self, prompts, completions, **fields):
        scores = [len(set(c.split())) / max(len(c.split()), 1) for c in completions]
        return RewardResult(scores, {"distinct": scores}, 0, 0, {})


def prompts(vocab: int, seed: int):
    rng = np.random.default_rng(seed)
    while True:
        tokens = rng.integers(1, vocab, (1, PROMPT)).astype(np.int32)
        yield {
            "prompt_tokens": tokens,
            "prompt_mask": np.ones_like(tokens),
            "valid": np.ones(1, bool),
            "prompts": [IdTokenizer().decode(tokens[0])],
            "fields": {},
            "stats": {},
        }


def build(args):
    model = dataclasses.replace(ModelConfig.from_mapping(presets.QWEN2_5_0_5B), remat_policy="full")
    grpo = GRPOConfig(
        num_prompts=1,
        num_samples=args.samples,
        max_new_tokens=args.tokens - PROMPT,
        stop_at_eos=False,
        stop_strings=(),
    )
    mesh = make_mesh({"data": -1})
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-6, schedule="constant"))
    step_fn = make_train_step(
        model, objectives.grpo(model, grpo), optimizer, mesh, frozen_config=model
    )
    state = refresh_frozen(create_train_state(model, optimizer, jax.random.key(0), mesh))
    parts = GRPOParts(
        sampler=Sampler(model, mesh=mesh, buckets=(PROMPT,)),
        reward=DistinctTokens(),
        tokenizer=IdTokenizer(),
        step_fn=step_fn,
        logprobs_fn=make_logprobs_fn(model, mesh),
        grpo=grpo,
        mesh=mesh,
    )
    return model, state, parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--samples", type=int, default=2, help="G")
    parser.add_argument("--tokens", type=int, default=1024, help="prompt + completion")
    args = parser.parse_args()
    model, state, parts = build(args)
    data = prompts(model.vocab_size, seed=0)
    print(
        f"Qwen2.5-0.5B shape ({model.num_params / 1e6:.0f}M params), 1 prompt x G={args.samples}, "
        f"{args.tokens} tokens per sequence, {len(jax.devices())} {jax.devices()[0].platform} "
        "device(s)",
        flush=True,
    )
    for step in range(args.steps):
        start = time.perf_counter()
        state, metrics = grpo_iteration(state, data, parts, step)
        seconds = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        label = "compile + step" if step == 0 else "step"
        print(
            f"step {step}: {seconds:.1f} s ({label}; sample {metrics['time/sample']:.1f} s, "
            f"update {metrics['time/update']:.1f} s), loss {metrics['train/loss']:.4g}, "
            f"peak RSS {rss:.2f} GiB",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
