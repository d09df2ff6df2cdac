"""``tokenizer_corpus``: the one builder of task text for tokenizer training; a layout a caller."""

import pytest

from r1jax.data import (
    R1_ZERO_TEMPLATE,
    format_completion,
    format_r1_zero,
    get_task,
    tokenizer_corpus,
)


def _examples(n, seed):
    task = get_task("arithmetic")
    return [task.example(i, seed=seed) for i in range(n)]


def test_fields_layout_is_prompt_reasoning_and_answer_per_example():
    want = []
    for ex in _examples(3, seed=7):
        want += [format_r1_zero(ex["prompt"]), ex["gold_cot"], str(ex["answer"])]
    assert tokenizer_corpus(get_task("arithmetic"), 3, 7, layout="fields") == want


def test_example_layout_is_one_prompt_plus_completion_text_per_example():
    want = [
        format_r1_zero(ex["prompt"]) + format_completion(ex["gold_cot"], ex["answer"])
        for ex in _examples(3, seed=7)
    ]
    assert tokenizer_corpus(get_task("arithmetic"), 3, 7, layout="example") == want


def test_template_once_layout_takes_a_task_name():
    want = [R1_ZERO_TEMPLATE]
    for ex in _examples(2, seed=0):
        want += [ex["prompt"], format_completion(ex["gold_cot"], ex["answer"])]
    assert tokenizer_corpus("arithmetic", 2, layout="template_once") == want


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="layout"):
        tokenizer_corpus("arithmetic", 1, layout="lines")
