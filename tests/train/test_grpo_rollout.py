"""The GRPO rollout stage and RL metrics as host functions, with a fake sampler (no model)."""

import dataclasses

import numpy as np
import pytest

from r1jax.config import GRPOConfig
from r1jax.rewards.shaping import overlong_penalty
from r1jax.sampling import SampleOutput
from r1jax.train import rl_metrics
from r1jax.train import rollout as R

G = 4


def options(**changes) -> GRPOConfig:
    """The rollout tests' GRPO section: no stop strings, 256 new tokens unless changed."""
    return GRPOConfig(**{"max_new_tokens": 256, "stop_strings": (), **changes})


class Tok:
    eos_id = None

    def decode(self, ids, *, skip_special=True):
        return " ".join(f"t{i}" for i in ids)


class ScriptedReward:
    """Scores each completion by its first token's id, recording every call."""

    def __init__(self):
        self.calls = []

    def evaluate(self, prompts, completions, **fields):
        from r1jax.rewards.compose import RewardResult

        self.calls.append(dict(prompts=prompts, completions=completions, **fields))
        scores = [float(c.split()[0][1:]) for c in completions]
        return RewardResult(scores, {"first": scores}, 0, 0, {})


def fake_sampler(first_tokens_per_prompt, width=5, lengths=None, truncated=()):
    """``sample_fn(prompts, round)`` whose row i*G+j starts with ``first_tokens(prompt)[j]``."""
    calls = []

    def fn(prompts, round_index):
        calls.append((prompts, round_index))
        rows = len(prompts) * G
        tokens = np.zeros((rows, width), np.int32)
        for i, p in enumerate(prompts):
            tokens[i * G : (i + 1) * G, 0] = first_tokens_per_prompt(p)
        lens = np.full(rows, 3, np.int32) if lengths is None else np.asarray(lengths[:rows])
        mask = (np.arange(width)[None] < lens[:, None]).astype(np.int32)
        reason = np.where(np.isin(np.arange(rows), truncated), "length", "stop")
        plen = max(len(p) for p in prompts)
        ptoks = np.stack([np.pad(p, (plen - len(p), 0)) for p in prompts]).astype(np.int32)
        return SampleOutput(
            prompt_tokens=np.repeat(ptoks, G, 0),
            prompt_mask=np.repeat((ptoks > 0).astype(np.int32), G, 0),
            tokens=tokens * mask,
            logprobs=-np.ones((rows, width), np.float32) * mask,
            mask=mask,
            lengths=lens,
            finish_reason=reason,
            prompt_index=np.repeat(np.arange(len(prompts), dtype=np.int32), G),
            num_steps=width,
        )

    fn.calls = calls
    return fn


def batches(prompt_ids, num_prompts, width=3):
    """Data batches; prompt k is ``[k+1] * (1 + k % width)`` (so widths vary)."""
    it = iter(prompt_ids)
    while True:
        ids = [next(it) for _ in range(num_prompts)]
        lists = [[k + 1] * (1 + k % width) for k in ids]
        plen = max(map(len, lists))
        tokens = np.stack([np.pad(p, (plen - len(p), 0)) for p in lists]).astype(np.int32)
        yield {
            "prompt_tokens": tokens,
            "prompt_mask": (tokens > 0).astype(np.int32),
            "valid": np.ones(num_prompts, bool),
            "prompts": [f"p{k}" for k in ids],
            "fields": {"answer": [f"a{k}" for k in ids]},
        }


def varied(prompt):  # rewards differ inside the group
    return np.arange(G) + prompt[0]


def constant_for_even(prompt):  # prompts with an odd first id (even k) get equal rewards
    return np.full(G, 7) if prompt[0] % 2 else np.arange(G)


