"""Group advantages and degenerate groups against naive per-group NumPy loops."""

import math

import numpy as np
import pytest

from r1jax.losses import group_advantages, group_is_degenerate

VARIANTS = [(s, b) for s in ("group", "batch", "none") for b in ("mean", "leave_one_out")]


def _std(xs):
    n = len(xs)
    if n < 2:
        return 0.0
    mu = sum(xs) / n
    return math.sqrt(sum((x - mu) ** 2 for x in xs) / (n - 1))


def ref_advantages(rewards, g, scale, baseline, eps=1e-6):
    rewards = [float(r) for r in rewards]
    batch_std = _std(rewards)
    out = []
    for start in range(0, len(rewards), g):
        group = rewards[start : start + g]
        for i, r in enumerate(group):
            if max(group) == min(group):
                out.append(0.0)
                continue
            if baseline == "mean":
                base = sum(group) / g
            else:
                others = group[:i] + group[i + 1 :]
                base = sum(others) / len(others)
            a = r - base
            if scale == "group":
                a /= _std(group) + eps
            elif scale == "batch":
                a /= batch_std + eps
            out.append(a)
    return np.array(out)


@pytest.mark.parametrize("scale,baseline", VARIANTS)
def test_advantages_match_reference(scale, baseline):
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=12).astype(np.float32)
    rewards[4:8] = 0.5  # one degenerate group among three
    got = np.asarray(group_advantages(rewards, 4, scale=scale, baseline=baseline))
    np.testing.assert_allclose(
        got, ref_advantages(rewards, 4, scale, baseline), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("scale,baseline", VARIANTS)
@pytest.mark.parametrize("g", [1, 4])
def test_equal_rewards_give_exactly_zero_and_no_nan(scale, baseline, g):
    # 0.1 is not representable: a float mean of 0.1s may differ from 0.1 in the last bit.
    rewards = np.full(8, 0.1, np.float32)
    adv = np.asarray(group_advantages(rewards, g, scale=scale, baseline=baseline))
    assert np.all(adv == 0.0) and not np.any(np.isnan(adv))


def test_mean_baseline_is_zero_mean_per_group_and_binary_rewards_scale_to_unit_std():
    rewards = np.array([1, 0, 0, 0, 1, 1, 0, 1], np.float32)
    adv = np.asarray(group_advantages(rewards, 4)).reshape(2, 4)
    np.testing.assert_allclose(adv.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(adv.std(axis=1, ddof=1), 1.0, rtol=1e-5)


def test_group_is_degenerate_flags_equal_groups_only():
    rewards = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0], np.float32)
    assert np.asarray(group_is_degenerate(rewards, 3)).tolist() == [True, False, True]


def test_batch_not_a_multiple_of_group_size_raises():
    with pytest.raises(ValueError, match="multiple of group_size"):
        group_advantages(np.zeros(10, np.float32), 4)
