"""``r1jax eval``: pass@1 over k samples, pass@k, maj@k, format rate, length and throughput.

  r1jax eval --checkpoint runs/demo/grpo --task arithmetic --num-prompts 64 -k 8
  r1jax eval --checkpoint /models/DeepSeek-R1-Distill-Qwen-1.5B --data math500.jsonl \\
      --template chat -k 16 --max-new-tokens 4096 --output runs/eval-math500

Writes ``samples.jsonl`` (every sample with its verdict) and ``summary.json`` to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax

from r1jax import distributed
from r1jax.checkpoint import find_tokenizer, load_params
from r1jax.data import RecordSource, get_task, load_tokenizer
from r1jax.evaluation import EvalSettings, evaluate
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
    p.add_argument("--temperature", type=float, default=0.6, help="0: greedy")
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
    p.add_argument(
        "--mesh",
        default=None,
        help="data,fsdp,tensor sizes, e.g. -1,1,1 (default: one device; all devices as data "
        "when several processes run, e.g. launch/local.sh or a pod)",
    )


def load_examples(args) -> list[dict]:
    if args.data:
        source = RecordSource(args.data, purpose="rl")
        n = len(source) if args.num_prompts is None else min(args.num_prompts, len(source))
        return [source[i] for i in range(n)]
    task = get_task(args.task, **json.loads(args.task_options))
    return [task.example(i, seed=args.seed) for i in range(args.num_prompts or 64)]


def load_everything(args):
    """(model_config, params, tokenizer, examples, settings, mesh) from the common flags.

    Under several processes (``jax.distributed`` found from the environment, as for ``r1jax
    train``) the mesh spans all of them and each process samples its share of the questions.
    """
    distributed.initialize()
    sizes = args.mesh or ("-1,1,1" if jax.process_count() > 1 else None)
    mesh = make_mesh(MeshConfig(*(int(x) for x in sizes.split(",")))) if sizes else None
    model_config, params = load_params(args.checkpoint, mesh=mesh)
    tokenizer_path = args.tokenizer or find_tokenizer(args.checkpoint)
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
    tokenizer = load_tokenizer(str(tokenizer_path))
    if distributed.is_main_process():
        devices = mesh.devices.size if mesh is not None else 1
        print(
            f"{len(examples)} questions x {settings.num_samples} samples on {devices} device(s) "
            f"in {jax.process_count()} process(es)",
            file=sys.stderr,
            flush=True,
        )
    return model_config, params, tokenizer, examples, settings, mesh


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r1jax eval", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    p.add_argument("--ks", default="", help="extra k values for pass@k/maj@k, e.g. 1,4")
    p.add_argument("--output", default=None, help="directory for samples.jsonl + summary.json")
    args = p.parse_args(argv)
    model_config, params, tokenizer, examples, settings, mesh = load_everything(args)
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
        mesh=mesh,
    )
    if not distributed.is_main_process():
        return 0
    for key, value in summary.items():
        print(f"{key:>24}: {value:.4f}" if isinstance(value, float) else f"{key:>24}: {value}")
    return 0
