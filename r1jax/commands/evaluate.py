"""``r1jax eval``: pass@1 over k samples, pass@k, maj@k, format rate, length and throughput.

  r1jax eval --config.model_from=runs/demo/grpo --config.eval.task=arithmetic \\
      --config.eval.num_prompts=64 --config.eval.num_samples=8
  r1jax eval --config.model_from=/models/DeepSeek-R1-Distill-Qwen-1.5B \\
      --config.eval.path=math500.jsonl --config.eval.template=chat \\
      --config.eval.num_samples=16 --config.eval.max_new_tokens=4096 --config.output=runs/math500

Writes ``samples.jsonl`` (every sample with its verdict) and ``summary.json`` to
``config.output``. The mesh (``config.mesh``; default all devices as data) spans every process
under ``jax.distributed``; each process samples its share of the questions.
"""

from __future__ import annotations

from r1jax import distributed
from r1jax.config import typed
from r1jax.config.flags import parse_config


def run_command(argv: list[str], kind: str, command: str, doc: str) -> dict | None:
    """Parses, checks and runs an "eval" or "rejection_sample" stage; the results on process 0
    (None on the others)."""
    config, _ = parse_config(argv, command=command, default=kind, doc=doc)
    stage = typed(config)
    if stage.kind != kind:
        raise ValueError(f"config.kind={stage.kind!r}: {command} runs kind={kind!r}")
    if not stage.link("model_from"):
        raise ValueError(f"{command} needs --config.model_from=DIR (an r1jax run or HF directory)")
    if kind == "rejection_sample" and not stage.link("output"):
        raise ValueError(f"{command} needs --config.output=FILE.jsonl")
    distributed.initialize(config)
    from r1jax.evaluation import stage as eval_stage

    results = eval_stage.run(stage, stage.link("model_from"), stage.link("output"))
    return results if distributed.is_main_process() else None


def print_results(results: dict, width: int = 24) -> None:
    for key, value in results.items():
        shown = f"{value:.4f}" if isinstance(value, float) else f"{value}"
        print(f"{key:>{width}}: {shown}")


def main(argv: list[str]) -> int:
    results = run_command(argv, "eval", "r1jax eval", __doc__)
    if results is not None:
        print_results(results)
    return 0
