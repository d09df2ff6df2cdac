"""Throughput of the accuracy and code rewards through the time-limited process pool.

Run: ``python benchmarks/rewards.py --items 1000 --workers 2`` (``--code-items`` defaults to
``--items``; code is far slower since every test case is a sandboxed process). Prints
completions/s per reward and the time-out / error counts. Items are a deterministic mix of
correct, wrong, hedged and adversarial completions.
"""

from __future__ import annotations

import argparse
import random
import time

from r1jax.rewards import CompositeReward

_ACCURACY_ITEMS = [
    ("42", r"<think>6*7</think> <answer>\boxed{42}</answer>"),
    ("1/2", "<think>half</think> <answer>0.5</answer>"),
    (r"\frac{\sqrt{3}}{2}", r"<think>sin 60</think> <answer>\boxed{\sqrt{3}/2}</answer>"),
    (r"\{1,2\}", r"<think>roots</think> <answer>\boxed{\{2, 1\}}</answer>"),
    ("[0,1)", r"<think>interval</think> <answer>\boxed{[0,1]}</answer>"),
    ("x^2+2x+1", r"<think>expand</think> <answer>\boxed{(x+1)^2}</answer>"),
    ("1,000", "<think>thousand</think> <answer>1000</answer>"),
    ("7", r"<think>\boxed{7}</think> <answer>not sure</answer>"),
    ("3", r"<think>t</think> <answer>\boxed{2} \boxed{3}</answer>"),
    ("1", r"<think>t</think> <answer>\boxed{10^{10^{10^{10}}}}</answer>"),
    ("5", "<think>" + "so " * 20_000 + r"</think> <answer>\boxed{5}</answer>"),
    ("12", "<think>t</think> <answer>#### 13</answer>"),
]

_CODE_ITEMS = [
    ("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]),
    ("def add(a, b):\n    return a - b", ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]),
    ("print(sum(map(int, input().split())))", [{"stdin": "1 2", "stdout": "3"}]),
    ("while True:\n    pass", [{"stdin": "", "stdout": "1"}]),
    ("import sys\nsys.exit(0)", ["assert add(1, 2) == 3"]),
]


def _fenced(program: str) -> str:
    return f"<think>code</think> <answer>\n```python\n{program}\n```\n</answer>"


def bench(name: str, reward: CompositeReward, completions, **fields) -> None:
    reward.evaluate(["q"] * 4, completions[:4], **{k: v[:4] for k, v in fields.items()})  # warm
    start = time.perf_counter()
    result = reward.evaluate(["q"] * len(completions), completions, **fields)
    seconds = time.perf_counter() - start
    print(
        f"{name:9s} {len(completions):5d} items  {seconds:7.2f} s  "
        f"{len(completions) / seconds:8.1f} completions/s  "
        f"mean={sum(result.total) / len(completions):.3f}  "
        f"timeouts={result.timeouts} errors={result.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--code-items", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(0)

    picks = [rng.choice(_ACCURACY_ITEMS) for _ in range(args.items)]
    with CompositeReward.from_config(
        {"accuracy": {}}, num_workers=args.workers, item_timeout=5.0
    ) as reward:
        bench("accuracy", reward, [c for _, c in picks], answer=[a for a, _ in picks])

    code_picks = [rng.choice(_CODE_ITEMS) for _ in range(args.code_items or args.items)]
    config = {"code": {"wall_time": 1.0, "cpu_time": 1, "timeout": 10.0}}
    with CompositeReward.from_config(config, num_workers=args.workers) as reward:
        bench("code", reward, [_fenced(p) for p, _ in code_picks], tests=[t for _, t in code_picks])


if __name__ == "__main__":
    main()
