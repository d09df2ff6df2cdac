"""``r1jax teacher-topk``: a teacher's top-k next-token distribution stored with SFT data.

  r1jax teacher-topk --config.model_from=runs/teacher --config.data.path=traces.jsonl \\
      --config.data.tokenizer=runs/teacher/tokenizer.model --config.distill.top_k=32 \\
      --config.output=traces_topk.jsonl
  r1jax train --config=configs/distill_tiny.py --config.distill.teacher=topk \\
      --config.data.path=traces_topk.jsonl --config.data.tokenizer=runs/teacher/tokenizer.model \\
      --workdir=runs/kd_topk

Writes every record of ``config.data`` with ``teacher_tokens``, ``teacher_topk_indices`` and
``teacher_topk_logprobs`` (``r1jax.data.teacher_topk``) to ``config.output``, and
``<output>.stats.json``. The distillation run then needs no teacher in memory.
"""

from __future__ import annotations

from r1jax import distributed
from r1jax.config import typed
from r1jax.config.flags import parse_config


def main(argv: list[str]) -> int:
    config, _ = parse_config(
        argv, command="r1jax teacher-topk", default="teacher_topk", doc=__doc__
    )
    stage = typed(config)
    if stage.kind != "teacher_topk":
        raise ValueError(f"config.kind={stage.kind!r}: r1jax teacher-topk runs kind='teacher_topk'")
    if not stage.link("model_from") or not stage.link("output"):
        raise ValueError(
            "r1jax teacher-topk needs --config.model_from=DIR (the teacher) and "
            "--config.output=FILE.jsonl"
        )
    distributed.initialize(config)
    from r1jax.evaluation import teacher_topk

    counts = teacher_topk.run(stage, stage.link("model_from"), stage.link("output"))
    if distributed.is_main_process():
        print(", ".join(f"{k}={v}" for k, v in counts.items()))
    return 0
