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
import itertools
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
    args = parser.parse_args(argv)

    from r1jax.data import (
        R1_ZERO_TEMPLATE,
        TaskDataset,
        format_completion,
        get_task,
        iter_examples,
        make_rl_dataset,
        make_sft_dataset,
        train_sentencepiece,
    )
    from r1jax.data.tokenizer import SentencePieceTokenizer

    task = get_task(args.task)
    results: dict = {"task": args.task, "num_examples": args.num_examples}

    t0 = time.perf_counter()
    corpus = [R1_ZERO_TEMPLATE]
    for ex in itertools.islice(iter_examples(task, seed=123), 2000):
        corpus += [ex["prompt"], format_completion(ex["gold_cot"], ex["answer"])]
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
        process_index=0,
        process_count=1,
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
        process_index=0,
        process_count=1,
        buckets=(128, 256, 512),
        worker_count=args.worker_count,
    )
    t0 = time.perf_counter()
    prompts = sum(b["stats"]["examples"] for b in rl)
    dt = time.perf_counter() - t0
    results["rl"] = {"prompts_per_s": round(prompts / dt), "seconds": round(dt, 2)}
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
