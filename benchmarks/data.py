"""Throughput of the data pipelines on generated examples (no downloads, CPU only).

Measures, on ``--num-examples`` generated task examples (default 100k):
  * task generation alone (examples/s),
  * the SFT pipeline: R1-Zero template + tokenise + pack into ``[B, T]`` (examples/s, tokens/s,
    ms per batch) — the number that must stay well below a train step's time,
  * the RL pipeline: template + tokenise + bucketed left-padded prompt batches (prompts/s).

Run::

    python benchmarks/data.py                       # 100k arithmetic examples, B=8, T=512
    python benchmarks/data.py --task countdown --num-examples 20000 --worker-count 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="arithmetic")
    parser.add_argument("--num-examples", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--worker-count", type=int, default=0)
    parser.add_argument("--rl-examples", type=int, default=20_000)
    parser.add_argument(
        "--model-params",
        type=float,
        default=1e6,
        help="size of the model the step-time estimate assumes (default: a 1M-param demo model)",
    )
    args = parser.parse_args(argv)

    from r1jax.data import (
        TaskDataset,
        get_task,
        make_rl_dataset,
        make_sft_dataset,
        tokenizer_corpus,
        train_sentencepiece,
    )
    from r1jax.data.tokenizer import SentencePieceTokenizer

    task = get_task(args.task)
    results: dict = {"task": args.task, "num_examples": args.num_examples}

    t0 = time.perf_counter()
    corpus = tokenizer_corpus(task, 2000, seed=123, layout="template_once")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = SentencePieceTokenizer(
            train_sentencepiece(corpus, f"{tmp}/tok", args.vocab_size)
        )
    results["tokenizer_train_s"] = round(time.perf_counter() - t0, 2)

    n = min(args.num_examples, 20_000)
    t0 = time.perf_counter()
    for i in range(n):
        task.example(i)
    results["generate_examples_per_s"] = round(n / (time.perf_counter() - t0))

    source = TaskDataset(task, seed=0, num_examples=args.num_examples)
    ds = make_sft_dataset(
        source,
        tokenizer,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        num_epochs=1,
        shard_index=0,
        shard_count=1,
        worker_count=args.worker_count,
    )
    t0 = time.perf_counter()
    examples = tokens = batches = 0
    for batch in ds:
        examples += batch["stats"]["examples"]
        tokens += batch["stats"]["tokens"]
        batches += 1
    dt = time.perf_counter() - t0
    results["sft"] = {
        "examples": examples,
        "batches": batches,
        "batch_shape": [args.batch_size, args.seq_len],
        "examples_per_s": round(examples / dt),
        "tokens_per_s": round(tokens / dt),
        "ms_per_batch": round(1000 * dt / batches, 3),
        "fill": round(tokens / (batches * args.batch_size * args.seq_len), 3),
        "seconds": round(dt, 2),
    }

    rl_source = TaskDataset(task, seed=0, num_examples=args.rl_examples)
    rl = make_rl_dataset(
        rl_source,
        tokenizer,
        batch_size=args.batch_size,
        num_epochs=1,
        shard_index=0,
        shard_count=1,
        buckets=(128, 256, 512),
        worker_count=args.worker_count,
    )
    t0 = time.perf_counter()
    prompts = sum(b["stats"]["examples"] for b in rl)
    dt = time.perf_counter() - t0
    results["rl"] = {"prompts_per_s": round(prompts / dt), "seconds": round(dt, 2)}
    results["step_estimate"] = estimate_step(args, results["sft"]["ms_per_batch"])
    print(json.dumps(results, indent=2))
    return results


def estimate_step(args, data_ms_per_batch: float) -> dict:
    """A lower bound on one train step here: 6 * params * tokens FLOPs at measured matmul speed.

    Measured with a float32 numpy matmul on this CPU (what XLA reaches is of the same order), so
    the data pipeline's share of a step is at most ``data_ms / (data_ms + step_ms)``.
    """
    import numpy as np

    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    a @ a  # warm up
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ a
    flops_per_s = reps * 2 * 1024**3 / (time.perf_counter() - t0)
    step_ms = 1000 * 6 * args.model_params * args.batch_size * args.seq_len / flops_per_s
    return {
        "matmul_gflops": round(flops_per_s / 1e9, 1),
        "model_params": args.model_params,
        "min_step_ms": round(step_ms, 1),
        "data_share_of_step_at_most": round(data_ms_per_batch / (data_ms_per_batch + step_ms), 3),
    }


if __name__ == "__main__":
    main()
