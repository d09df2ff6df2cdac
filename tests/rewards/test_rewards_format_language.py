"""Format (strict and tag-count) and language-consistency rewards."""

import time

import pytest

from r1jax.rewards import (
    FormatReward,
    LanguageReward,
    TagCountReward,
    is_well_formed,
    language_consistency,
    tag_count_score,
)
from r1jax.rewards.language import script_word_counts

WELL_FORMED = [
    "<think>reason</think><answer>3</answer>",
    " <think>\nreason\n</think>\n<answer>\n3\n</answer>\n",  # whitespace around/between blocks
]
ILL_FORMED = [
    "<think>a</think><answer>3</answer></answer>",  # duplicated closing tag
    "<think>a</think><answer>3</answer><think>b</think><answer>4</answer>",  # two blocks
    "<think><think>a</think></think><answer>3</answer>",  # nested
    "<think>a</think><answer>3</answer> The answer is 4.",  # text after </answer>
    "Sure! <think>a</think><answer>3</answer>",  # text before
    "<think>a</think> so <answer>3</answer>",  # text between
    "<answer>3</answer><think>a</think>",  # wrong order
    '<think>a</think><answer value="3"></answer>',  # answer smuggled in an attribute
    "<think>a</think><answer >3</answer>",
    "<Think>a</Think><answer>3</answer>",
    "<think>a</think><answer> </answer>",  # empty answer
    "<think>a</think>",
    "",
]


@pytest.mark.parametrize("completion", WELL_FORMED)
def test_well_formed(completion):
    assert is_well_formed(completion)
    assert tag_count_score(completion) == 1.0


@pytest.mark.parametrize("completion", ILL_FORMED)
def test_ill_formed(completion):
    assert not is_well_formed(completion)


@pytest.mark.parametrize(
    "completion,expected",
    [
        ("<think>a</think><answer>3</answer>", 1.0),
        ("<think>a</think> no answer", 0.5),
        ("<think>a</think><answer>3</answer> trailing", 0.75),
        ("<think>a</think><answer>3</answer></answer>", 0.75),
        ("<answer>3</answer><think>a</think>", 0.25),  # misordered, text after </answer>
        ("nothing", 0.0),
    ],
)
def test_tag_count_partial_credit(completion, expected):
    assert tag_count_score(completion) == pytest.approx(expected)


def test_format_reward_honours_a_prompt_that_opens_think():
    prompts = ["User: q\nAssistant: <think>\n", "User: q. Assistant:"]
    completions = ["reason</think><answer>3</answer>"] * 2
    assert FormatReward()(prompts, completions) == [1.0, 0.0]
    assert TagCountReward()(prompts, completions)[0] == 1.0


@pytest.mark.parametrize(
    "text,language,expected",
    [
        ("we add the two numbers", "en", 1.0),
        ("我们把两个数相加", "zh", 1.0),
        ("we 把两个 numbers", "en", 0.5),  # 2 Latin words, 3 Han characters -> 2/5
        (r"compute \frac{\alpha}{2} = 3", "en", 1.0),  # LaTeX commands are not words
        ("θ and π", "en", 1.0),  # Greek letters are maths here
        ("12 + 3 = 15", "en", 0.0),  # no words at all
        ("Мы складываем", "ru", 1.0),
    ],
)
def test_language_consistency(text, language, expected):
    if text.startswith("we 把"):
        expected = 2 / 5
    assert language_consistency(text, language) == pytest.approx(expected)


def test_language_reward_reads_chain_of_thought_and_language_field():
    completions = ["<think>我们 compute</think><answer>3</answer>"] * 2
    scores = LanguageReward()(["q", "q"], completions, language=["en", "zh"])
    assert scores == [pytest.approx(1 / 3), pytest.approx(2 / 3)]


def test_unknown_language_raises():
    with pytest.raises(ValueError, match="unknown language"):
        LanguageReward(language="xx")


@pytest.mark.parametrize(
    "text, language, low, high",
    [
        # Maths in Latin letters is in no language: Chinese derivations stay Chinese.
        ("设 x + y = 10，则 x = 3 时 y = 7。", "zh", 1.0, 1.0),  # the probe (was 0.43)
        ("设 x 为苹果的数量，则 2x + 3 = 11，所以 x = 4，面积是 12 cm²。", "zh", 1.0, 1.0),
        ("三角形 ABC 中 AB = 5，f(x) = x^2 + 2x，gcd(12, 18) = 6，log 100 = 2。", "zh", 1.0, 1.0),
        ("由 $a^2 + b^2 = c^2$ 和 \\(c = 5\\) 得到 sin θ = 0.6。", "zh", 1.0, 1.0),
        ("Let x = 3, then sin x is small and triangle ABC has area 5 cm", "en", 1.0, 1.0),
        # Mixed prose is mixed, whatever the maths around it.
        ("我们 need to compute the total 然后 check 一下", "zh", 0.4, 0.6),
        ("所以 the answer is x = 4，因为 we subtract 3 from both sides", "zh", 0.2, 0.5),
        ("We add them: 因为 两个 数 相加, so x = 7", "en", 0.3, 0.6),
    ],
)
def test_maths_is_neutral_and_mixed_prose_is_not(text, language, low, high):
    assert low <= language_consistency(text, language) <= high


def test_unclosed_maths_openers_are_linear():
    start = time.monotonic()
    assert script_word_counts("\\(" * 50_000 + " hi there") == {"latin": 2}  # was seconds
    assert script_word_counts("\\[" * 50_000 + "$x$ hi $$") == {"latin": 1}
    assert time.monotonic() - start < 1.0
