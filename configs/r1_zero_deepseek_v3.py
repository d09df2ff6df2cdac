"""R1-Zero GRPO of DeepSeek-V3 (671B parameters, 37.6B active: multi-head latent attention,
256 routed experts of which 8 per token within 4 of 8 groups, a shared expert, 3 dense first
layers), the model R1 was trained from, for ``r1jax plan`` on v5p slices.

Experts are split over the mesh's ``expert`` axis (64: 4 experts per chip) with expert
parallelism (tokens by all-to-all, capacity factor 1.25), every other weight FSDP over the
rest of the slice; G = 16 samples of 32 prompts = 512 rows, routing replay on. At 8,192 tokens
per sequence the smallest v5p slice it fits is v5p-1024 (train step 62.34 GiB of 95.74 per
chip; v5p-512: 112.18 GiB; ``docs/scaling.md``), which the plan finds by trying every v5p
slice from the smallest up (three 671B compiles: 80 minutes on 2 busy CPU cores):

  r1jax plan --config=configs/r1_zero_deepseek_v3.py:8192 --topology=v5p
  r1jax plan --config=configs/r1_zero_deepseek_v3.py:8192 --topology=v5p-1024   # that slice
RoPE is the published checkpoint's YaRN (factor 40 over 4,096 positions, mscale 1).
``get_config("tiny")`` keeps the architecture at toy sizes.
"""

from r1jax.config import presets


def get_config(seq_len: str = "8192"):
    if seq_len == "tiny":
        config = presets.pretrained_family(presets.DEEPSEEK_V3, "tiny", kind="grpo")
        config.grpo.routing_replay = True
        return config
    # 32 prompts x 16 samples = 512 rows: one per chip of v5p-1024. Expert parallel (4 experts
    # per chip, tokens by all-to-all): gathering a layer's 256 experts to every chip does not
    # fit (217.5 GiB per chip on v5p-1024 when planned dropless).
    return presets.moe_r1_zero(
        presets.DEEPSEEK_V3, int(seq_len), num_prompts=32, expert=64, capacity_factor=1.25
    )
