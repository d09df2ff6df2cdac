"""R1-Zero GRPO of a DeepSeek-V3-architecture model small enough for a v5p-64 slice: the
Moonlight-16B-A3B shape (multi-head latent attention; 64 sigmoid-routed experts, 6 per token,
2 shared, a dense first layer: 16.0B parameters, 2.9B active).

R1's GRPO settings as in ``configs/r1_zero_qwen2_5_1_5b.py``. Experts are split over the mesh's
``expert`` axis (8 experts per chip), the rest FSDP; routing replay keeps the policy ratio on
the sampled experts. RoPE is unscaled here: a checkpoint whose config.json scales it (YaRN
or llama3) needs the same ``config.model.rope_scaling`` (``r1jax.model.hf_config`` reads
it). For planning:

  r1jax plan --config=configs/r1_zero_moonlight_16b_a3b.py:16384 --topology=v5p-64
``get_config("tiny")`` keeps the architecture at toy sizes. The argument is the total tokens
per sequence (prompt bucket + completion); default 16,384.
"""

from r1jax.config import presets


def get_config(seq_len: str = "16384"):
    if seq_len == "tiny":
        config = presets.pretrained_family(presets.MOONLIGHT_16B_A3B, "tiny", kind="grpo")
        config.grpo.routing_replay = True
        return config
    # 2 prompts x 16 samples = 32 rows: one per chip of the 32-chip slice.
    return presets.moe_r1_zero(presets.MOONLIGHT_16B_A3B, int(seq_len), num_prompts=2, expert=8)
