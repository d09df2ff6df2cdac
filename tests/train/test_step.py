"""The train step: same result on every mesh shape, exact accumulation, non-finite skip.

Compiles are the cost on CPU, so each test reuses the module's optimizer and compiled steps.
"""

import jax
import numpy as np
import pytest
from train_common import TINY, grpo_batch, mesh_of, sft_batch

from r1jax.config import GRPOConfig, OptimConfig
from r1jax.train import objectives
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state, refresh_frozen
from r1jax.train.step import make_logprobs_fn, make_train_step

OPTIMIZER = make_optimizer(OptimConfig(learning_rate=1e-2, schedule="constant", weight_decay=0.1))
SFT_BATCHES = [sft_batch(i, 8, 16) for i in range(3)]
# Adam at lr 1e-2 moves every param by ~1e-2 a step whatever its gradient's size, so fp32
# reassociation (another mesh's reduce-scatters, micro-batch sums) shows at ~1e-3 of a step on
# near-zero gradients: 1.2e-5 after 3 steps with jax 0.10.2. A real bug moves params by ~1e-2.
PARAMS_ATOL = 3e-5


def _scaled_sft() -> objectives.Objective:
    """SFT times ``batch["scale"][0]``: scale 1 is exactly SFT, scale inf makes it non-finite."""
    sft = objectives.sft(TINY)

    def loss(params, frozen, batch, normalizer):
        value, metrics = sft.loss(params, frozen, batch, normalizer)
        return value * batch["scale"][0], metrics

    return objectives.Objective("scaled_sft", loss, sft.normalizer)


def _with_scale(batch, scale):
    return batch | {"scale": np.full((len(batch["tokens"]),), scale, np.float32)}


def _run(mesh_shape, objective, batches, *, microbatches=1, reference=False):
    mesh = mesh_of(mesh_shape)
    state = create_train_state(TINY, OPTIMIZER, jax.random.key(0), mesh)
    if reference:
        state = refresh_frozen(state)
    step = make_train_step(
        TINY,
        objective,
        OPTIMIZER,
        mesh,
        num_microbatches=microbatches,
        frozen_config=TINY if reference else None,
    )
    metrics = []
    for batch in batches:
        state, m = step(state, batch)
        metrics.append(jax.device_get(m))
    return state, metrics, step


def _max_diff(a, b):
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs))


@pytest.fixture(scope="module")
def one_device():
    batches = [_with_scale(b, 1.0) for b in SFT_BATCHES]
    state, metrics, step = _run((1, 1, 1), _scaled_sft(), batches)
    return jax.device_get(state.params), metrics, state, step


@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1)])
def test_three_steps_on_8_devices_match_one_device(one_device, shape):
    params_1, metrics_1, _, _ = one_device
    batches = [_with_scale(b, 1.0) for b in SFT_BATCHES]
    state, metrics_8, _ = _run(shape, _scaled_sft(), batches)
    assert _max_diff(params_1, state.params) <= PARAMS_ATOL
    losses_1, losses_8 = [m["loss"] for m in metrics_1], [m["loss"] for m in metrics_8]
    np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
    assert int(state.step) == 3
    # The donated state keeps its declared shardings; Adam's moments are sharded like params.
    mu = state.opt_state[1][0].mu
    assert mu["layers"]["q"].sharding == state.params["layers"]["q"].sharding
    assert len(state.params["layers"]["q"].sharding.device_set) == 8


def test_four_microbatches_equal_one_big_batch(one_device):
    params_1, metrics_1, _, _ = one_device
    batches = [_with_scale(b, 1.0) for b in SFT_BATCHES]
    state, metrics_4, _ = _run((1, 1, 1), _scaled_sft(), batches, microbatches=4)
    np.testing.assert_allclose(
        [m["loss"] for m in metrics_4], [m["loss"] for m in metrics_1], rtol=1e-6
    )
    np.testing.assert_allclose(
        [m["grad_norm"] for m in metrics_4], [m["grad_norm"] for m in metrics_1], rtol=1e-5
    )
    assert _max_diff(params_1, state.params) <= PARAMS_ATOL


def test_non_finite_update_is_dropped_and_counted(one_device):
    _, _, state, step = one_device
    before = jax.device_get((state.params, state.opt_state, state.step))
    state, m = step(state, _with_scale(SFT_BATCHES[0], np.inf))
    assert int(m["skipped"]) == 1 and int(state.skipped) == 1 and int(state.step) == 4
    after = jax.device_get((state.params, state.opt_state))
    assert jax.tree.all(jax.tree.map(np.array_equal, before[:2], after))
    state, m = step(state, _with_scale(SFT_BATCHES[0], 1.0))
    assert int(m["skipped"]) == 0 and int(m["skipped_total"]) == 1
    assert not np.array_equal(jax.device_get(state.params["embed"]), before[0]["embed"])


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_grpo_accumulation_with_reference_and_recomputed_old_logprobs():
    """GRPO (beta > 0, seq_mean) over 4 micro-batches == one batch; pi_old recomputed by
    ``make_logprobs_fn`` gives ratio 1 (no clipping) on the first step."""
    options = GRPOConfig(beta=0.04, eps_high=0.28, temperature=0.7)
    objective = objectives.grpo(TINY, options)
    mesh = mesh_of((1, 1, 1))
    params = create_train_state(TINY, OPTIMIZER, jax.random.key(0), mesh).params
    batch = grpo_batch(3, 8, 6, 8)
    logprobs_fn = make_logprobs_fn(TINY, mesh, temperature=0.7)
    batch["old_logprobs"] = np.asarray(logprobs_fn(params, batch))
    state_a, metrics_a, _ = _run((1, 1, 1), objective, [batch], reference=True)
    state_b, metrics_b, _ = _run((1, 1, 1), objective, [batch], microbatches=4, reference=True)
    for m in (metrics_a[0], metrics_b[0]):
        np.testing.assert_allclose(m["ratio_mean"], 1.0, atol=1e-6)
        assert float(m["clip_frac"]) == 0.0 and abs(float(m["kl"])) < 1e-6
    np.testing.assert_allclose(metrics_b[0]["loss"], metrics_a[0]["loss"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics_b[0]["grad_norm"], metrics_a[0]["grad_norm"], rtol=1e-5)
    assert _max_diff(state_a.params, state_b.params) <= 1e-5


def test_micro_batch_split_is_checked_on_the_global_batch_naming_the_fields():
    from r1jax.train.step import check_microbatches

    check_microbatches(32, 4, "config.train.batch_size")
    with pytest.raises(ValueError, match=r"12 rows .*num_microbatches=8 equal micro-batches"):
        check_microbatches(12, 8, "config.train.batch_size")
