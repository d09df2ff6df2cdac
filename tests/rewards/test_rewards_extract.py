"""Final-answer extraction: boxes, answer blocks, GSM8K markers, and hedges refused."""

import time

import pytest

from r1jax.rewards import extract_answer, extract_program, final_region, thinking_region

CASES = [
    # (completion, mode, expected)
    (r"so \boxed{42}", "auto", "42"),
    (r"\boxed{\frac{1}{2}}", "auto", r"\frac{1}{2}"),
    (r"\fbox{7}", "boxed", "7"),
    (r"\boxed{\{1, 2\}}", "auto", r"\{1, 2\}"),
    (r"\boxed{a^{b^{c}}}", "auto", "a^{b^{c}}"),
    (r"\boxed{3} and again \boxed{ 3 }", "auto", "3"),
    (r"\boxed{0.5} or \boxed{\frac{1}{2}}", "auto", r"\frac{1}{2}"),  # same value, same key
    ("<think>x</think> <answer> 12 </answer>", "auto", "12"),
    (r"<think>x</think><answer>The result is \boxed{5}</answer>", "auto", "5"),
    ("<think>x</think><answer>12</answer>", "answer_tag", "12"),
    ("Total:\n#### 1,234\n", "gsm8k", "1,234"),
    ("#### 5\nmore\n#### 6", "auto", "6"),
    ("<think>x</think>", "auto", None),
    ("no answer here", "auto", None),
]

HEDGES = [
    r"\boxed{2} wait, actually \boxed{3}",  # self-correction merged: two different boxes
    r"<think>x</think><answer>\boxed{1} or \boxed{2}</answer>",
    r"<think>the answer is \boxed{42}",  # think never closed
    r"\boxed{42",  # unbalanced
    r"\boxed{4} then \boxed{4",  # the last box unbalanced
    "<think>x</think><answer>1</answer><answer>2</answer>",
    r"<think>x</think><answer>1</answer> \boxed{2}",  # a different answer after </answer>
    '<think>x</think><answer value="42"></answer>',
    "<think>x</think><answer >42</answer >",  # lookalike tags
    "<think>x</think>\uff1canswer\uff1e42\uff1c/answer\uff1e",  # fullwidth tags
    "<think>x</think><\u0430nswer>42</\u0430nswer>",  # Cyrillic a
    "<think>x</think>\\b\u043exed{42}",  # Cyrillic o in boxed
    "<think>x</think>\\boxed\uff5b42\uff5d",  # fullwidth braces
    "<think>x</think>\uff3cboxed{42}",  # fullwidth backslash
    r"<think>x</think>\boxedx{42} \unboxed{42}",  # other commands
]


@pytest.mark.parametrize("completion,mode,expected", CASES)
def test_extracts_final_answer(completion, mode, expected):
    assert extract_answer(completion, mode) == expected


@pytest.mark.parametrize("completion", HEDGES)
def test_hedged_or_hidden_answers_extract_nothing(completion):
    assert extract_answer(completion) is None


def test_box_inside_think_is_not_the_answer():
    assert extract_answer(r"<think>\boxed{42}</think><answer>not sure</answer>") == "not sure"
    assert extract_answer(r"<think>\boxed{42}</think> so that is it") is None


def test_box_inside_think_is_ignored_but_final_box_counts():
    completion = r"<think>maybe \boxed{1}</think> final: \boxed{2}"
    assert extract_answer(completion) == "2"


def test_deep_brace_nest_is_linear_and_balanced():
    nest = "{" * 10_000 + "1" + "}" * 10_000
    assert extract_answer(r"\boxed{" + nest + "}") == nest
    assert extract_answer(r"\boxed{" + "{" * 10_000) is None


def test_escaped_braces_do_not_count_as_groups():
    assert extract_answer(r"\boxed{\{1\}}") == r"\{1\}"


def test_regions():
    assert final_region("<think>a</think> b") == " b"
    assert final_region("<think>a") is None
    assert thinking_region("<think> a </think> b") == " a "
    assert thinking_region("a </think> b") == "a "  # prompt opened the think block


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="unknown mode"):
        extract_answer("x", "latex")  # type: ignore[arg-type]


def test_many_unclosed_answer_tags_are_linear():
    start = time.monotonic()
    assert extract_answer("<answer>" * 50_000) is None  # the regex rescanned from each: 14 s
    assert extract_program("<answer>" * 50_000) is None
    assert time.monotonic() - start < 1.0
