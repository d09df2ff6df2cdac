"""``r1jax eval``: pass@1 over k samples, pass@k, maj@k, format rate, length and throughput.

  r1jax eval --checkpoint runs/demo/grpo --task arithmetic --num-prompts 64 -k 8
  r1jax eval --checkpoint /models/DeepSeek-R1-Distill-Qwen-1.5B --data math500.jsonl \\
      --template chat -k 16 --max-new-tokens 4096 --output runs/eval-math500

Writes ``samples.jsonl`` (every sample with its verdict) and ``summary.json`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from r1jax import checkpoints
from r1jax.data import RecordSource, get_task, load_tokenizer
from r1jax.pipeline.evaluate import EvalSettings, evaluate
from r1jax.sharding import MeshConfig, make_mesh


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Flags shared with ``r1jax rejection-sample``: model, data and sampling."""
    p.add_argument("--checkpoint", required=True, help="r1jax run directory or HF directory")
    p.add_argument("--tokenizer", default=None, help="default: found next to the checkpoint")
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", help="JSONL/Parquet (GSM8K, MATH, {prompt, answer}, ...)")
    data.add_argument("--task", help="a built-in task name (arithmetic, countdown, ...)")
    p.add_argument("--task-options", default="{}", help="JSON dict of task knobs")
    p.add_argument("--seed", type=int, default=12345, help="task seed / sampling seed")
    p.add_argument("--num-prompts", type=int, default=None, help="default: all (data) or 64")
    p.add_argument("-k", "--num-samples", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--template", default="r1_zero", choices=["r1_zero", "chat", "raw"])
    p.add_argument(
        "--correctness-reward",
        default=None,
        help="reward deciding correctness (default: accuracy; countdown for Countdown)",
    )
    p.add_argument("--prompts-per-batch", type=int, default=32)
    p.add_argument("--mesh", default=None, help="data,fsdp,tensor sizes, e.g. -1,1,1")


def load_examples(args) -> list[dict]:
    if args.data:
        source = RecordSource(args.data, purpose="rl")
        n = len(source) if args.num_prompts is None else min(args.num_prompts, len(source))
        return [source[i] for i in range(n)]
    task = get_task(args.task, **json.loads(args.task_options))
    return [task.example(i, seed=args.seed) for i in range(args.num_prompts or 64)]


def load_everything(args):
    """(model_config, params, tokenizer, examples, settings) from the common flags."""
    mesh = make_mesh(MeshConfig(*(int(x) for x in args.mesh.split(",")))) if args.mesh else None
    model_config, params = checkpoints.load_model(args.checkpoint, mesh=mesh)
    tokenizer_path = args.tokenizer or checkpoints.find_tokenizer(args.checkpoint)
    if tokenizer_path is None:
        raise FileNotFoundError(f"no tokenizer found next to {args.checkpoint}: pass --tokenizer")
    examples = load_examples(args)
    default_reward = "countdown" if args.task == "countdown" else "accuracy"
    settings = EvalSettings(
        num_samples=args.num_samples,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        template=args.template,
        prompts_per_batch=args.prompts_per_batch,
        seed=args.seed,
        correctness_reward=args.correctness_reward or default_reward,
    )
    return model_config, params, load_tokenizer(str(tokenizer_path)), examples, settings


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r1jax eval", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    p.add_argument("--ks", default="", help="extra k values for pass@k/maj@k, e.g. 1,4")
    p.add_argument("--output", default=None, help="directory for samples.jsonl + summary.json")
    args = p.parse_args(argv)
    model_config, params, tokenizer, examples, settings = load_everything(args)
    if args.ks:
        ks = tuple(int(k) for k in args.ks.split(","))
        settings = EvalSettings(**{**settings.__dict__, "ks": ks})
    summary = evaluate(
        params,
        model_config,
        tokenizer,
        examples,
        settings,
        output_dir=Path(args.output) if args.output else None,
    )
    for key, value in summary.items():
        print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return 0
