"""R1-Zero GRPO of Qwen3-30B-A3B (a mixture of 128 experts, 8 per token: 3.3B active of 30.5B)
with chains of thought up to ``SEQ_LEN`` tokens, on a v5p-64 slice (32 chips, 8 hosts).

R1's GRPO settings as in ``configs/r1_zero_qwen2_5_1_5b.py`` (G = 16 at T = 1.0, beta = 0.001,
the R1-Zero template, accuracy + format rewards). Experts are split over the mesh's ``expert``
axis (4 x 8 = 32 chips: 16 experts per chip), every other weight over ``fsdp``:

  r1jax plan --config=configs/r1_zero_qwen3_30b_a3b.py:16384 --topology=v5p-64
  r1jax train --config=configs/r1_zero_qwen3_30b_a3b.py:16384 \\
      --config.init_from=/models/Qwen3-30B-A3B --config.data.tokenizer=/models/Qwen3-30B-A3B \\
      --config.data.path=/data/math_train.jsonl --workdir=gs://BUCKET/r1_zero_30b_a3b
The argument is the total tokens per sequence (prompt bucket + completion); default 16,384.
``get_config("tiny")`` keeps the architecture (QK norm, 8 experts, 2 per token) at toy sizes.
"""

from r1jax.config import presets


def get_config(seq_len: str = "16384"):
    if seq_len == "tiny":
        return presets.pretrained_family(presets.QWEN3_30B_A3B, "tiny", kind="grpo")
    # 2 prompts x 16 samples = 32 rows: one per chip of the 32-chip slice.
    return presets.moe_r1_zero(
        presets.QWEN3_30B_A3B, int(seq_len), num_prompts=2, expert=8, replay=False
    )
