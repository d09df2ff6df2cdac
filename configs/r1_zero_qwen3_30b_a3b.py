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

PROMPT_TOKENS = 512


def get_config(seq_len: str = "16384"):
    if seq_len == "tiny":
        return presets.pretrained_family(presets.QWEN3_30B_A3B, "tiny", kind="grpo")
    total = int(seq_len)
    config = presets.pretrained_family(presets.QWEN3_30B_A3B, kind="grpo")
    config.model.remat_policy = "full"
    config.model.logits_chunk = 512
    config.mesh.update(data=1, fsdp=-1, expert=8, tensor=1)
    # 2 prompts x 16 samples = 32 rows: one per chip of the 32-chip slice.
    config.grpo.update(num_prompts=2, num_samples=16, max_new_tokens=total - PROMPT_TOKENS)
    config.data.buckets = (PROMPT_TOKENS,)
    config.data.task = ""
    config.optim.update(learning_rate=1e-6, schedule="constant", weight_decay=0.1)
    config.train.update(steps=1000, log_every=1, checkpoint_every=50)
    config.eval.update(num_prompts=32, num_samples=4, max_new_tokens=total - PROMPT_TOKENS)
    return config
