"""GRPO's update with each prompt's forward shared by its G rows (``prompt_sharing``,
``model.shared_prefix``): the unshared forward's numbers up to rounding, on every mesh, with
micro-batches, on the blockwise attention path; the config's decision and the batch check."""

import dataclasses

import jax
import numpy as np
import pytest
from train_common import TINY, grpo_batch, mesh_of

from r1jax.config import GRPOConfig, OptimConfig
from r1jax.model import MoEConfig, init_params
from r1jax.model.shared_prefix import grouped_next_token_hidden
from r1jax.model.transformer import hidden_states
from r1jax.train import objectives
from r1jax.train.optim import make_optimizer
from r1jax.train.prompt_sharing import check_prompt_groups, prompt_groups
from r1jax.train.state import create_train_state, refresh_frozen
from r1jax.train.step import make_logprobs_fn, make_train_step, split_microbatches

G = 4
LR = 1e-2  # grpo_toy's default learning rate
BIASED = dataclasses.replace(TINY, qkv_bias=True)


def grouped_batch(seed: int, prompts: int = 4, group: int = G, prompt_len=6, length=5) -> dict:
    """``grpo_batch`` whose rows come in runs of ``group`` sharing one (left-padded) prompt."""
    rows = grpo_batch(seed, prompts * group, prompt_len, length)
    first = grpo_batch(seed + 1000, prompts, prompt_len, length)
    for key in ("prompt_tokens", "prompt_mask"):
        rows[key] = np.repeat(first[key], group, axis=0)
    return rows


def test_grouped_hidden_states_equal_the_unshared_forward():
    params = init_params(BIASED, jax.random.key(0))
    batch = grouped_batch(0)
    tokens, positions, seg = objectives.grpo_inputs(batch)
    p = batch["prompt_tokens"].shape[1]
    full = hidden_states(params, tokens, BIASED, positions=positions, segment_ids=seg)[0]
    shared = grouped_next_token_hidden(params, tokens, positions, seg, p, G, BIASED)
    np.testing.assert_allclose(shared, full[:, p - 1 : -1], atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize("impl", ["xla", "blockwise"])
def test_grpo_loss_and_gradient_equal_the_unshared_ones(impl):
    """With a reference (beta > 0) and the entropy term, on the reference attention and on the
    blockwise path (blocks of 4: prompt and completion keys span several blocks)."""
    config = dataclasses.replace(BIASED, attention_impl=impl, attention_block=4)
    options = GRPOConfig(num_samples=G, beta=0.04, entropy_coef=0.01, temperature=0.7)
    params = init_params(config, jax.random.key(1))
    frozen = jax.tree.map(lambda a: a * 0.9, params)
    batch = grouped_batch(2)

    def value_and_grad(groups):
        objective = objectives.grpo(config, options, groups)
        normalizer = objective.normalizer(batch)
        fn = lambda p: objective.loss(p, frozen, batch, normalizer)
        return jax.jit(jax.value_and_grad(fn, has_aux=True))(params)

    (loss_1, metrics_1), grads_1 = value_and_grad(1)
    (loss_g, metrics_g), grads_g = value_and_grad(G)
    np.testing.assert_allclose(loss_g, loss_1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(metrics_g["kl"], metrics_1["kl"], rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(grads_g), jax.tree.leaves(grads_1), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _train(mesh_shape, groups, microbatches=1, steps=2):
    options = GRPOConfig(num_samples=G, beta=0.04)
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-2, schedule="constant"))
    mesh = mesh_of(mesh_shape)
    state = refresh_frozen(create_train_state(TINY, optimizer, jax.random.key(0), mesh))
    step = make_train_step(
        TINY,
        objectives.grpo(TINY, options, groups),
        optimizer,
        mesh,
        num_microbatches=microbatches,
        frozen_config=TINY,
    )
    losses = []
    for seed in range(steps):
        state, metrics = step(state, grouped_batch(seed, prompts=8))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state.params), losses


def test_sharded_shared_update_equals_the_single_device_unshared_one():
    """8 devices (2 data x 2 fsdp x 2 tensor), 2 micro-batches of whole groups, sharing, against
    one device without sharing: the same params after two Adam steps (fp32 reassociation)."""
    params_1, losses_1 = _train((1, 1, 1), groups=1)
    params_8, losses_8 = _train((2, 2, 2), groups=G, microbatches=2)
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params_8), jax.tree.leaves(params_1), strict=True):
        np.testing.assert_allclose(a, b, atol=3e-5)


