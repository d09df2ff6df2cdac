"""The reward model: Bradley–Terry loss, its train step on any mesh, and GRPO with a mixed
rule/model reward (routing, and sharded equal to unsharded)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from grpo_toy import CONFIG, PROMPT_LEN, TOY, CharTokenizer, emit_target, prompt_batches
from train_common import TINY, mesh_of

from r1jax import losses
from r1jax.config import OptimConfig, RewardModelConfig
from r1jax.model import init_params
from r1jax.rewards.compose import RewardResult, RewardSpec
from r1jax.sampling import Sampler
from r1jax.train import objectives, reward_objective
from r1jax.train.grpo import GRPOParts, grpo_iteration
from r1jax.train.model_reward import MixedReward, ModelScorer
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state
from r1jax.train.step import make_logprobs_fn, make_train_step

RM = TINY.replace(score_head=True)
# Adam moves a param by ~lr whatever its gradient's size, so another mesh's fp32 reassociation
# of a near-zero gradient shows at ~1e-3 of lr per step (``test_step``'s note): lr 1e-3 keeps
# that under 1e-5, while a real bug moves params by ~1e-3.
OPTIMIZER = make_optimizer(OptimConfig(learning_rate=1e-3, schedule="constant"))


def test_bradley_terry_loss_is_the_pairs_negative_log_likelihood():
    chosen = jnp.asarray([2.0, -1.0, 0.5, 3.0])
    rejected = jnp.asarray([1.0, 1.0, 0.5, -9.0])
    mask = jnp.asarray([1, 1, 1, 0])
    loss, m = losses.bradley_terry_loss(chosen, rejected, mask)
    margin = np.asarray(chosen - rejected)[:3]
    want = np.mean(np.log1p(np.exp(-margin)))
    np.testing.assert_allclose(float(loss), want, rtol=1e-6)
    assert float(m["accuracy"]) == pytest.approx((1 + 0 + 0.5) / 3)
    assert float(m["num_pairs"]) == 3
    half, _ = losses.bradley_terry_loss(chosen, rejected, mask, normalizer=6.0)
    np.testing.assert_allclose(float(half), want / 2, rtol=1e-6)


def _pairs(seed, n=8, width=12):
    rng = np.random.default_rng(seed)
    batch = {}
    for side in ("chosen", "rejected"):
        last = rng.integers(2, width, n).astype(np.int32)
        tokens = rng.integers(1, TINY.vocab_size, (n, width)).astype(np.int32)
        tokens[np.arange(width)[None] > last[:, None]] = 0
        batch[f"{side}_tokens"], batch[f"{side}_last"] = tokens, last
    batch["pair_mask"] = (np.arange(n) < n - 1).astype(np.int32)  # one filler pair
    return batch


def _train(shape, microbatches=1):
    mesh = mesh_of(shape)
    state = create_train_state(RM, OPTIMIZER, jax.random.key(0), mesh)
    step = make_train_step(
        RM, reward_objective.reward_model(RM), OPTIMIZER, mesh, num_microbatches=microbatches
    )
    metrics = []
    for _ in range(3):  # the same pairs: the loss must fall
        state, m = step(state, _pairs(0))
        metrics.append(jax.device_get(m))
    return jax.device_get(state.params), metrics


@pytest.mark.slow  # 11 s of compiles; the default suite stays under 10 minutes
def test_reward_model_step_is_the_same_on_8_devices_and_with_microbatches():
    params_1, metrics_1 = _train((1, 1, 1))
    assert metrics_1[-1]["loss"] < metrics_1[0]["loss"]
    for shape, micro in (((2, 2, 2), 1), ((1, 1, 1), 2)):
        params, metrics = _train(shape, micro)
        np.testing.assert_allclose(
            [m["loss"] for m in metrics], [m["loss"] for m in metrics_1], rtol=2e-5
        )
        diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params, params_1)
        assert max(jax.tree.leaves(diff)) < 1e-5, (shape, micro)


def test_objective_needs_a_score_head():
    with pytest.raises(ValueError, match="score_head"):
        reward_objective.reward_model(TINY)


# ------------------------------------------------------------------ GRPO, mixed reward


class EosCharTokenizer(CharTokenizer):
    """The toy tokenizer with an EOS (id 1), which the reward model's rows end with."""

    eos_id = 1


class RuleRewards:
    """In-process rule rewards with ``CompositeReward``'s ``specs`` and ``evaluate``:
    "emit" (the toy reward) and "format" (1 when the completion holds no token a)."""

    specs = (RewardSpec("emit"), RewardSpec("format", weight=0.5))

    def evaluate(self, prompts, completions, **fields):
        emit = [float(s) for s in emit_target(prompts, completions)]
        fmt = [float("a" not in c) for c in completions]
        total = [e + 0.5 * f for e, f in zip(emit, fmt, strict=True)]
        return RewardResult(total, {"emit": emit, "format": fmt}, 0, 0, {})

    def close(self):
        pass


RM_TOY = CONFIG.replace(score_head=True)


def _scorer(mesh):
    params = init_params(RM_TOY, jax.random.key(7), mesh=mesh)
    params["score"] = params["score"] * 50.0  # scores of order 1: the ranking matters
    return ModelScorer(RM_TOY, params, mesh, EosCharTokenizer(), max_length=64)


