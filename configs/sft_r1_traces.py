"""Distillation SFT of R1 reasoning traces into a Qwen2.5 student (R1's distilled models:
800k curated traces, 2 epochs; here any ``{prompt, completion}`` / ``{question, think,
answer}`` JSONL). The argument is ``<student>:<tokens per sequence>``, student 1.5b | 7b | 32b.

  r1jax plan --config=configs/sft_r1_traces.py:1.5b:16384 --topology=v5e-8 \\
      --config.mesh.preset=v5e-8
  r1jax plan --config=configs/sft_r1_traces.py:32b:16384 --topology=v5p-128 \\
      --config.mesh.data=1 --config.mesh.fsdp=64
  r1jax train --config=configs/sft_r1_traces.py:7b:16384 --config.mesh.preset=v5p-64 \\
      --config.init_from=/models/Qwen2.5-7B --config.data.tokenizer=/models/Qwen2.5-7B \\
      --config.data.path=/data/r1_traces.jsonl --workdir=gs://BUCKET/distill_7b
Sequences are packed (several traces per row, attention kept within each).
"""

from r1jax.config import presets

STUDENTS = {"1.5b": presets.QWEN2_5_1_5B, "7b": presets.QWEN2_5_7B, "32b": presets.QWEN2_5_32B}
# Micro-batches per update of 64 rows: one row per chip per pass on the slice each student is
# planned for (v5e-8, v5p-64, v5p-128).
MICROBATCHES = {"1.5b": 8, "7b": 2, "32b": 1}


def get_config(arg: str = "1.5b:16384"):
    student, _, tokens = arg.partition(":")
    if student not in STUDENTS:
        raise ValueError(f"configs/sft_r1_traces.py:{arg}: student one of {sorted(STUDENTS)}")
    config = presets.pretrained_family(STUDENTS[student], kind="sft")
    config.model.remat_policy = "full"
    config.data.task = ""
    config.train.update(
        seq_len=int(tokens or 16384),
        batch_size=64,
        num_microbatches=MICROBATCHES[student],
        steps=5000,
        log_every=10,
        checkpoint_every=500,
    )
    config.optim.update(learning_rate=1e-5, warmup_steps=100, weight_decay=0.1)
    return config
