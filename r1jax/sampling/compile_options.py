"""How the sampler's programs are compiled on each platform: the XLA options they are jitted
with (``compiler_options``) and the decode loop's layout (``default_layout``; ``loop.programs``
and ``split_cache`` say what the layouts are). Each was chosen by a measurement, quoted where
it is set; nothing here changes other programs in the process.
"""

from __future__ import annotations

from r1jax.config.model import ModelConfig
from r1jax.model.attention_kernels import target_platform

# Measured on an H200 (docs/sampler.md; Qwen2.5-1.5B shape, 256 rows, bf16): with a layer's
# weights sliced out of the stacked params inside the decode loop, XLA's dot merger concatenates
# gate|up and q|k|v into new buffers at every step (a copy of the MLP weights per step), and its
# Triton GEMMs copy the slices where cuBLAS reads them: 10.66 -> 9.22 ms per step without both.
GPU_DECODE_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_disable_hlo_passes": "dot-merger"}


def compiler_options(platform: str | None = None) -> dict:
    """XLA options for the sampler's programs on ``platform`` (default: ``target_platform``):
    ``GPU_DECODE_OPTIONS`` on a GPU, none elsewhere."""
    platform = platform or target_platform()
    return dict(GPU_DECODE_OPTIONS) if platform in ("gpu", "cuda", "rocm") else {}


# Deepest model the CPU decode loop splits (``default_layout``): unrolled, its compile grows with
# the layers and its step's lead over the scan shrinks (``benchmarks/sampler.py --layout``,
# hidden 256, 64 rows, tokens/s default -> split: 4 layers, 128 new tokens, 8.0-9.5k ->
# 10.8-11.5k (three runs each); 64 new tokens, one run each: 8 layers 5,452 -> 6,290,
# 16 layers 2,895 -> 3,173, 28 layers 1,642 -> 1,413; compile 3.8 -> 8.5 s at 8 layers,
# 5.7 -> 25.7 s at 28).
CPU_SPLIT_MAX_LAYERS = 16


def default_layout(config: ModelConfig) -> str:
    """The decode loop's layout on ``target_platform``: "auto" on a TPU; "split" on a CPU for
    models of up to ``CPU_SPLIT_MAX_LAYERS`` layers (XLA:CPU copies every layer's weights and
    cache out of their stacks at every step; split, the sampler benchmark's default decode step
    takes 5.4-5.9 ms instead of 6.7-8.0, three runs of each); "default" otherwise, and for
    multi-head latent attention (its cache is not split)."""
    platform = target_platform()
    if platform == "tpu":
        return "auto"
    splits = platform == "cpu" and config.mla is None
    return "split" if splits and config.num_layers <= CPU_SPLIT_MAX_LAYERS else "default"
