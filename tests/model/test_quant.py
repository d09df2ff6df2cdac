"""The frozen base of LoRA training, quantized with qwix: logits within stated tolerances of
the unquantized model, storage 1/2 (int8) and ~1/4 (4-bit) of bf16, the layer scan
dequantising one layer at a time, and the base sharded like its weights."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.config.lora import LoRAConfig
from r1jax.config.model import ModelConfig
from r1jax.model import forward, init_params
from r1jax.model.lora import attach, init_adapters
from r1jax.model.quant import QArray, base_bytes, base_shardings, frozen_base

CONFIG = ModelConfig(vocab_size=128, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=16, mlp_dim=128, tie_embeddings=False, init_std=0.05,
                     param_dtype="float32", compute_dtype="bfloat16")  # fmt: skip
TOKENS = np.random.default_rng(0).integers(0, 128, (4, 32)).astype(np.int32)
# Relative L2 error of the logits and mean KL(bf16 || quantized) over 128 positions.
TOLERANCE = {"int8": (0.03, 1e-4), "int4": (0.25, 5e-3), "nf4": (0.25, 5e-3)}


def _logits(params):
    return jax.jit(lambda p: forward(p, TOKENS, CONFIG)[0])(params).astype(jnp.float32)


@pytest.mark.parametrize(
    "fmt",
    [pytest.param("int8", marks=pytest.mark.slow), pytest.param("int4", marks=pytest.mark.slow),
     "nf4"],
)  # fmt: skip
def test_quantized_logits_are_within_the_stated_tolerance_of_bf16(fmt):
    params = init_params(CONFIG, jax.random.key(0))
    lora = LoRAConfig(rank=4, base_quant=fmt, quant_block=16)
    reference = _logits(frozen_base(params, CONFIG, LoRAConfig(rank=4)))  # bf16, unquantized
    base = jax.jit(lambda p: frozen_base(p, CONFIG, lora))(params)
    assert isinstance(base["layers"]["q"], QArray) and base["embed"].dtype == jnp.bfloat16
    logits = _logits(base)
    rel = float(jnp.linalg.norm(logits - reference) / jnp.linalg.norm(reference))
    lp, lq = jax.nn.log_softmax(reference), jax.nn.log_softmax(logits)
    kl = float(jnp.mean(jnp.sum(jnp.exp(lp) * (lp - lq), -1)))
    max_rel, max_kl = TOLERANCE[fmt]
    assert 0 < rel < max_rel and kl < max_kl, (rel, kl)
    # Fresh adapters (B = 0) leave the quantized model exactly as it is.
    adapters = init_adapters(CONFIG, lora, jax.random.key(1))
    np.testing.assert_array_equal(_logits(attach(base, adapters, lora)), logits)


def test_quantized_base_bytes_are_a_half_and_a_quarter_of_bf16():
    big = dataclasses.replace(CONFIG, hidden_size=512, mlp_dim=1024, num_heads=8, head_dim=64)
    bf16 = base_bytes(big, LoRAConfig(rank=4))
    layers = sum(x.size * 2 for x in jax.tree.leaves(jax.eval_shape(
        lambda: init_params(big, jax.random.key(0))["layers"])))  # fmt: skip
    rest = bf16 - layers
    int8 = base_bytes(big, LoRAConfig(rank=4, base_quant="int8"))
    nf4 = base_bytes(big, LoRAConfig(rank=4, base_quant="nf4"))
    # Projections: 1 byte (int8) or 1/2 byte (4-bit) per weight, plus a bf16 scale per 64.
    assert (int8 - rest) / layers == pytest.approx(0.5 + 1 / 64, rel=0.01)
    assert (nf4 - rest) / layers == pytest.approx(0.25 + 1 / 64, rel=0.01)


def test_a_block_that_does_not_divide_an_input_dim_names_the_field():
    params = init_params(CONFIG, jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"config.lora.quant_block=24 does not divide down's input dim 128"
    ):
        frozen_base(params, CONFIG, LoRAConfig(rank=4, base_quant="nf4", quant_block=24))


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_quantized_base_shards_like_its_weights_and_the_sharded_forward_is_unchanged():
    lora = LoRAConfig(rank=4, base_quant="nf4", quant_block=16)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    params = init_params(CONFIG, jax.random.key(0))
    shardings = base_shardings(CONFIG, lora, mesh)
    q = shardings["layers"]["q"]
    assert q.qvalue.spec == q.scale.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    base = jax.jit(lambda p: frozen_base(p, CONFIG, lora))(params)
    sharded = jax.jit(lambda p: frozen_base(p, CONFIG, lora), out_shardings=shardings)(params)
    with jax.set_mesh(mesh):
        logits = jax.jit(lambda p: forward(p, TOKENS, CONFIG)[0])(sharded)
    np.testing.assert_allclose(
        np.asarray(logits, np.float32), np.asarray(_logits(base)), atol=2e-2, rtol=0
    )
