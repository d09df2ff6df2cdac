"""``r1jax rejection-sample``: SFT data from a model's own correct, well-formed samples.

  r1jax rejection-sample --config.model_from=runs/demo/grpo --config.eval.task=arithmetic \\
      --config.eval.seed=7 --config.eval.num_prompts=512 --config.eval.num_samples=8 \\
      --config.rejection.max_per_prompt=3 --config.output=traces.jsonl

Writes SFT-ready JSONL (``prompt``, ``completion`` and the example's fields) to
``config.output`` and ``<output>.stats.json`` (acceptance rate and counts of every rejection
reason). The filters are ``config.rejection``; sampling is ``config.eval``.
"""

from __future__ import annotations

from r1jax.commands.evaluate import print_results, run_command


def main(argv: list[str]) -> int:
    results = run_command(argv, "rejection_sample", "r1jax rejection-sample", __doc__)
    if results is not None:
        print_results(results, width=32)
    return 0
