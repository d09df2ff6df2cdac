"""The GRPO loop on a toy task with the real sampler and train step (tiny model, CPU).

The acceptance run: "emit token X" (reward = share of completion tokens equal to X), scored in
the reward process pool, drives the mean reward above 0.9 within a few hundred steps.
"""

import jax
import numpy as np
import pytest
from grpo_toy import (
    InlineReward,
    composite_reward,
    make_parts,
    prompt_batches,
    replace,
    toy,
)

from r1jax.train import grpo

G, NUM_PROMPTS = 8, 4


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_grpo_learns_to_emit_the_target_token():
    reward = composite_reward(num_workers=1)
    try:
        state, parts = make_parts(reward=reward, learning_rate=1e-2)
        data = prompt_batches(NUM_PROMPTS)
        means = []
        for step in range(300):
            state, metrics = grpo.grpo_iteration(state, data, parts, step)
            means.append(metrics["reward/total"])
            if step >= 3 and np.mean(means[-3:]) > 0.9:
                break
    finally:
        reward.close()
    assert np.mean(means[-3:]) > 0.9, means[::10]
    assert means[0] < 0.3  # it started from chance (1/16)
    assert metrics["reward/emit"] == pytest.approx(metrics["reward/total"])
    assert metrics["train/skipped_total"] == 0


def test_iteration_samples_b_times_g_and_logs_rl_metrics():
    reward = InlineReward()
    state, parts = make_parts(reward=reward)
    state, metrics = grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    (call,) = reward.calls
    assert len(call["completions"]) == NUM_PROMPTS * G
    assert call["completion_lengths"] == [6] * (NUM_PROMPTS * G)
    assert call["prompt_id"][: G + 1] == [call["prompt_id"][0]] * G + [call["prompt_id"][G]]
    for key in (
        "reward/total",
        "reward/emit",
        "response_length/mean",
        "response_length/max",
        "truncation_rate",
        "reflection/rate",
        "entropy",
        "clip_frac",
        "time/sample",
        "time/score",
        "time/update",
        "dynamic/groups_dropped",
    ):
        assert np.isfinite(metrics[key]), key
    assert metrics["truncation_rate"] == 1.0  # no stop token: every row runs to max_new_tokens
    # ... so every slot-step the sampler computed is a kept token
    assert metrics["sample/slot_utilisation"] == 1.0
    assert 0 < metrics["sample/useful_tokens_per_s"] and 0 <= metrics["sample/prompt_padding"] < 1
    assert int(state.step) == 1


class Spy:
    """Wraps a function and records its arguments and results."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args):
        out = self.fn(*args)
        self.calls.append((args, out))
        return out


def _spied(parts):
    step_spy = Spy(parts.step_fn)
    logprobs_spy = Spy(parts.logprobs_fn)
    return replace(parts, step_fn=step_spy, logprobs_fn=logprobs_spy), step_spy, logprobs_spy


def _copy(tree):
    return jax.tree.map(lambda x: np.array(x), tree)


def test_mu_gt_1_recomputes_old_logprobs_before_the_first_inner_update():
    state, parts = make_parts(grpo=toy(num_prompts=NUM_PROMPTS, mu=2))
    parts, step_spy, logprobs_spy = _spied(parts)
    params_before = _copy(state.params)
    # Sampler log-probs replaced by a marker, so pi_old's origin is visible.
    sample = parts.sampler
    parts.sampler = lambda *a, **k: replace(sample(*a, **k), logprobs=np.full((32, 6), -9.0))
    state, metrics = grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    assert len(logprobs_spy.calls) == 1 and len(step_spy.calls) == 2 and int(state.step) == 2
    (params_arg, batch_arg), recomputed = logprobs_spy.calls[0]
    expected = parts.logprobs_fn.fn(jax.tree.map(np.asarray, params_before), batch_arg)
    np.testing.assert_allclose(np.asarray(recomputed), np.asarray(expected), atol=1e-6)
    for (_, batch), _ in step_spy.calls:  # both inner steps clip against the same pi_old
        np.testing.assert_array_equal(np.asarray(batch["old_logprobs"]), np.asarray(recomputed))
    assert not np.any(np.asarray(recomputed) == -9.0)
    assert metrics["train/ratio_mean"] != pytest.approx(1.0, abs=1e-7)  # 2nd step moved off 1


def test_mu_1_uses_the_sampler_logprobs_as_pi_old():
    state, parts = make_parts()
    parts, step_spy, logprobs_spy = _spied(parts)
    sample = parts.sampler
    marker = np.full((32, 6), -2.5, np.float32)
    parts.sampler = lambda *a, **k: replace(sample(*a, **k), logprobs=marker)
    grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    assert not logprobs_spy.calls and len(step_spy.calls) == 1
    (_, batch), _ = step_spy.calls[0]
    np.testing.assert_array_equal(batch["old_logprobs"], marker)


def test_sampler_logprobs_match_the_trainer_recompute():
    """At mu = 1 the ratio starts at exactly the sampler's pi_old: check they agree."""
    state, parts = make_parts()
    parts, step_spy, _ = _spied(parts)
    grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    (_, batch), _ = step_spy.calls[0]
    (state_arg, _), _ = step_spy.calls[0]
    del state_arg  # donated
    state2, parts2 = make_parts()
    recomputed = parts2.logprobs_fn(state2.params, batch)
    mask = batch["completion_mask"] > 0
    np.testing.assert_allclose(np.asarray(recomputed)[mask], batch["old_logprobs"][mask], atol=2e-5)


