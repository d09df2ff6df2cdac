"""Bad input: each case names file, line and field, or is skipped and counted when configured."""

from __future__ import annotations

import json

import pytest

from r1jax.data import DataError, RecordSource, make_rl_dataset, make_sft_dataset

GOOD = {"prompt": "Compute 1 + 2", "answer": "3", "think": "1 + 2 = 3."}


def write_jsonl(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


CASES = {
    "malformed": ('{"prompt": "Compute 1 + 2", "answer": ', None, "malformed JSON"),
    "missing_field": ({"prompt": "Compute 1 + 2"}, "answer", "missing"),
    "wrong_type": ({"prompt": ["Compute"], "answer": "3"}, "prompt", "expected str, got list"),
    "not_an_object": ("[1, 2, 3]", None, "expected a JSON object, got list"),
    "unknown_layout": ({"text": "hello"}, None, "cannot tell the format"),
    # RL gold answers no completion could ever match.
    "empty_answer": ({"prompt": "Compute 1 + 2", "answer": ""}, "answer", "empty gold answer"),
    "blank_answer": ({"prompt": "Compute 1 + 2", "answer": " \t"}, "answer", "empty gold"),
    "empty_box": ({"prompt": "Compute", "answer": "$\\boxed{ }$"}, "answer", "empty gold"),
    "nan_answer": ({"prompt": "Compute 0 / 0", "answer": float("nan")}, "answer", "non-finite"),
    "inf_answer": ({"prompt": "Compute 1 / 0", "answer": float("inf")}, "answer", "non-finite"),
    "gsm8k_blank": ({"question": "Q", "answer": "so #### ,"}, "answer", "empty final answer"),
    "bad_language": ({**GOOD, "language": "zh-CN"}, "language", "unknown language 'zh-CN'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_error_names_file_line_and_field(tmp_path, case):
    bad, field, what = CASES[case]
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, GOOD, bad, GOOD])
    with pytest.raises(DataError) as err:
        RecordSource(path)
    message = str(err.value)
    assert message.startswith(f"{path}:3: ") and what in message
    assert err.value.origin == f"{path}:3" and err.value.field == field
    if field is not None:
        assert f"field {field!r}" in message


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_row_is_skipped_and_counted_when_configured(tmp_path, case):
    path = write_jsonl(tmp_path / "train.jsonl", [GOOD, CASES[case][0], GOOD])
    src = RecordSource(path, on_error="skip")
    assert len(src) == 2 and src.num_skipped == 1
    assert src.skipped[0].startswith(f"{path}:2: ")
    assert [src[i]["_origin"] for i in range(2)] == [f"{path}:1", f"{path}:3"]


def test_empty_file_and_all_bad_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty\.jsonl: empty file"):
        RecordSource(empty)
    all_bad = write_jsonl(tmp_path / "bad.jsonl", ["{nope"])
    with pytest.raises(DataError, match="no valid records.*1 bad rows skipped"):
        RecordSource(all_bad, on_error="skip")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RecordSource(tmp_path / "missing.jsonl")


def test_parquet_missing_column_and_wrong_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "a"}, {"prompt": "b"}]), path)
    with pytest.raises(DataError, match=r"d\.parquet:row 0: field 'answer': missing"):
        RecordSource(path)
    pq.write_table(
        pa.Table.from_pylist([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}]),
        path,
    )
    with pytest.raises(DataError, match=r"row 1: field 'answer'"):
        RecordSource(path)
    assert RecordSource(path, on_error="skip").num_skipped == 1
    empty = tmp_path / "e.parquet"
    pq.write_table(pa.Table.from_pylist([], schema=pa.schema([("prompt", pa.string())])), empty)
    with pytest.raises(DataError, match="empty file"):
        RecordSource(empty)


def test_messages_errors_name_the_turn(tmp_path):
    bad = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [bad])
    with pytest.raises(DataError, match=r"chat\.jsonl:1 messages\[1\]: field 'content': missing"):
        RecordSource(path, purpose="sft")
    path = write_jsonl(
        tmp_path / "chat2.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}]
    )
    with pytest.raises(DataError, match="final assistant turn"):
        RecordSource(path, purpose="sft")


