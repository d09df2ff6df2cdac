"""``r1jax rejection-sample``: SFT data from a model's own correct, well-formed samples.

  r1jax rejection-sample --checkpoint runs/demo/grpo --task arithmetic --seed 7 \\
      --num-prompts 512 -k 8 --max-per-prompt 3 --output traces.jsonl

Writes SFT-ready JSONL (``prompt``, ``completion`` and the example's fields) and
``<output>.stats.json`` (acceptance rate and counts of every rejection reason).
"""

from __future__ import annotations

import argparse

from r1jax import distributed
from r1jax.commands.evaluate import add_common_arguments, load_everything
from r1jax.evaluation import RejectionSettings, rejection_sample


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r1jax rejection-sample", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    p.add_argument("--output", required=True, help="output JSONL path")
    p.add_argument("--max-per-prompt", type=int, default=3)
    p.add_argument("--language", default="en")
    p.add_argument("--min-language-consistency", type=float, default=0.95)
    p.add_argument("--max-repetition", type=float, default=0.5)
    p.add_argument("--keep-truncated", action="store_true")
    args = p.parse_args(argv)
    model_config, params, tokenizer, examples, settings, mesh = load_everything(args)
    filters = RejectionSettings(
        max_per_prompt=args.max_per_prompt,
        language=args.language,
        min_language_consistency=args.min_language_consistency,
        max_repetition=args.max_repetition,
        drop_truncated=not args.keep_truncated,
    )
    stats = rejection_sample(
        params, model_config, tokenizer, examples, settings, filters, args.output, mesh=mesh
    )
    if not distributed.is_main_process():
        return 0
    for key, value in stats.items():
        print(f"{key:>32}: {value:.4f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0
