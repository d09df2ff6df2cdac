"""Loaders for public formats: GSM8K, MATH / MATH-500, {prompt, answer}, {messages}."""

from __future__ import annotations

import json

import pytest

from r1jax.data import DataError, RecordSource, detect_format, extract_boxed, normalize_record

GSM8K = {
    "question": "Natalia sold clips to 48 of her friends in April, and then half as many in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
    "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 1,072",
}
MATH = {
    "problem": "Compute $\\frac{1}{2}+\\frac{1}{3}$.",
    "solution": "We get $\\frac{3}{6}+\\frac{2}{6}=\\boxed{\\frac{5}{6}}$.",
    "level": "Level 1",
    "type": "Prealgebra",
}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{42}$.", "42"),
        ("\\boxed{\\frac{5}{6}}", "\\frac{5}{6}"),
        ("first \\boxed{1} then \\boxed{\\{1, 2\\}} end", "\\{1, 2\\}"),
        ("\\boxed{a^{2} + \\sqrt{b_{1}}}", "a^{2} + \\sqrt{b_{1}}"),
        ("\\fbox{7}", "7"),
        ("no box here", None),
        ("\\boxed{unbalanced {", None),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_gsm8k_record():
    rec = normalize_record(GSM8K, "gsm8k.jsonl:1")
    assert rec["prompt"] == GSM8K["question"] and rec["answer"] == "1072"
    assert "<<" not in rec["think"] and rec["think"].startswith("Natalia sold 48/2 = 24 clips")
    assert "####" not in rec["think"] and rec["_origin"] == "gsm8k.jsonl:1"


def test_math_and_math500_records():
    rec = normalize_record(MATH, "math.jsonl:3")
    assert rec["answer"] == "\\frac{5}{6}" and rec["prompt"] == MATH["problem"]
    assert rec["level"] == "Level 1" and rec["think"] == MATH["solution"]
    math500 = {**MATH, "answer": "\\dfrac{5}{6}", "unique_id": "test/x.json"}
    assert normalize_record(math500, "m:1")["answer"] == "\\dfrac{5}{6}"  # given answer wins


def test_prompt_answer_and_messages_records():
    rec = normalize_record(
        {"prompt": "2+2?", "answer": 4, "gold_cot": "2+2=4."}, "p:1", purpose="sft"
    )
    assert rec["answer"] == "4" and rec["think"] == "2+2=4."
    both = {"prompt": "2+2?", "answer": 4, "think": None, "gold_cot": "2+2=4."}
    assert normalize_record(both, "p:2", purpose="sft")["think"] == "2+2=4."  # null: gold_cot
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>easy</think> <answer>4</answer>"},
    ]
    rec = normalize_record({"messages": msgs}, "c:1", purpose="sft")
    assert rec["messages"] == msgs[:2] and rec["completion"] == msgs[2]["content"]
    assert rec["prompt"] == "2+2?"
    rec = normalize_record({"messages": msgs[:2], "answer": "4"}, "c:2", purpose="rl")
    assert rec["completion"] is None and rec["answer"] == "4"


def test_field_map_and_format_detection():
    assert detect_format(GSM8K) == "gsm8k" and detect_format(MATH) == "math"
    assert detect_format({"messages": []}) == "messages" and detect_format({"x": 1}) is None
    rec = normalize_record(
        {"query": "1+1", "label": "2"}, "f:1", field_map={"query": "prompt", "label": "answer"}
    )
    assert rec["prompt"] == "1+1" and rec["answer"] == "2"


def test_record_source_reads_jsonl_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = tmp_path / "gsm8k.jsonl"
    jsonl.write_text(
        json.dumps(GSM8K) + "\n\n" + json.dumps({**GSM8K, "answer": "x\n#### 5"}) + "\n"
    )
    pq.write_table(
        pa.Table.from_pylist([MATH, {**MATH, "problem": "P2"}]), tmp_path / "math.parquet"
    )
    src = RecordSource([jsonl, tmp_path / "math.parquet"])
    assert len(src) == 4
    assert [r["_origin"] for r in (src[i] for i in range(4))] == [
        f"{jsonl}:1",
        f"{jsonl}:3",  # blank line 2 is skipped, line numbers stay true
        f"{tmp_path / 'math.parquet'}:row 0",
        f"{tmp_path / 'math.parquet'}:row 1",
    ]
    assert src[1]["answer"] == "5" and src[3]["prompt"] == "P2" and src[5]["answer"] == "5"
    with pytest.raises(DataError, match=r"gsm8k\.jsonl:1: field 'problem': missing"):
        RecordSource(jsonl, fmt="math")  # an explicit format is enforced