def test_b_prompts_give_b_times_g_completions_with_fields_repeated():
    reward, opts = ScriptedReward(), options(num_samples=G, max_new_tokens=5)
    data = batches(range(100), 3)
    rollout, info = R.collect(
        lambda r: next(data), fake_sampler(varied), reward, Tok(), opts, num_prompts=3
    )
    assert rollout.num_rows == 3 * G and len(rollout.completions) == 3 * G
    (call,) = reward.calls
    assert len(call["completions"]) == 3 * G
    assert call["answer"] == [f"a{k}" for k in range(3) for _ in range(G)]
    assert call["prompts"] == [f"p{k}" for k in range(3) for _ in range(G)]
    assert call["completion_lengths"] == [3] * (3 * G)
    assert info["dynamic/rounds"] == 1 and info["dynamic/groups_dropped"] == 0


def test_advantages_are_per_group_zero_mean_and_survive_microbatching():
    rewards = np.array([0, 1, 0, 1, 5, 5, 5, 6, 2, 2, 2, 2], np.float32)
    opts = options(num_samples=G)
    adv = R.compute_advantages(rewards, opts)
    np.testing.assert_allclose(adv.reshape(-1, G).mean(1), 0.0, atol=1e-6)
    np.testing.assert_array_equal(adv[8:], 0.0)  # equal rewards: zero advantage, no NaN
    # Reference: each group normalised by its own mean and sample std.
    for g in range(2):
        r = rewards[g * G : (g + 1) * G]
        np.testing.assert_allclose(
            adv[g * G : (g + 1) * G], (r - r.mean()) / (r.std(ddof=1) + 1e-6), rtol=1e-5
        )
    # A micro-batch of 2 rows (smaller than G) must carry the whole-batch advantages, not ones
    # recomputed within the micro-batch (which would be +-0.707 for [0, 1]).
    batch = R.build_grpo_batch(_rollout_with(rewards), adv, opts)
    micro = {k: v[::6] for k, v in batch.items()}  # rows 0 and 6, as the step's split takes them
    np.testing.assert_allclose(micro["advantages"], adv[[0, 6]])


def _rollout_with(rewards, truncated=()):
    rows = len(rewards)
    reason = np.where(np.isin(np.arange(rows), truncated), "length", "stop")
    return R.Rollout(
        prompt_tokens=np.ones((rows, 2), np.int32),
        prompt_mask=np.ones((rows, 2), np.int32),
        tokens=np.full((rows, 5), 2, np.int32),
        mask=np.ones((rows, 5), np.int32),
        logprobs=np.full((rows, 5), -0.5, np.float32),
        lengths=np.full(rows, 5, np.int32),
        finish_reason=reason,
        completions=["x"] * rows,
        rewards=np.asarray(rewards, np.float32),
        components={"r": np.asarray(rewards, np.float32)},
    )


def test_dynamic_sampling_drops_degenerate_groups_and_refills():
    reward = ScriptedReward()
    opts = options(num_samples=G, max_new_tokens=5, dynamic_sampling=True)
    data = batches(range(100), 4)
    sampler = fake_sampler(constant_for_even)
    rollout, info = R.collect(lambda r: next(data), sampler, reward, Tok(), opts, num_prompts=4)
    # Half of each batch of 4 is degenerate: 2 rounds give the 4 informative groups.
    assert info["dynamic/rounds"] == 2 and info["dynamic/groups_sampled"] == 8
    assert info["dynamic/groups_dropped"] == 4 and info["dynamic/groups_filled"] == 0
    assert not R.degenerate_groups(rollout.rewards, G).any()
    assert [r for _, r in sampler.calls] == [0, 1]  # each round has its own key
    # Prompts from rounds of different widths are re-left-padded to one width, groups intact.
    np.testing.assert_array_equal(rollout.prompt_mask.sum(1), np.repeat([2, 1, 3, 2], G))
    assert rollout.prompt_tokens[0, -1] == 2 and rollout.prompt_tokens[0, 0] == 0


