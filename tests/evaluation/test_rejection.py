"""Rejection sampling keeps only correct, well-formed, readable, distinct samples, capped."""

from r1jax.evaluation.judge import JudgedSample
from r1jax.evaluation.rejection import RejectionConfig, select

GOOD = "<think>2 + 2 = 4.</think> <answer>4</answer>"


def _sample(q, completion=GOOD, correct=True, well_formed=True, finish="stop"):
    return JudgedSample(
        question=q,
        sample=0,
        prompt=f"q{q}",
        completion=completion,
        extracted="4",
        correct=correct,
        well_formed=well_formed,
        length=10,
        finish_reason=finish,
        fields={"answer": "4"},
    )


def test_keeps_only_correct_well_formed_complete_samples():
    samples = [
        _sample(0),
        _sample(0, "<think>1+3 = 4.</think> <answer>4</answer>", correct=False),
        _sample(1, "4", well_formed=False),
        _sample(2, "<think>2 + 2 = 4. and so</think> <answer>4</answer>", finish="length"),
    ]
    kept, counts = select(samples, RejectionConfig())
    assert kept == [samples[0]]
    assert counts == {"incorrect": 1, "malformed": 1, "truncated": 1}


def test_per_prompt_cap_and_duplicates():
    variants = [f"<think>2 + 2 = 4. Check {i} ok.</think> <answer>4</answer>" for i in range(5)]
    samples = [_sample(0, v) for v in variants] + [_sample(0, variants[0] + "  ")]
    samples += [_sample(1, v) for v in variants[:2]]
    kept, counts = select(samples, RejectionConfig(max_per_prompt=3))
    assert [s.question for s in kept] == [0, 0, 0, 1, 1]
    assert counts == {"over_cap": 2, "duplicate": 1}


def test_language_mixing_and_degenerate_repetition_are_rejected():
    mixed = "<think>We add 所以 答案 是 四 two and two</think> <answer>4</answer>"
    loop = "<think>" + "so it is four " * 30 + "</think> <answer>4</answer>"
    kept, counts = select([_sample(0, mixed), _sample(1, loop)], RejectionConfig())
    assert kept == [] and counts == {"language": 1, "degenerate": 1}
    # Arithmetic-only traces have no words to judge and pass the language filter.
    assert select([_sample(0)], RejectionConfig())[0]
