"""The pool and CompositeReward: hard per-item limits, errors contained, config-driven sums."""

import os
import time

import pytest

from r1jax.rewards import REWARDS, CompositeReward, Job, RewardPool, RewardSpec, get_reward

HANG = "HANG"


def hang_on_marker(prompts, completions, **fields):
    """Scores 1.0, except that a completion equal to HANG hangs forever."""
    if completions[0] == HANG:
        while True:
            time.sleep(1)
    return [1.0 for _ in completions]


def crash_or_nan(prompts, completions, **fields):
    if completions[0] == "raise":
        raise RuntimeError("boom")
    if completions[0] == "exit":
        os._exit(3)  # The worker process dies.
    return [float("nan")] if completions[0] == "nan" else [0.5]


def test_thousand_items_with_one_hanging_finish_in_bounded_time():
    pool = RewardPool([hang_on_marker], num_workers=2, chunk_size=16)
    completions = ["ok"] * 1000
    completions[437] = HANG
    jobs = [Job(0, "q", c, {}, timeout=1.0) for c in completions]
    start = time.monotonic()
    try:
        outcomes = pool.run(jobs)
    finally:
        pool.close()
    assert time.monotonic() - start < 20.0
    assert outcomes[437].status == "timeout" and outcomes[437].score is None
    assert all(o.status == "ok" and o.score == 1.0 for i, o in enumerate(outcomes) if i != 437)


def test_errors_dead_workers_and_nan_are_contained():
    pool = RewardPool([crash_or_nan], num_workers=1, chunk_size=4)
    completions = ["fine", "raise", "exit", "nan", "fine"]
    try:
        outcomes = pool.run([Job(0, "q", c, {}, timeout=5.0) for c in completions])
    finally:
        pool.close()
    assert [o.status for o in outcomes] == ["ok", "error", "error", "error", "ok"]
    assert outcomes[0].score == 0.5 and outcomes[4].score == 0.5


def test_inline_mode_runs_in_process():
    pool = RewardPool([crash_or_nan], num_workers=0)
    outcomes = pool.run([Job(0, "q", c, {}, timeout=1.0) for c in ["fine", "raise"]])
    assert [o.status for o in outcomes] == ["ok", "error"]


@pytest.fixture(scope="module")
def r1_reward():
    reward = CompositeReward.from_config(
        {
            "accuracy": {"weight": 1.0},
            "format": {"weight": 0.5},
            "language": {"weight": 0.1, "language": "en"},
        },
        num_workers=2,
        item_timeout=3.0,
    )
    yield reward
    reward.close()


def test_composite_weighted_sum_and_components(r1_reward):
    good = "<think>half of one</think> <answer>\\boxed{\\frac{1}{2}}</answer>"
    wrong = "<think>half of one</think> <answer>2</answer>"
    bad_format = "\\boxed{0.5}"
    result = r1_reward.evaluate(["q"] * 3, [good, wrong, bad_format], answer=["0.5"] * 3)
    assert result.components["accuracy"] == [1.0, 0.0, 1.0]
    assert result.components["format"] == [1.0, 1.0, 0.0]
    assert result.components["language"] == [1.0, 1.0, 0.0]
    assert result.total == pytest.approx([1.6, 0.6, 1.0])
    assert (result.timeouts, result.errors) == (0, 0)
    assert result.metrics()["reward/accuracy"] == pytest.approx(2 / 3)
    assert r1_reward(["q"], [good], answer=["1/2"]) == pytest.approx([1.6])


ADVERSARIAL = {
    "several different boxed answers": "<think>t</think><answer>\\boxed{2} \\boxed{3}</answer>",
    "right answer only inside think": "<think>\\boxed{3}</think><answer>unsure</answer>",
    "unbalanced box": "<think>t</think><answer>\\boxed{3</answer>",
    "100k-char completion": "<think>"
    + "3 " * 50_000
    + "</think><answer>"
    + "{" * 100
    + "</answer>",
    "power tower": "<think>t</think><answer>\\boxed{10^{10^{10^{10}}}}</answer>",
    "huge-exponent equation": "<think>t</think><answer>x^{999999999} = 3^{999999999}</answer>",
    "10,000-deep brace nest": "<think>t</think><answer>" + "{" * 10_000 + "3" + "}" * 10_000,
    "repeated format tags": "<think>t</think><answer>3</answer><answer>3</answer>",
    "nested format tags": "<think><answer>3</answer></think><answer>4</answer>",
    "answer in a tag attribute": '<think>t</think><answer value="3"></answer>',
    "answer after </answer>": "<think>t</think><answer>4</answer> \\boxed{3}",
}


