"""Rejection sampling keeps only correct, well-formed, readable, distinct samples, capped."""

import itertools

from r1jax.data.formats import normalize_record
from r1jax.evaluation.judge import JudgedSample
from r1jax.evaluation.rejection import RejectionConfig, kept_row, select

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


def test_each_example_is_judged_in_its_own_language():
    """A Chinese trace is kept for an example whose ``language`` is "zh", rejected as mixed
    for one without (the run's language, English); maths in it does not count."""
    zh = "<think>设 x + 3 = 7，所以 x 等于 四。</think> <answer>4</answer>"
    zh_sample = _sample(0, zh)
    zh_sample = JudgedSample(**{**zh_sample.__dict__, "fields": {"answer": "4", "language": "zh"}})
    kept, counts = select([zh_sample, _sample(1, zh)], RejectionConfig())
    assert kept == [zh_sample] and counts == {"language": 1}


def test_code_blocks_and_long_paragraphs_in_the_chain_of_thought_are_rejected():
    code = "<think>We add.\n```python\nprint(2 + 2)\n```\nSo four.</think> <answer>4</answer>"
    words = " ".join("".join(w) for w in itertools.product("bdfk", repeat=3))[:239]  # 60
    long = f"<think>{words}\n\nshort one</think> <answer>4</answer>"
    split = f"<think>{words[:200]}\n\n{words[200:]}</think> <answer>4</answer>"
    settings = RejectionConfig(max_paragraph_words=50)
    kept, counts = select([_sample(0, code), _sample(1, long), _sample(2, split)], settings)
    assert [s.question for s in kept] == [2]
    assert counts == {"code_block": 1, "long_paragraph": 1}
    off = RejectionConfig(max_paragraph_words=0, drop_code_blocks=False)
    assert len(select([_sample(0, code), _sample(1, long)], off)[0]) == 2


def test_a_kept_row_is_the_models_sample_whatever_fields_the_example_carries():
    """Loaded examples carry completion/think (None or the source's own): spread last, they
    replaced the kept sample, and SFT on the output trained on the dataset's solution."""
    for record in (
        {"prompt": "q0", "answer": "4", "think": "gold reasoning", "source": "x"},
        {
            "messages": [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "4"}],
            "answer": "4",
        },
    ):
        example = normalize_record(record, "in.jsonl:1", purpose="rl")
        sample = _sample(0)
        sample = JudgedSample(**{**sample.__dict__, "fields": {**example, "answer": "4"}})
        row = kept_row(sample)
        assert (row["prompt"], row["completion"], row["answer"]) == ("q0", GOOD, "4")
        assert not {"think", "gold_cot", "messages", "_origin"} & set(row)
        again = normalize_record(row, "out.jsonl:1", purpose="sft")
        assert again["completion"] == GOOD and again["think"] is None
