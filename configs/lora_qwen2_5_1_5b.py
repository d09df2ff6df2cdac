"""GRPO with LoRA on Qwen2.5-1.5B(-Instruct) on ONE accelerator: a v5e chip (15.75 GiB), a
16 GB GPU, a Colab runtime. Chains of thought up to ``SEQ_LEN`` tokens (default 8,192).

Only rank-32 adapters on every attention and MLP projection are trained (and checkpointed);
the base stays frozen in bf16 and is also GRPO's KL reference (no second copy). Bring the
Hugging Face checkpoint (weights and tokenizer.json) and GSM8K-style JSONL
(``question``/``answer``):

  r1jax plan --config=configs/lora_qwen2_5_1_5b.py --topology=v5e-1
  r1jax train --config=configs/lora_qwen2_5_1_5b.py --workdir=/tmp/lora_1_5b \\
      --config.init_from=/models/Qwen2.5-1.5B-Instruct \\
      --config.data.tokenizer=/models/Qwen2.5-1.5B-Instruct --config.data.path=/data/gsm8k.jsonl
  r1jax convert --config.convert.direction=r1jax-to-peft --config.convert.input=/tmp/lora_1_5b \\
      --config.convert.output=/tmp/lora_1_5b/peft       # or r1jax-to-hf: merged weights

``:tiny`` is the same recipe on the tiny model and the built-in arithmetic task (CPU, CI).
"""

from r1jax.config import presets


def get_config(arg: str = "8192"):
    if arg == "tiny":
        return presets.lora_grpo(presets.QWEN2_5_1_5B, "tiny", 0, rank=8)
    config = presets.lora_grpo(presets.QWEN2_5_1_5B, "", int(arg), rank=32)
    config.data.task = ""
    return config
