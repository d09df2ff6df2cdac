"""Partial rollouts in the GRPO loop (``grpo.partial_lanes``): rows decoded past an update keep
the log-probs of the policy that sampled them, and those feed the loss as pi_old."""

import jax
import numpy as np
import pytest
from grpo_toy import CONFIG, PROMPT_LEN, InlineReward, _mesh, make_parts, prompt_batches, toy

from r1jax.config import GRPOConfig
from r1jax.sampling import Sampler
from r1jax.train import grpo, partial_rollouts

NUM_PROMPTS = 4


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_rows_sampled_before_an_update_feed_their_behaviour_logprobs_to_the_loss():
    """8 lanes (two batches) and 6 slots: when a batch completes, the next batch's first rows
    are already part-decoded by that policy; the update after it moves the params, and the
    next iteration trains on those rows with the old policy's log-probs as pi_old (not the
    current params', which differ), and counts them in ``sample/stale_token_fraction``."""
    options = toy(partial_lanes=2 * NUM_PROMPTS, decode_slots=6)
    state, parts = make_parts(reward=InlineReward(), grpo=options, learning_rate=3e-2)
    sampler = Sampler(CONFIG, mesh=_mesh(), buckets=(PROMPT_LEN,), slots=6)
    parts = grpo.dataclasses.replace(parts, sampler=sampler, prompt_length=PROMPT_LEN)
    parts.pool = partial_rollouts.make_pool(parts, state, NUM_PROMPTS, PROMPT_LEN)
    harvests, batches = [], []
    next_batch, step_fn = parts.pool.next_batch, parts.step_fn
    parts.pool.next_batch = lambda *a: harvests.append(next_batch(*a)) or harvests[-1]
    parts.step_fn = lambda s, b: batches.append(jax.device_get(b)) or step_fn(s, b)
    data, params = prompt_batches(NUM_PROMPTS), []
    for step in range(3):
        params.append(jax.device_get(state.params))
        state, metrics = grpo.grpo_iteration(state, data, parts, step)
        h, batch = harvests[step], batches[step]
        np.testing.assert_array_equal(batch["completion_tokens"], h.sample.tokens)
        np.testing.assert_array_equal(batch["old_logprobs"], h.sample.logprobs)
        versions = h.versions_BT
        stale = (versions >= 0) & (versions < step)
        assert metrics["sample/stale_token_fraction"] == pytest.approx(stale.sum() / versions.size)
        if step == 0:
            assert not stale.any()
            continue
        assert stale.any() and metrics["sample/policy_lag_max"] == 1
        # pi_old of the stale tokens is the old policy's: a recompute with the old params
        # gives it (these rows' prompts and first tokens were all computed by that policy) ...
        old = np.asarray(parts.logprobs_fn(params[step - 1], batch))
        np.testing.assert_allclose(batch["old_logprobs"][stale], old[stale], atol=2e-5)
        # ... while the params being updated give something else.
        now = np.asarray(parts.logprobs_fn(params[step], batch))
        assert np.abs(now[stale] - batch["old_logprobs"][stale]).max() > 1e-3
    assert metrics["sample/pool_calls"] == 1
    # The pool decodes while the round draws its batch: that time is the sampling time that
    # tokens/s divides by (at most every lane's rows' tokens were sampled this iteration).
    tokens = metrics["sample/useful_tokens_per_s"] * metrics["time/sample"]
    assert 0 < tokens <= 2 * NUM_PROMPTS * options.num_samples * options.max_new_tokens


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_each_dynamic_sampling_round_takes_the_pools_next_batch():
    """DAPO dynamic sampling with every group degenerate (a constant reward): each of the 3
    rounds takes the pool's oldest batch and the pool admits a new data batch into its lanes;
    the batch trains on groups of the first round."""
    options = toy(
        partial_lanes=2 * NUM_PROMPTS, decode_slots=6, dynamic_sampling=True, max_sampling_rounds=3
    )
    reward = InlineReward(fn=lambda prompts, completions, **_: [0.5] * len(completions))
    state, parts = make_parts(reward=reward, grpo=options)
    sampler = Sampler(CONFIG, mesh=_mesh(), buckets=(PROMPT_LEN,), slots=6)
    parts = grpo.dataclasses.replace(parts, sampler=sampler, prompt_length=PROMPT_LEN)
    drawn = []
    data = (drawn.append(b["prompts"]) or b for b in prompt_batches(NUM_PROMPTS))
    state, metrics = grpo.grpo_iteration(state, data, parts, 0)
    assert metrics["dynamic/rounds"] == 3 and metrics["sample/pool_calls"] == 3
    assert metrics["dynamic/groups_dropped"] == 3 * NUM_PROMPTS
    assert len(drawn) == 4  # two batches to fill the lanes, then one per later round
    assert [c["prompts"][:: options.num_samples] for c in reward.calls] == drawn[:3]
    assert len(parts.pool.batches) == 1  # the fourth batch stays in flight


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(partial_lanes=6), "a multiple of num_prompts=4 >= 8"),
        (dict(partial_lanes=8), "decode_slots > 0"),
        (dict(partial_lanes=8, decode_slots=4, decode_min_slots=2), "decode_min_slots=0"),
        (dict(partial_lanes=8, decode_slots=4, mu=2), "mu=1 or tis_cap"),
        (dict(partial_shards=2), "partial_shards=2 needs partial_lanes > 0"),
        (dict(partial_lanes=8, decode_slots=4, partial_shards=3), "partial_shards=3: .* 4 prompts"),
        (dict(partial_lanes=8, decode_slots=6, partial_shards=4), "and the 6 slots"),
        (dict(partial_lanes=8, decode_slots=8, partial_shards=0), "partial_shards=0"),
    ],
)
def test_bad_partial_rollout_settings_are_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        GRPOConfig(num_prompts=4, **changes)
    GRPOConfig(num_prompts=4, partial_lanes=8, decode_slots=4, mu=2, tis_cap=2.0)
    GRPOConfig(num_prompts=4, partial_lanes=8, decode_slots=4, decode_page_size=16)  # paged
    GRPOConfig(num_prompts=4, partial_lanes=8, decode_slots=8, partial_shards=8)  # 2 per prompt