def test_microbatches_smaller_than_g_give_the_full_batch_update():
    final = []
    for m in (1, 8):  # 32 rows / 8 = micro-batches of 4 rows, smaller than G = 8
        state, parts = make_parts(num_microbatches=m)
        state, metrics = grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
        final.append((_copy(state.params), metrics))
    (p1, m1), (p8, m8) = final
    assert m1["train/loss"] == pytest.approx(m8["train/loss"], abs=1e-6)
    assert m1["train/grad_norm"] == pytest.approx(m8["train/grad_norm"], rel=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), p1, p8)


def test_beta_zero_keeps_no_reference():
    state, parts = make_parts()
    state, _ = grpo.train(state, prompt_batches(NUM_PROMPTS), parts, num_steps=2)
    assert state.frozen is None


def test_beta_positive_keeps_and_refreshes_the_reference():
    state, parts = make_parts(grpo=toy(beta=0.1, num_prompts=NUM_PROMPTS, ref_refresh_every=2))
    initial = _copy(state.params)
    seen = []

    def on_step(s, step, metrics):
        seen.append((step, _copy(s.frozen), _copy(s.params), metrics["kl"]))

    state, _ = grpo.train(state, prompt_batches(NUM_PROMPTS), parts, num_steps=3, on_step=on_step)
    same = lambda a, b: all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
    assert same(seen[0][1], initial) and same(seen[1][1], initial)  # steps 0, 1: the start
    assert same(seen[2][1], seen[1][2])  # refreshed before step 2 from the params after step 1
    assert seen[0][3] == pytest.approx(0.0, abs=1e-6) and seen[1][3] > 0


def test_dynamic_sampling_and_truncation_switches_in_the_loop():
    options = toy(
        num_samples=G,
        max_new_tokens=6,
        stop_at_eos=False,
        dynamic_sampling=True,
        max_sampling_rounds=3,
        mask_truncated=True,
        overlong_cache=2,
    )
    state, parts = make_parts(grpo=options)
    parts, step_spy, _ = _spied(parts)
    state, metrics = grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    (_, batch), _ = step_spy.calls[0]
    assert batch["completion_mask"].sum() == 0  # every row ran to max_new_tokens: masked
    assert metrics["reward/overlong"] == -1.0
    assert metrics["dynamic/rounds"] >= 1 and int(state.skipped) == 0


def test_tis_and_gspo_and_entropy_options_run():
    options = toy(num_samples=G, tis_cap=2.0, importance="sequence", entropy_coef=0.01)
    state, parts = make_parts(grpo=options)
    parts, step_spy, logprobs_spy = _spied(parts)
    state, metrics = grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    (_, batch), _ = step_spy.calls[0]
    assert len(logprobs_spy.calls) == 1 and "sampler_logprobs" in batch
    assert metrics["train/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
    assert np.isfinite(metrics["train/loss"])


def test_sampler_reads_the_train_state_params_without_a_copy():
    state, parts = make_parts()
    seen = []
    sample = parts.sampler

    def spy(params, *args, **kwargs):
        seen.append([x.unsafe_buffer_pointer() for x in jax.tree.leaves(params)])
        return sample(params, *args, **kwargs)

    parts.sampler = spy
    pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state.params)]
    grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
    assert seen == [pointers]


@pytest.mark.slow  # moved to CI's slow step: the default suite measured 10m33s idle
def test_continuous_batching_iteration_equals_the_static_one_with_request_keys():
    """``grpo.decode_slots``: the sampler decodes 32 rows in 8 slots (on the test mesh); the
    iteration's rollout and update equal a static sampler's with the same per-request keys,
    and so do those of a paged cache with fewer pages than the slots could fill."""
    from grpo_toy import CONFIG, PROMPT_LEN, _mesh

    from r1jax.sampling import Sampler

    results = {}
    whole = dict(decode_windows=1)  # every step reads the whole cache: bit for bit
    static = dict(keys="request", **whole)
    paged = dict(slots=8, page_size=2, pages=12, **whole)  # 3 pages per row; 12 < 8 slots x 3
    variants = {"static": static, "continuous": dict(slots=8, **whole), "paged": paged}
    for name, kw in variants.items():
        reward = InlineReward()
        state, parts = make_parts(reward=reward)
        parts = replace(parts, sampler=Sampler(CONFIG, mesh=_mesh(), buckets=(PROMPT_LEN,), **kw))
        state, metrics = grpo.grpo_iteration(state, prompt_batches(NUM_PROMPTS), parts, 0)
        results[name] = (reward.calls[0]["completions"], metrics, state.params)
    (static_rows, static_m, static_p), (rows, m, p) = results["static"], results["continuous"]
    assert rows == static_rows == results["paged"][0]  # the paged cache: the same rows
    assert results["paged"][1]["train/loss"] == m["train/loss"]
    for key in ("reward/total", "train/loss", "train/grad_norm", "entropy"):
        assert m[key] == pytest.approx(static_m[key], abs=1e-6), key
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), p, static_p)
    # Every row runs to max_new_tokens: 32 first tokens + 8 slots x 4 rounds x 5 steps.
    assert m["sample/slot_utilisation"] == 1.0 == static_m["sample/slot_utilisation"]