def test_dynamic_sampling_fills_with_dropped_groups_after_max_rounds():
    opts = options(num_samples=G, dynamic_sampling=True, max_sampling_rounds=2)
    data = batches(range(100), 4)
    all_equal = lambda p: np.full(G, 1)
    rollout, info = R.collect(
        lambda r: next(data), fake_sampler(all_equal), ScriptedReward(), Tok(), opts, num_prompts=4
    )
    assert rollout.num_rows == 4 * G
    assert info["dynamic/rounds"] == 2 and info["dynamic/groups_filled"] == 4


def test_dynamic_sampling_keeps_sampling_until_every_process_has_enough():
    """Sampling is a collective on several processes: one that already has its groups takes
    another round while another process has not (``all_done`` says so), and still returns
    exactly ``num_prompts`` groups."""
    opts = options(num_samples=G, dynamic_sampling=True, max_sampling_rounds=5)
    data = batches(range(100), 4)
    sampler, votes = fake_sampler(varied), []
    others_done = iter([False, False, True])  # the other process needs 3 rounds

    def all_done(enough):
        votes.append(enough)
        return enough and next(others_done)

    rollout, info = R.collect(
        lambda r: next(data),
        sampler,
        ScriptedReward(),
        Tok(),
        opts,
        num_prompts=4,
        all_done=all_done,
    )
    assert votes == [True, True, True] and [r for _, r in sampler.calls] == [0, 1, 2]
    assert info["dynamic/rounds"] == 3 and info["dynamic/groups_sampled"] == 12
    assert rollout.num_rows == 4 * G  # the first round's groups, in order
    np.testing.assert_array_equal(rollout.rewards[::G], [1, 2, 3, 4])


def test_without_dynamic_sampling_degenerate_groups_are_kept():
    opts = options(num_samples=G)
    data = batches(range(100), 4)
    rollout, info = R.collect(
        lambda r: next(data),
        fake_sampler(constant_for_even),
        ScriptedReward(),
        Tok(),
        opts,
        num_prompts=4,
    )
    assert info["dynamic/rounds"] == 1 and R.degenerate_groups(rollout.rewards, G).sum() == 2


def test_truncated_completions_are_masked_only_when_asked():
    rollout = _rollout_with(np.arange(8.0), truncated=(1, 6))
    adv = R.compute_advantages(rollout.rewards, options(num_samples=G))
    on = R.build_grpo_batch(rollout, adv, options(num_samples=G, mask_truncated=True))
    off = R.build_grpo_batch(rollout, adv, options(num_samples=G))
    assert on["completion_mask"].sum(1).tolist() == [5, 0, 5, 5, 5, 5, 0, 5]
    assert off["completion_mask"].sum() == 40
    np.testing.assert_array_equal(on["advantages"], off["advantages"])
    assert "sampler_logprobs" not in on
    tis = R.build_grpo_batch(rollout, adv, options(num_samples=G, keep_sampler_logprobs=True))
    np.testing.assert_array_equal(tis["sampler_logprobs"], tis["old_logprobs"])


@pytest.mark.parametrize(
    "length, expected", [(0, 0.0), (12, 0.0), (13, -0.25), (14, -0.5), (16, -1.0), (20, -1.0)]
)
def test_overlong_penalty_counts_tokens(length, expected):
    assert overlong_penalty(np.array([length]), 16, 4)[0] == pytest.approx(expected)


def test_overlong_penalty_enters_the_reward_as_a_component():
    opts = options(num_samples=G, max_new_tokens=5, overlong_cache=2)
    lengths = np.array([3, 4, 5, 5] * 2)
    data = batches(range(100), 2)
    rollout, _ = R.collect(
        lambda r: next(data),
        fake_sampler(varied, lengths=lengths),
        ScriptedReward(),
        Tok(),
        opts,
        num_prompts=2,
    )
    np.testing.assert_allclose(rollout.components["overlong"], [0, -0.5, -1, -1] * 2)
    np.testing.assert_allclose(
        rollout.rewards, rollout.components["first"] + rollout.components["overlong"]
    )


