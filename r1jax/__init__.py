"""r1jax: DeepSeek-R1 style reasoning training (GRPO, SFT, distillation) in JAX.

Importing this package does no work: no devices are touched and nothing is compiled.
"""

__version__ = "0.1.0"
