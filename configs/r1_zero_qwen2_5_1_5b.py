"""R1-Zero GRPO of Qwen2.5-1.5B with chains of thought up to ``SEQ_LEN`` tokens (R1: 32,768).

R1's settings: G = 16 samples per prompt at T = 1.0, k3 KL to the initial policy with
beta = 0.001, the R1-Zero template, accuracy + format rewards. Bring the data (GSM8K/MATH-style
JSONL: ``question``/``answer`` or ``problem``/``solution``; files, directories or globs) and the
Hugging Face checkpoint (weights and tokenizer.json; r1jax never downloads):

  r1jax plan --config=configs/r1_zero_qwen2_5_1_5b.py:32768 --topology=v5e-8 \\
      --config.mesh.preset=v5e-8
  r1jax train --config=configs/r1_zero_qwen2_5_1_5b.py:32768 --config.mesh.preset=v5e-8 \\
      --config.init_from=/models/Qwen2.5-1.5B --config.data.tokenizer=/models/Qwen2.5-1.5B \\
      --config.data.path=/data/math_train.jsonl --workdir=gs://BUCKET/r1_zero_1_5b
  launch/tpu_vm.sh --name r1 --zone us-west4-a --accelerator-type v5litepod-8 \\
      --version v2-alpha-tpuv5-lite -- r1jax train --config=configs/r1_zero_qwen2_5_1_5b.py:32768
On 8 x H100: ``--config.mesh.preset=8xH100``. The argument is the total tokens per sequence
(prompt bucket + completion); the default is 32,768.
"""

from r1jax.config import presets

PROMPT_TOKENS = 512  # the prompt bucket: longer prompts are skipped (counted in the metrics)


def get_config(seq_len: str = "32768"):
    total = int(seq_len)
    config = presets.pretrained_family(presets.QWEN2_5_1_5B, kind="grpo")
    config.model.remat_policy = "full"
    # fp32 logits of 512 tokens x 151,936 at a time (0.3 GiB) for the log-probs and their
    # gradient: what lets 32,768 tokens per chip fit on v5e (docs/scaling.md).
    config.model.logits_chunk = 512
    config.grpo.update(num_prompts=1, num_samples=16, max_new_tokens=total - PROMPT_TOKENS)
    config.data.buckets = (PROMPT_TOKENS,)
    config.data.task = ""
    config.optim.update(learning_rate=1e-6, schedule="constant", weight_decay=0.1)
    # 16 rows per update, one per chip per micro-batch on 8 chips.
    config.train.update(steps=1000, num_microbatches=2, log_every=1, checkpoint_every=50)
    config.eval.update(num_prompts=8, num_samples=4, max_new_tokens=total - PROMPT_TOKENS)
    return config