@pytest.mark.parametrize("completion", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_completions_score_zero_within_the_limit(r1_reward, completion):
    start = time.monotonic()
    result = r1_reward.evaluate(["q"], [completion], answer=["3"])
    assert time.monotonic() - start < r1_reward.item_timeout + 1.0
    assert result.components["accuracy"] == [0.0]
    assert result.errors == 0


FORMAT_HACKS = [
    "repeated format tags",
    "nested format tags",
    "answer in a tag attribute",
    "answer after </answer>",
    "10,000-deep brace nest",
]


@pytest.mark.parametrize("name", FORMAT_HACKS)
def test_format_hacks_earn_no_format_reward(r1_reward, name):
    result = r1_reward.evaluate(["q"], [ADVERSARIAL[name]], answer=["3"])
    assert result.components["format"] == [0.0]
    assert result.components["accuracy"] == [0.0]


def test_misaligned_fields_are_a_caller_error(r1_reward):
    with pytest.raises(ValueError, match="answer"):
        r1_reward.evaluate(["q", "q"], ["a", "b"], answer=["1"])


def test_registry_and_config_errors():
    assert set(REWARDS) >= {
        "accuracy", "format", "tag_count", "language", "code", "countdown",
        "exact_match", "cosine_length", "overlong", "repetition",
    }  # fmt: skip
    assert get_reward("language", language="zh").language == "zh"
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward("nope")
    with pytest.raises(ValueError, match="bad options"):
        get_reward("format", strictness=2)
    with pytest.raises(ValueError, match="duplicate"):
        CompositeReward([RewardSpec("format"), RewardSpec("format")])


def test_same_reward_twice_under_custom_labels_and_inline_pool():
    config = {
        "acc_fraction": {"reward": "accuracy", "percent": "fraction"},
        "acc_number": {"reward": "accuracy", "percent": "number", "weight": 2.0},
    }
    with CompositeReward.from_config(config, num_workers=0) as reward:
        result = reward.evaluate(["q"], ["\\boxed{10\\%}"], answer=["10"])
    assert result.components == {"acc_fraction": [0.0], "acc_number": [1.0]}
    assert result.total == [2.0]


def test_rewards_are_picklable():
    import pickle

    for name in REWARDS:
        reward = get_reward(name)
        assert pickle.loads(pickle.dumps(reward)) == reward


class SlowToWarm:
    """Scores 1.0 once warmed up; its warm-up takes longer than any job's limit."""

    warmed = False

    def warm_up(self):
        time.sleep(1.5)
        SlowToWarm.warmed = True  # per worker process

    def __call__(self, prompts, completions, **fields):
        return [1.0 if SlowToWarm.warmed else 0.0 for _ in completions]


def test_a_worker_warms_up_before_any_job_deadline_starts():
    pool = RewardPool([SlowToWarm()], num_workers=2, chunk_size=1)
    try:
        outcomes = pool.run([Job(0, "q", "c", {}, timeout=0.5) for _ in range(4)])
    finally:
        pool.close()
    assert [(o.status, o.score) for o in outcomes] == [("ok", 1.0)] * 4


def test_cold_accuracy_workers_pay_correct_answers_from_their_first_job():
    """A fresh worker's first checks must not spend their time limit importing the engine."""
    pool = RewardPool([get_reward("accuracy")], num_workers=2, chunk_size=1)
    completion = "so \\boxed{\\frac{\\sqrt{3}}{2}}"
    try:
        outcomes = pool.run([Job(0, "q", completion, {"answer": "\\sqrt{3}/2"}, 5.0)] * 4)
    finally:
        pool.close()
    assert [(o.status, o.score) for o in outcomes] == [("ok", 1.0)] * 4


class _Fails:
    """Scores 0.25, or raises on the completion "raise"; declares scores in [-1, 0.5]."""

    score_range = (-1.0, 0.5)

    def __call__(self, prompts, completions, **fields):
        if completions[0] == "raise":
            raise RuntimeError("grader crashed")
        return [0.25 for _ in completions]


def test_a_failed_item_scores_each_components_worst_outcome():
    """A completion that hangs or crashes the grader must not outscore a graded one: it takes
    the end of the reward's range that weighs least (it took the floor, 0, which beat a wrong
    answer's cosine-length score of -1)."""
    specs = [RewardSpec("format", 1.0, key="plus"), RewardSpec("format", -2.0, key="minus")]
    with CompositeReward(specs, num_workers=0) as reward:
        reward.functions = (_Fails(), _Fails())
        result = reward.evaluate(["q", "q"], ["raise", "fine"])
    assert result.components == {"plus": [-1.0, 0.25], "minus": [0.5, 0.25]}
    assert result.total == [-2.0, -0.25] and result.errors == 2
    shaped = CompositeReward.from_config(
        {"cosine_length": {}, "format": {"weight": 0.5}, "overlong": {}}, num_workers=0
    )
    assert [shaped.failure_score(j) for j in range(3)] == [-1.0, 0.0, -1.0]