def test_over_long_rl_prompt_raises_with_origin_or_is_counted(tmp_path, sp_tokenizer):
    long = {"prompt": "Compute " + " + ".join(["12"] * 200), "answer": "2400"}
    path = write_jsonl(tmp_path / "rl.jsonl", [GOOD, long, GOOD, GOOD, GOOD])
    kw = dict(
        batch_size=2, buckets=(256,), shuffle=False, num_epochs=1, shard_index=0, shard_count=1
    )
    with pytest.raises(
        DataError, match=r"rl\.jsonl:2: field 'prompt': prompt is \d+ tokens, over the limit 256"
    ):
        list(make_rl_dataset(path, sp_tokenizer, on_too_long="raise", **kw))
    it = iter(make_rl_dataset(path, sp_tokenizer, **kw))
    batches = list(it)
    assert [b["stats"]["dropped_too_long"] for b in batches] == [1, 0]
    assert it.get_state()["totals"]["dropped_too_long"] == 1
    assert sum(b["stats"]["examples"] for b in batches) == 4
    with pytest.raises(ValueError, match="on_too_long"):
        make_rl_dataset(path, sp_tokenizer, on_too_long="truncate", **kw)


def test_over_long_sft_example_raise_skip_truncate(tmp_path, sp_tokenizer):
    long = {**GOOD, "think": "1 + 2 = 3. " * 100}
    path = write_jsonl(tmp_path / "sft.jsonl", [GOOD, GOOD, long, GOOD])
    kw = dict(batch_size=2, seq_len=160, shuffle=False, num_epochs=1, shard_index=0, shard_count=1)
    with pytest.raises(DataError, match=r"sft\.jsonl:3: field 'completion': example is \d+ tokens"):
        list(make_sft_dataset(path, sp_tokenizer, on_too_long="raise", **kw))
    skipped = list(make_sft_dataset(path, sp_tokenizer, on_too_long="skip", **kw))
    assert sum(b["stats"]["dropped_too_long"] for b in skipped) == 1
    assert sum(b["stats"]["examples"] for b in skipped) == 3
    truncated = list(make_sft_dataset(path, sp_tokenizer, on_too_long="truncate", **kw))
    assert sum(b["stats"]["truncated"] for b in truncated) == 1
    assert sum(b["stats"]["examples"] for b in truncated) == 4
    assert all(b["tokens"].shape == (2, 160) for b in truncated)


def test_an_endless_source_whose_examples_are_all_too_long_raises_instead_of_hanging(sp_tokenizer):
    from r1jax.data import ArithmeticTask, make_rl_dataset, make_sft_dataset

    task = ArithmeticTask()  # infinite: without a guard, skipping every example never ends
    sft = make_sft_dataset(task, sp_tokenizer, batch_size=2, seq_len=8, on_too_long="skip")
    with pytest.raises(DataError, match="consecutive examples were dropped"):
        next(iter(sft))
    rl = make_rl_dataset(task, sp_tokenizer, batch_size=2, buckets=(8,), on_too_long="skip")
    with pytest.raises(DataError, match="consecutive examples were dropped"):
        next(iter(rl))


def test_a_directory_of_shards_reads_every_data_file_in_sorted_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "train"
    (shards / "more").mkdir(parents=True)
    write_jsonl(shards / "b.jsonl", [dict(GOOD, id=1)])
    write_jsonl(shards / "a.jsonl", [dict(GOOD, id=0)])
    pq.write_table(pa.Table.from_pylist([dict(GOOD, id=2)]), shards / "more" / "c.parquet")
    (shards / "README.md").write_text("not data")
    (shards / ".cache").mkdir()
    write_jsonl(shards / ".cache" / "x.jsonl", ["{"])  # hidden: skipped (it would not parse)
    src = RecordSource(shards)
    assert [src[i]["id"] for i in range(len(src))] == [0, 1, 2]
    assert src.paths == [str(shards / n) for n in ("a.jsonl", "b.jsonl", "more/c.parquet")]
    glob_src = RecordSource(str(shards / "*.jsonl"))
    assert [glob_src[i]["id"] for i in range(len(glob_src))] == [0, 1]


def test_a_directory_or_pattern_without_data_files_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"directory .*empty: no data files"):
        RecordSource(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"pattern .*nothing-\*\.jsonl.*: no data files"):
        RecordSource(str(tmp_path / "nothing-*.jsonl"))