def test_options_reject_bad_overlong_cache():
    with pytest.raises(ValueError, match="overlong_cache"):
        options(max_new_tokens=4, overlong_cache=8)


# ------------------------------------------------------------------------------ metrics


@pytest.mark.parametrize(
    "text, count",
    [
        ("Wait, let me check that again.", 2),
        ("I will verify: verified. Re-check; recheck; re check.", 5),
        ("We re-evaluate the sum.", 1),
        ("waiter awaits; Let me double-check", 1),  # whole words only
        ("no reflection here", 0),
        ("等等，让我检查一下。重新计算：3 + 4 = 7。我再想想，验算一下。", 5),
        ("苹果和香蕉一共七个。", 0),
    ],
)
def test_reflection_counts(text, count):
    assert rl_metrics.reflection_counts([text]).tolist() == [count]


def test_reflection_metrics_rate_and_mean():
    m = rl_metrics.reflection_metrics(["wait wait", "fine", "Verify it", "ok"])
    assert m == {"reflection/per_completion": 0.75, "reflection/rate": 0.5}


def test_length_and_truncation_metrics():
    m = rl_metrics.length_metrics(np.array([2, 4, 6, 8]), np.array(["stop", "length"] * 2))
    assert m == {"response_length/mean": 5.0, "response_length/max": 8.0, "truncation_rate": 0.5}


def test_reward_metrics_per_component_accuracy_and_format_rate():
    m = rl_metrics.reward_metrics(
        [1.5, 0.5, 1.0, 0.0],
        {"accuracy": [1, 0, 1, 0], "format": [1, 1, 0, 0.25]},
    )
    assert m["reward/total"] == 0.75 and m["reward/accuracy"] == 0.5
    assert m["accuracy"] == 0.5 and m["format_rate"] == 0.5
    assert "accuracy" not in rl_metrics.reward_metrics([1.0], {"emit": [1.0]})


def test_group_and_loss_metrics():
    g = rl_metrics.group_metrics(np.array([1, 1, 0, 1.0]), 2)
    assert g["groups/degenerate_rate"] == 0.5
    m = rl_metrics.loss_metrics({"kl": 0.1, "entropy": 2.0, "clip_frac": 0.0, "loss": 1.0})
    assert m["kl"] == 0.1 and m["train/loss"] == 1.0 and m["entropy"] == 2.0


def test_rollout_is_a_plain_dataclass():
    assert {f.name for f in dataclasses.fields(R.Rollout)} >= {"tokens", "rewards", "components"}


def test_clipped_vocab_tokenizer_drops_ids_beyond_the_tokenizer():
    class Small:
        vocab_size, eos_id = 3, 2

        def decode(self, ids, *, skip_special=True):
            return "".join("abc"[i] for i in ids)

    tok = R.ClippedVocabTokenizer(Small())
    assert tok.decode([0, 7, 1, 3, 2]) == "abc" and tok.eos_id == 2


def test_dynamic_sampling_drops_the_groups_the_shard_owners_rewards_call_degenerate():
    """Processes sharing a data shard must keep the same groups: degeneracy is read from the
    rewards of the shard's first process (``owner_rewards``), which the advantages use too;
    a reward that differed here (a sandbox time-out) kept other groups than the owner's."""
    opts = options(num_samples=G, dynamic_sampling=True, max_sampling_rounds=1)
    data = batches(range(100), 2)
    owner = lambda rewards: np.where(np.arange(len(rewards)) < G, 1.0, rewards)  # group 0 flat
    rollout, info = R.collect(
        lambda r: next(data),
        fake_sampler(varied),
        ScriptedReward(),
        Tok(),
        opts,
        num_prompts=1,
        owner_rewards=owner,
    )
    assert info["dynamic/groups_dropped"] == 1
    np.testing.assert_array_equal(rollout.prompt_tokens[:, -2:], [[2, 2]] * G)  # prompt 1's
