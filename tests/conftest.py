"""Test setup: force the CPU backend with 8 fake devices *before* jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Parity tests compare fp32 against fp32; keep XLA's default (highest) CPU matmul precision.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")
# XLA:CPU compiles threefry (the default PRNG) slowly: ~1.5 s per random param leaf. The "rbg"
# generator compiles ~10x faster; tests create their keys with it. Library code is impl-agnostic.
os.environ.setdefault("JAX_DEFAULT_PRNG_IMPL", "rbg")
