"""R1-Zero GRPO of Qwen2.5-7B with chains of thought up to ``SEQ_LEN`` tokens (R1: 32,768), on a
v5p-64 slice (32 chips, 8 hosts).

R1's settings as in ``configs/r1_zero_qwen2_5_1_5b.py`` (G = 16 at T = 1.0, beta = 0.001, the
R1-Zero template, accuracy + format rewards); bring the JSONL data and the HF checkpoint:

  r1jax plan --config=configs/r1_zero_qwen2_5_7b.py:32768 --topology=v5p-64 \\
      --config.mesh.preset=v5p-64
  launch/tpu_vm.sh --name r1 --zone us-east5-a --accelerator-type v5p-64 \\
      --version v2-alpha-tpuv5 -- r1jax train --config=configs/r1_zero_qwen2_5_7b.py:32768 \\
      --config.mesh.preset=v5p-64 --config.init_from=/models/Qwen2.5-7B \\
      --config.data.tokenizer=/models/Qwen2.5-7B --config.data.path=/data/math_train.jsonl \\
      --workdir=gs://BUCKET/r1_zero_7b
The argument is the total tokens per sequence (prompt bucket + completion).
"""

from r1jax.config import presets

PROMPT_TOKENS = 512


def get_config(seq_len: str = "32768"):
    total = int(seq_len)
    config = presets.pretrained_family(presets.QWEN2_5_7B, kind="grpo")
    config.model.remat_policy = "full"
    # fp32 logits of 512 tokens x 151,936 at a time (0.3 GiB) for the log-probs and their
    # gradient, as in the 1.5B recipe (docs/scaling.md).
    config.model.logits_chunk = 512
    config.mesh.preset = "v5p-64"
    # 2 prompts x 16 samples = 32 rows: one per chip of the 32-chip slice.
    config.grpo.update(num_prompts=2, num_samples=16, max_new_tokens=total - PROMPT_TOKENS)
    config.data.buckets = (PROMPT_TOKENS,)
    config.data.task = ""
    config.optim.update(learning_rate=1e-6, schedule="constant", weight_decay=0.1)
    config.train.update(steps=1000, log_every=1, checkpoint_every=50)
    config.eval.update(num_prompts=32, num_samples=4, max_new_tokens=total - PROMPT_TOKENS)
    return config