def test_logprobs_fn_shares_like_the_update():
    mesh = mesh_of((4, 1, 1))
    params = init_params(TINY, jax.random.key(3))
    batch = grouped_batch(4, prompts=4)
    one = make_logprobs_fn(TINY, mesh)(params, batch)
    shared = make_logprobs_fn(TINY, mesh, prompt_groups=G)(params, batch)
    np.testing.assert_allclose(shared, one, atol=1e-5)


def test_microbatches_keep_each_group_together():
    rows = {"x": np.arange(16)}
    mbs = np.asarray(split_microbatches(rows, 2, group=4)["x"])
    np.testing.assert_array_equal(mbs, [[0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]])
    np.testing.assert_array_equal(split_microbatches(rows, 2)["x"][0], np.arange(0, 16, 2))


def test_check_prompt_groups_names_the_rows_that_differ():
    batch = grouped_batch(5)
    check_prompt_groups(batch, G)
    check_prompt_groups(grpo_batch(5, 16, 6, 5), 1)  # no sharing: nothing to check
    batch["prompt_tokens"][G + 1, -1] += 1
    with pytest.raises(ValueError, match=r"rows 4\.\.7 should hold one prompt.*'off'"):
        check_prompt_groups(batch, G)


def test_prompt_groups_decides_from_the_config_and_the_mesh():
    mesh8 = mesh_of((8, 1, 1))
    grpo = GRPOConfig(num_prompts=8, num_samples=G)
    assert prompt_groups(grpo, TINY, mesh8) == G  # 4 rows per shard: one group each
    assert prompt_groups(grpo, TINY, mesh8, num_microbatches=2) == 1  # half a group
    assert prompt_groups(dataclasses.replace(grpo, share_prompts="off"), TINY, mesh8) == 1
    assert prompt_groups(dataclasses.replace(grpo, num_samples=1), TINY, mesh8) == 1
    moe = dataclasses.replace(TINY, moe=MoEConfig(num_experts=4, experts_per_token=2))
    assert prompt_groups(grpo, moe, mesh8) == 1
    with pytest.raises(ValueError, match="share_prompts='on' cannot share: a dense model"):
        prompt_groups(dataclasses.replace(grpo, share_prompts="on"), moe, mesh8)
    # "auto" keeps a fused kernel: splash on a TPU for sequences past attention_block ** 2.
    long = dict(max_length=4 * TINY.attention_block, backend="tpu")
    assert prompt_groups(grpo, TINY, mesh8, **long) == 1
    assert prompt_groups(grpo, TINY, mesh8, **(long | {"backend": "cpu"})) == G
    with pytest.raises(ValueError, match="auto, on or off"):
        GRPOConfig(share_prompts="yes")


def test_packed_grpo_does_not_share():
    with pytest.raises(ValueError, match="pack_length=0"):
        objectives.grpo(TINY, GRPOConfig(num_samples=G, pack_length=32), G)


def test_grpo_iteration_shares_prompts_like_it_runs_unshared():
    """One iteration of the real loop (sampler rollouts, mu = 2 so pi_old is recomputed): the
    rollout batch passes the grouping check and the update matches the unshared one."""
    from grpo_toy import CONFIG, make_parts, prompt_batches, toy

    from r1jax.train.grpo import grpo_iteration

    options = toy(mu=2)
    state, parts = make_parts(grpo=options, learning_rate=LR)
    shared_state, _ = make_parts(grpo=options, learning_rate=LR)
    group = options.num_samples
    mesh = parts.step_fn.mesh
    optimizer = make_optimizer(OptimConfig(learning_rate=LR, schedule="constant", b2=0.99))
    shared = dataclasses.replace(
        parts,
        step_fn=make_train_step(CONFIG, objectives.grpo(CONFIG, options, group), optimizer, mesh),
        logprobs_fn=make_logprobs_fn(CONFIG, mesh, prompt_groups=group),
        prompt_groups=group,
    )
    state, metrics = grpo_iteration(state, prompt_batches(4), parts, 0)
    shared_state, shared_metrics = grpo_iteration(shared_state, prompt_batches(4), shared, 0)
    assert shared_metrics["reward/total"] == metrics["reward/total"]  # the same rollouts
    np.testing.assert_allclose(shared_metrics["train/loss"], metrics["train/loss"], atol=1e-6)
    for a, b in zip(
        jax.tree.leaves(shared_state.params), jax.tree.leaves(state.params), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=3e-5)