class BosEosCharTokenizer(EosCharTokenizer):
    """With a BOS (id 2) too, added when asked, as the real tokenizers do."""

    bos_id = 2

    def encode(self, text, *, add_bos=False):
        return [2] * add_bos + super().encode(text)


def test_scorer_rows_are_the_preference_datas_rows():
    """The GRPO scorer tokenises (prompt text, completion) exactly as the reward model's
    preference pipeline tokenised (prompt, response): BOS, prompt, response, EOS."""
    from r1jax.data.preferences import PreferenceExample

    tok = BosEosCharTokenizer()
    scorer = ModelScorer(RM_TOY, None, mesh_of((1, 1, 1)), tok, max_length=64)
    example = PreferenceExample(tok, "raw", 64, "raise", True)(
        {"prompt": "abcd", "chosen": "ddd", "rejected": "dab"}
    )
    tokens, last = scorer.rows(["abcd", "abcd"], ["ddd", "dab"])
    for i, side in enumerate(("chosen", "rejected")):
        assert tokens[i, : last[i] + 1].tolist() == example[side].tolist()
        assert tokens[i, 0] == 2 and tokens[i, last[i]] == 1


def test_mixed_reward_routes_each_example_by_its_reward_field():
    scorer = _scorer(mesh_of((1, 1, 1)))
    options = RewardModelConfig(weight=2.0, add_rules=("format",))
    mixed = MixedReward(RuleRewards(), scorer, options)
    prompts, completions = ["abcd"] * 4, ["ddd", "ada", "dbd", "aaa"]
    result = mixed.evaluate(prompts, completions, reward=["model", "rules", None, "model"])
    rules = RuleRewards().evaluate(prompts, completions)
    scores = scorer.score(prompts, completions)
    fmt = rules.components["format"]
    want = [
        2 * scores[0] + 0.5 * fmt[0],
        rules.total[1],
        rules.total[2],
        2 * scores[3] + 0.5 * fmt[3],
    ]
    np.testing.assert_allclose(result.total, want, rtol=1e-6)
    assert result.components["model_routed"] == [1.0, 0.0, 0.0, 1.0]
    assert result.components["model"][1] == 0.0 and result.components["model"][0] == scores[0]
    # A row scores the same alone as in a batch (padding is never attended).
    alone = scorer.score(prompts[:1], completions[:1])
    np.testing.assert_allclose(alone, scores[:1], atol=1e-6)
    with pytest.raises(ValueError, match="task:x#3: field 'reward' is 'judge'"):
        mixed.evaluate(prompts[:1], completions[:1], reward=["judge"], _origin=["task:x#3"])
    with pytest.raises(ValueError, match="add_rules names \\['language'\\]"):
        MixedReward(RuleRewards(), scorer, RewardModelConfig(add_rules=("language",)))
    everything = MixedReward(RuleRewards(), scorer, RewardModelConfig(default_route="model"))
    routed = everything.evaluate(prompts, completions)
    assert routed.components["model_routed"] == [1.0] * 4


def _routed_batches():
    for i, batch in enumerate(prompt_batches(TOY.num_prompts, seed=3)):
        routes = ["model" if (i + j) % 2 else "rules" for j in range(TOY.num_prompts)]
        yield batch | {"fields": {**batch["fields"], "reward": routes}}


def _grpo_run(shape):
    mesh = mesh_of(shape)
    grpo = dataclasses.replace(TOY, num_samples=4)
    state = create_train_state(CONFIG, OPTIMIZER, jax.random.key(0), mesh)
    reward = MixedReward(RuleRewards(), _scorer(mesh), RewardModelConfig(add_rules=("format",)))
    parts = GRPOParts(
        sampler=Sampler(CONFIG, mesh=mesh, buckets=(PROMPT_LEN,)),
        reward=reward,
        tokenizer=EosCharTokenizer(),
        step_fn=make_train_step(CONFIG, objectives.grpo(CONFIG, grpo), OPTIMIZER, mesh),
        logprobs_fn=make_logprobs_fn(CONFIG, mesh),
        grpo=grpo,
        mesh=mesh,
    )
    data, history = _routed_batches(), []
    for step in range(2):
        state, metrics = grpo_iteration(state, data, parts, step)
        history.append(metrics)
    return jax.device_get(state.params), history


@pytest.mark.slow  # 15 s of compiles; the default suite stays under 10 minutes
def test_grpo_with_a_mixed_reward_on_8_devices_equals_one_device():
    params_1, history_1 = _grpo_run((1, 1, 1))
    assert history_1[0]["reward/model_routed"] == 0.5
    assert history_1[0]["reward/model"] != 0.0
    params_8, history_8 = _grpo_run((2, 2, 2))
    for m1, m8 in zip(history_1, history_8, strict=True):
        for key in ("reward/total", "reward/model", "reward/emit", "train/loss"):
            np.testing.assert_allclose(m8[key], m1[key], rtol=1e-5, atol=1e-6, err_msg=key)
    diff = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), params_8, params_1)
    assert max(jax.tree.leaves(diff)) < 1e-5
