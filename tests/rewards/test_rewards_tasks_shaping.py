"""Countdown, exact match, accuracy and the shaping rewards."""

import math

import pytest

from r1jax.rewards import (
    AccuracyReward,
    CosineLengthReward,
    CountdownReward,
    ExactMatchReward,
    OverlongReward,
    RepetitionReward,
    countdown_score,
)


def _answer(text):
    return f"<think>work</think><answer>{text}</answer>"


@pytest.mark.parametrize(
    "expression,expected",
    [
        ("(1 + 2) * 3", 1.0),
        ("(1+2)*3 = 9", 1.0),
        ("3 × (2 + 1)", 1.0),
        (r"(1 + 2) \times 3", 1.0),
        ("(1 + 2) * 3 = 10", 0.1),  # valid expression, wrong stated result
        ("1 + 2 + 3", 0.1),  # valid, misses the target
        ("3 * 3", 0.0),  # reuses 3, skips 1 and 2
        ("(1 + 2) * 3 * 1", 0.0),  # uses 1 twice
        ("2**3 + 1", 0.0),  # power is not allowed
        ("9", 0.0),
        ("-1 + 2 * 3 + 4", 0.0),
        ("__import__('os').system('true')", 0.0),
        ("(3 // 1) * (2 + 1)", 0.0),
        ("3 / (2 - 2) + 1", 0.0),  # division by zero
        ("(" * 300 + "1" + ")" * 300, 0.0),
    ],
)
def test_countdown(expression, expected):
    assert countdown_score(_answer(expression), [1, 2, 3], 9, format_score=0.1) == expected


def test_countdown_exact_division():
    assert countdown_score(_answer("(8 / 3) * 3"), [8, 3, 3], 8) == 1.0
    reward = CountdownReward()
    assert reward(["q"], [_answer("8 / 3 * 3")], numbers=[[8, 3, 3]], target=[8]) == [1.0]


def test_exact_match():
    reward = ExactMatchReward()
    completions = [_answer("Paris"), _answer(" Paris "), _answer("paris"), "Paris"]
    assert reward(["q"] * 4, completions, answer=["Paris"] * 4) == [1.0, 1.0, 0.0, 0.0]
    assert ExactMatchReward(ignore_case=True)(["q"], [_answer("paris")], answer=["Paris"]) == [1.0]


def test_accuracy_reward():
    completions = [
        _answer(r"\boxed{\frac{1}{2}}"),
        _answer("0.5"),
        _answer("2"),
        r"<think>\boxed{0.5}</think><answer>no idea</answer>",
    ]
    assert AccuracyReward()(["q"] * 4, completions, answer=["1/2"] * 4) == [1.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="answer"):
        AccuracyReward()(["q"], ["x"])


def test_cosine_length_reward_prefers_short_correct_and_long_wrong():
    reward = CosineLengthReward(max_len=100)
    right, wrong = _answer(r"\boxed{3}"), _answer(r"\boxed{4}")
    scores = reward(
        ["q"] * 4,
        [right, right, wrong, wrong],
        answer=["3"] * 4,
        completion_lengths=[0, 100, 0, 100],
    )
    assert scores == pytest.approx([1.0, 0.5, -1.0, -0.5])
    mid = reward(["q"], [right], answer=["3"], completion_lengths=[50])[0]
    assert mid == pytest.approx(0.75)


def test_length_rewards_count_tokens_not_characters():
    long_text = "x" * 10_000  # 10k characters, but the sampler says 10 tokens
    reward = OverlongReward(max_length=100, cache_length=20)
    assert reward(["q"], [long_text], completion_lengths=[10]) == [0.0]
    assert reward(["q"], ["a b c"], completion_lengths=[90]) == [pytest.approx(-0.5)]
    assert reward(["q"], ["a"], completion_lengths=[101]) == [-1.0]
    by_words = OverlongReward(max_length=100, cache_length=20, length_fn=lambda s: len(s.split()))
    assert by_words(["q"], [long_text]) == [0.0]
    with pytest.raises(ValueError, match="tokens"):
        reward(["q"], [long_text])


def test_chinese_repetition_is_detected_by_characters():
    """Chinese has no spaces: its n-grams are of characters, so a loop is caught and ordinary
    prose is not."""
    loop = "我们再算一次。" * 12
    prose = "首先计算两个数的和，然后把结果乘以三，最后检查答案是否满足题目的所有条件。"
    reward = RepetitionReward(ngram_size=4)
    looped, plain = reward(["q", "q"], [loop, prose])
    assert looped < -0.8 and plain == 0.0


def test_repetition_penalty():
    reward = RepetitionReward(ngram_size=2, max_penalty=-1.0)
    distinct = "a b c d e f"
    looped = "a b a b a b a b"
    scores = reward(["q", "q", "q"], [distinct, looped, "a"])
    assert scores[0] == 0.0 and scores[2] == 0.0
    assert scores[1] == pytest.approx(-(1 - 2 / 7))
    assert all(math.isfinite(s) for s in scores)
