"""LoRA / QLoRA training: the state trains adapters only over a frozen (quantized) base, the
GRPO reference is that base with adapters off, a sharded step equals the one-device step, the
sampler and the trainer agree on the quantized model, and GRPO with LoRA learns the toy task."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from grpo_toy import CONFIG as TOY_CONFIG
from grpo_toy import TOY, CharTokenizer, InlineReward, prompt_batches
from train_common import TINY, grpo_batch, mesh_of, sft_batch

from r1jax.config import GRPOConfig, OptimConfig
from r1jax.config.lora import LoRAConfig
from r1jax.model import forward, init_params
from r1jax.model.lora import init_adapters, merge
from r1jax.sampling import Sampler
from r1jax.train import grpo, objectives
from r1jax.train.adapters import adapted, make_base
from r1jax.train.grpo import GRPOParts
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state
from r1jax.train.step import make_logprobs_fn, make_train_step

NF4 = LoRAConfig(rank=4, alpha=8.0, base_quant="nf4", quant_block=8)
OPTIM = OptimConfig(learning_rate=1e-2, schedule="constant")


def _state(config, lora, mesh, seed=0):
    base = make_base(init_params(config, jax.random.key(seed)), config, lora, mesh)
    optimizer = make_optimizer(OPTIM)
    state = create_train_state(config, optimizer, jax.random.key(1), mesh, frozen=base, lora=lora)
    return state, optimizer


def _sft_steps(mesh, lora=NF4, steps=2):
    state, optimizer = _state(TINY, lora, mesh)
    step = make_train_step(TINY, objectives.sft(TINY), optimizer, mesh, lora=lora)
    losses = []
    for i in range(steps):
        state, metrics = step(state, sft_batch(i, 8, 16))
        losses.append(float(metrics["loss"]))
    return state, losses


def test_only_adapters_are_trained_and_fresh_ones_leave_the_base_model_unchanged():
    mesh = mesh_of(n=1)
    state, optimizer = _state(TINY, NF4, mesh)
    tokens = sft_batch(0, 2, 16)["tokens"]
    run = jax.jit(lambda p: forward(p, tokens, TINY)[0])
    np.testing.assert_array_equal(run(state.model_params()), run(state.frozen))
    base_before = jax.device_get(state.frozen)
    step = make_train_step(TINY, objectives.sft(TINY), optimizer, mesh, lora=NF4)
    state, _ = step(state, sft_batch(0, 8, 16))
    state, _ = step(state, sft_batch(1, 8, 16))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.frozen), base_before)
    assert all(float(jnp.abs(ab["b"]).max()) > 0 for ab in state.params["layers"].values())
    # The optimizer holds Adam's two moments of the adapters, nothing of the base.
    adapter_size = sum(x.size for x in jax.tree.leaves(state.params))
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * adapter_size
    assert not np.array_equal(run(state.model_params()), run(state.frozen))


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_a_sharded_lora_step_equals_the_one_device_step():
    one, losses_one = _sft_steps(mesh_of(n=1))
    sharded, losses_sharded = _sft_steps(mesh_of((2, 2, 2)))
    assert sharded.params["layers"]["q"]["a"].sharding.spec[1] == "fsdp"
    np.testing.assert_allclose(losses_sharded, losses_one, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
        jax.device_get(sharded.params),
        jax.device_get(one.params),
    )


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_the_grpo_reference_is_the_base_with_adapters_off():
    """The adapted objective equals the full-model objective on the merged weights with the
    unadapted model as reference: its KL is to the base, and 0 for fresh adapters."""
    plain = LoRAConfig(rank=4, alpha=8.0)  # fp32 base: the merge is exact
    params = init_params(TINY, jax.random.key(0))
    base = make_base(params, TINY, plain, mesh_of(n=1))
    objective = objectives.grpo(TINY, dataclasses.replace(GRPOConfig(), beta=0.1))
    batch = grpo_batch(0, 8, 6, 10)
    batch["old_logprobs"] = batch["old_logprobs"] - 0.05  # ratios away from 1
    normalizer = objective.normalizer(batch)
    fresh = init_adapters(TINY, plain, jax.random.key(1))
    _, metrics = adapted(objective, plain).loss(fresh, base, batch, normalizer)
    assert float(metrics["kl"]) == 0.0
    trained = jax.tree.map(lambda x: x + 0.05, fresh)
    loss, metrics = adapted(objective, plain).loss(trained, base, batch, normalizer)
    loss_ref, metrics_ref = objective.loss(merge(params, trained, plain), params, batch, normalizer)
    assert float(metrics["kl"]) > 1e-4
    np.testing.assert_allclose(float(loss), float(loss_ref), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), float(metrics_ref["kl"]), rtol=1e-4)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_sampler_and_trainer_logprobs_agree_on_the_quantized_model_in_bf16():
    config = dataclasses.replace(TINY, compute_dtype="bfloat16")
    mesh = mesh_of(n=1)
    state, _ = _state(config, NF4, mesh)
    state = state.replace(params=jax.tree.map(lambda x: x + 0.02, state.params))
    prompts = np.random.default_rng(0).integers(4, 64, (4, 8)).astype(np.int32)
    sampler = Sampler(config, mesh=mesh, buckets=(8,))
    out = sampler(state.model_params(), prompts, rng=jax.random.key(2), num_samples=2,
                  max_new_tokens=12, temperature=1.0)  # fmt: skip
    batch = {
        "prompt_tokens": out.prompt_tokens,
        "prompt_mask": out.prompt_mask,
        "completion_tokens": out.tokens,
    }
    recomputed = make_logprobs_fn(config, mesh, lora=NF4)(state.model_params(), batch)
    mask = out.mask > 0
    diff = np.abs(np.asarray(recomputed)[mask] - out.logprobs[mask])
    assert diff.max() <= 1e-3, diff.max()


def _toy_lora_parts(lora, learning_rate=1e-2):
    """The toy GRPO world over a frozen base whose LM head can express the target: with the
    toy's 0.02 init a frozen head caps any token near 0.2 probability, whatever the layers
    do (full fine-tuning trains the head; LoRA adapts only the layers)."""
    mesh = mesh_of(n=1)
    config = dataclasses.replace(TOY_CONFIG, init_std=0.3)
    base = make_base(init_params(config, jax.random.key(0)), config, lora, mesh)
    optimizer = make_optimizer(OptimConfig(learning_rate=learning_rate, schedule="constant",
                                           b2=0.99))  # fmt: skip
    state = create_train_state(config, optimizer, jax.random.key(0), mesh, frozen=base, lora=lora)
    parts = GRPOParts(
        sampler=Sampler(config, mesh=mesh, buckets=(4,)),
        reward=InlineReward(),
        tokenizer=CharTokenizer(),
        step_fn=make_train_step(config, objectives.grpo(config, TOY), optimizer, mesh, lora=lora),
        logprobs_fn=make_logprobs_fn(config, mesh, lora=lora),
        grpo=TOY,
    )
    return state, parts


@pytest.mark.parametrize(
    "lora",
    [
        # both slow: the default suite stays under 10 minutes; CI runs -m slow
        pytest.param(
            LoRAConfig(rank=8, alpha=16.0, base_quant="nf4", quant_block=16),
            marks=pytest.mark.slow,
        ),
        pytest.param(LoRAConfig(rank=8, alpha=16.0), marks=pytest.mark.slow),
    ],
    ids=["qlora-nf4", "lora"],
)
def test_grpo_with_lora_learns_the_toy_task(lora):
    state, parts = _toy_lora_parts(lora)
    data, means = prompt_batches(4), []
    for step in range(100):
        state, metrics = grpo.grpo_iteration(state, data, parts, step)
        means.append(metrics["reward/total"])
        if step >= 3 and np.mean(means[-3:]) > 0.9:
            break
    assert np.mean(means[-3:]) > 0.9, means[::10]
    assert means[0] < 0.3


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_a_hugging_face_base_is_quantized_leaf_by_leaf_as_it_loads(tmp_path):
    from r1jax.model import hf
    from r1jax.train.adapters import load_base

    config = dataclasses.replace(TINY, tie_embeddings=False)
    params = init_params(config, jax.random.key(0))
    hf.save(tmp_path, config, params)
    mesh = mesh_of((2, 2, 2))
    loaded = load_base(str(tmp_path), config, NF4, mesh)
    expected = make_base(params, config, NF4, mesh)
    assert loaded["layers"]["up"].qvalue.sharding == expected["layers"]["up"].qvalue.sharding
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(loaded), jax.device_get(expected))
    with pytest.raises(ValueError, match="config.init_from=.*num_layers=2 but config.model"):
        load_base(str(tmp_path), dataclasses.replace(config, num_layers=3), NF4, mesh)
