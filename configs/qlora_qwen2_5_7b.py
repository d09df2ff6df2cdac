"""GRPO with QLoRA on Qwen2.5-7B(-Instruct) on ONE accelerator: a v5e chip (15.75 GiB) or a
24 GB GPU. Chains of thought up to ``SEQ_LEN`` tokens (default 4,096).

The frozen base is stored in NF4 (4-bit NormalFloat, a bf16 scale per 64 inputs: 0.27 bytes
per weight) and dequantised one layer at a time inside the forward; the sampler decodes on the
same quantized base, so its log-probs are the trainer's. Rank-16 adapters on every attention
and MLP projection are the only trained (and checkpointed) params; the KL reference is the
quantized base with adapters off. The embeddings and LM head stay bf16.

  r1jax plan --config=configs/qlora_qwen2_5_7b.py --topology=v5e-1
  r1jax train --config=configs/qlora_qwen2_5_7b.py --workdir=/tmp/qlora_7b \\
      --config.init_from=/models/Qwen2.5-7B-Instruct \\
      --config.data.tokenizer=/models/Qwen2.5-7B-Instruct --config.data.path=/data/gsm8k.jsonl

``init_from`` is read one weight at a time and quantized as it lands, so the bf16 model is
never whole in device memory. ``:tiny``: the same recipe on the tiny model (CPU, CI).
"""

from r1jax.config import presets


def get_config(arg: str = "4096"):
    if arg == "tiny":
        return presets.lora_grpo(presets.QWEN2_5_7B, "tiny", 0, rank=8, base_quant="nf4")
    config = presets.lora_grpo(presets.QWEN2_5_7B, "", int(arg), rank=16, base_quant="nf4")
    config.data.task = ""
    return config
