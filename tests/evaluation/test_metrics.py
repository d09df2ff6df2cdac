"""pass@1, pass@k and maj@k against hand-computed cases; every pass@1 agrees."""

import random
import types

import numpy as np
import pytest

from r1jax.evaluation import (
    QuestionResult,
    is_correct,
    majority_vote,
    pass_at_1,
    pass_at_k,
    question_results,
    summarize,
)
from r1jax.evaluation.judge import _judge


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 0, 1, 0.0),
        (4, 4, 1, 1.0),
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 4, 1.0),  # fewer than k wrong samples: some correct one is always drawn
        (10, 3, 3, 1 - 35 / 120),
    ],
)
def test_pass_at_k_matches_hand_computed_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_counts_equivalent_answers_written_differently_as_one_vote():
    # "1/2", "0.5", "\frac{1}{2}" are one answer (3 votes) and beat "2" (2 votes).
    answers = ["2", "1/2", "0.5", "2", "\\frac{1}{2}"]
    correct = [False, True, True, False, True]
    vote = majority_vote(answers, correct)
    assert vote.votes == 3 and vote.correct and vote.score == 1.0
    assert vote.answer == "0.5"  # shown: most frequent spelling, then shortest, then smallest


def test_majority_tie_scores_the_share_of_correct_tied_answers_whatever_the_order():
    for answers, correct in [
        (["7", "8", "8", "7"], [False, True, True, False]),
        (["8", "7", "7", "8"], [True, False, False, True]),
    ]:
        vote = majority_vote(answers, correct)
        assert (vote.answer, vote.votes, vote.tied, vote.score) == ("7", 2, 2, 0.5)
        assert not vote.correct  # correct only if every tied answer is


def test_unparseable_answers_cast_no_vote():
    vote = majority_vote([None, None, "3"], [False, False, True])
    assert vote.answer == "3" and vote.votes == 1 and vote.correct
    empty = majority_vote([None, None], [False, False])
    assert empty.answer is None and not empty.correct and empty.score == 0 and empty.votes == 0


def test_summarize_reports_pass1_as_mean_over_samples_and_maj_at_k():
    results = [
        QuestionResult(
            (True, False, True, True), ("4", "5", "4", "4.0"), (True,) * 4, (10, 12, 8, 9)
        ),
        QuestionResult(
            (False, False, True, False),
            ("1", "1", "2", None),
            (True, False, True, True),
            (5, 5, 5, 5),
        ),
    ]
    s = summarize(results, ks=(1, 4))
    assert s["pass@1"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert s["pass@4"] == pytest.approx(1.0)
    assert s["maj@4"] == pytest.approx(0.5)  # q1: "4" wins (3 votes, correct); q2: "1" wins
    assert s["maj@1"] == pytest.approx(0.5)  # first samples: correct, wrong
    assert s["format_rate"] == pytest.approx(7 / 8)
    assert s["mean_length"] == pytest.approx(59 / 8) and s["max_length"] == 12


def test_summarize_maj_at_k_counts_a_tie_as_half_correct():
    result = QuestionResult((True, False), ("4", "5"), (True, True), (1, 1))
    assert summarize([result], ks=(1, 2))["maj@2"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "rewards, expected",
    [
        ([0.0, 1.0], [False, True]),
        ([0.1, 0.5, 0.75], [False, False, False]),  # partial credit (code tests, Countdown format)
        ([1.0, 1.0 - 1e-9], [True, False]),
        ([True, False], [True, False]),  # verdicts pass through
        ([[1.0, 0.0], [0.0, 1.0]], [[True, False], [False, True]]),  # any shape
    ],
)
def test_is_correct_needs_the_full_correctness_reward(rewards, expected):
    np.testing.assert_array_equal(is_correct(rewards), np.array(expected))


def test_pass_at_1_is_the_mean_correctness_over_samples():
    assert pass_at_1([True, False, True, True]) == pytest.approx(0.75)
    assert pass_at_1(np.array([1.0, 0.75, 0.0, 1.0])) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        pass_at_1([])


def test_pass_at_1_agrees_with_summarize_and_a_per_question_reference():
    rng = random.Random(0)
    n = 5
    rewards = [[rng.choice([0.0, 0.1, 0.75, 1.0]) for _ in range(n)] for _ in range(7)]
    results = [
        QuestionResult(tuple(bool(c) for c in is_correct(r)), (None,) * n, (True,) * n, (1,) * n)
        for r in rewards
    ]
    per_question = sum(sum(x >= 1.0 for x in r) / n for r in rewards) / len(rewards)
    summary = summarize(results, ks=(1,))
    assert summary["pass@1"] == pytest.approx(per_question)
    assert pass_at_1(np.array(rewards)) == pytest.approx(summary["pass@1"])


class _FixedRewards:
    """A CompositeReward stand-in paying fixed correctness rewards."""

    def __init__(self, correct):
        self.correct = correct

    def evaluate(self, prompts, completions, **fields):
        n = len(completions)
        return types.SimpleNamespace(
            components={"correct": self.correct[:n], "format": [1.0] * n}, timeouts=0
        )


def test_judged_samples_use_is_correct_so_every_pass_at_1_agrees():
    rewards = [1.0, 0.75, 0.0, 1.0, 0.5, 1.0]  # 2 questions x 3 samples
    out = types.SimpleNamespace(lengths=[4] * 6, finish_reason=["stop"] * 6)
    chunk = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    samples, _ = _judge([0, 1], chunk, ["x"] * 6, out, 3, _FixedRewards(rewards))
    assert [s.correct for s in samples] == [True, False, False, True, False, True]
    from_samples = summarize(question_results(samples, 3), ks=(1,))["pass@1"]
    assert from_samples == pytest.approx(pass_at_1(rewards))
    assert from_samples == pytest.approx(0.5)
