"""R1-Zero GRPO of a DeepSeek-V3-architecture model small enough for a v5p-64 slice: the
Moonlight-16B-A3B shape (multi-head latent attention; 64 sigmoid-routed experts, 6 per token,
2 shared, a dense first layer: 16.0B parameters, 2.9B active).

R1's GRPO settings as in ``configs/r1_zero_qwen2_5_1_5b.py``. Experts are split over the mesh's
``expert`` axis (8 experts per chip), the rest FSDP; routing replay keeps the policy ratio on
the sampled experts. The published checkpoint's YaRN RoPE scaling is not implemented (its
import is refused by name): this recipe trains at the base RoPE, from your own checkpoint of
this shape or for planning:

  r1jax plan --config=configs/r1_zero_moonlight_16b_a3b.py:16384 --topology=v5p-64
``get_config("tiny")`` keeps the architecture at toy sizes. The argument is the total tokens
per sequence (prompt bucket + completion); default 16,384.
"""

from r1jax.config import presets

PROMPT_TOKENS = 512


def get_config(seq_len: str = "16384"):
    if seq_len == "tiny":
        config = presets.pretrained_family(presets.MOONLIGHT_16B_A3B, "tiny", kind="grpo")
        config.grpo.routing_replay = True
        return config
    total = int(seq_len)
    config = presets.pretrained_family(presets.MOONLIGHT_16B_A3B, kind="grpo")
    config.model.remat_policy = "full"
    config.model.logits_chunk = 512
    config.mesh.update(data=1, fsdp=-1, expert=8, tensor=1)
    # 2 prompts x 16 samples = 32 rows: one per chip of the 32-chip slice.
    config.grpo.update(
        num_prompts=2, num_samples=16, max_new_tokens=total - PROMPT_TOKENS, routing_replay=True
    )
    config.data.buckets = (PROMPT_TOKENS,)
    config.data.task = ""
    config.optim.update(learning_rate=1e-6, schedule="constant", weight_decay=0.1)
    config.train.update(steps=1000, log_every=1, checkpoint_every=50)
    config.eval.update(num_prompts=32, num_samples=4, max_new_tokens=total - PROMPT_TOKENS)
    return config
