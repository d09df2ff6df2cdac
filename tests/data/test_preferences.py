"""Preference-pair batches: layout, bad records named by file/line/field, resume, shards."""

import json

import numpy as np
import pytest

from r1jax.data import DataError, get_task, make_preference_dataset
from r1jax.data.templates import format_r1_zero

PAIRS = [
    {"prompt": f"Compute {i} + 1", "chosen": f"<answer>{i + 1}</answer>", "rejected": "no idea"}
    for i in range(10)
]


def _write(tmp_path, rows, name="pairs.jsonl"):
    path = tmp_path / name
    path.write_text("".join(r if isinstance(r, str) else json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_batch_layout_rows_end_with_eos_at_last(tmp_path, sp_tokenizer):
    path = _write(tmp_path, PAIRS)
    ds = make_preference_dataset(path, sp_tokenizer, batch_size=4, seq_len=256, shuffle=False)
    batch = next(iter(ds))
    assert batch["chosen_tokens"].shape == (4, 256) and batch["chosen_tokens"].dtype == np.int32
    assert batch["pair_mask"].tolist() == [1, 1, 1, 1]
    prompt = sp_tokenizer.encode(format_r1_zero("Compute 0 + 1"), add_bos=True)
    for side, text in (("chosen", "<answer>1</answer>"), ("rejected", "no idea")):
        want = prompt + sp_tokenizer.encode(text) + [sp_tokenizer.eos_id]
        last = batch[f"{side}_last"][0]
        assert last == len(want) - 1
        assert batch[f"{side}_tokens"][0, : last + 1].tolist() == want
        assert (batch[f"{side}_tokens"][0, last + 1 :] == sp_tokenizer.pad_id).all()


def test_final_short_batch_has_filler_pairs(tmp_path, sp_tokenizer):
    path = _write(tmp_path, PAIRS)
    ds = make_preference_dataset(
        path, sp_tokenizer, batch_size=4, seq_len=256, num_epochs=1, shuffle=False
    )
    batches = list(ds)
    assert [int(b["pair_mask"].sum()) for b in batches] == [4, 4, 2]


@pytest.mark.parametrize(
    "row, line, field",
    [
        ({"prompt": "q", "chosen": "a"}, 2, "rejected"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, 2, "chosen"),
        ({"prompt": "q", "chosen": 3.5, "rejected": "b"}, 2, None),
        ({"prompt": "q", "chosen": "same", "rejected": " same"}, 2, "rejected"),
        ({"prompt": " ", "chosen": "a", "rejected": "b"}, 2, "prompt"),
    ],
)
def test_malformed_pair_names_file_line_and_field(tmp_path, sp_tokenizer, row, line, field):
    path = _write(tmp_path, [PAIRS[0], row, PAIRS[1]])
    if row.get("chosen") == 3.5:  # a number is read as its text: a valid (odd) pair
        make_preference_dataset(path, sp_tokenizer, batch_size=2, seq_len=256)
        return
    with pytest.raises(DataError) as err:
        make_preference_dataset(path, sp_tokenizer, batch_size=2, seq_len=256)
    assert f"pairs.jsonl:{line}" in str(err.value)
    assert err.value.field == field


def test_sft_record_is_not_a_preference_pair(tmp_path, sp_tokenizer):
    path = _write(tmp_path, [{"prompt": "q", "answer": "1", "think": "t"}])
    with pytest.raises(DataError, match="pairs.jsonl:1: field 'chosen': missing"):
        make_preference_dataset(path, sp_tokenizer, batch_size=1, seq_len=256)


def test_empty_file_is_an_error(tmp_path, sp_tokenizer):
    path = _write(tmp_path, ["\n"])
    with pytest.raises(DataError, match="empty file"):
        make_preference_dataset(path, sp_tokenizer, batch_size=1, seq_len=256)


def test_too_long_pairs_are_skipped_and_counted_or_raise(tmp_path, sp_tokenizer):
    rows = PAIRS[:3] + [{"prompt": "q", "chosen": "word " * 400, "rejected": "b"}] + PAIRS[3:6]
    path = _write(tmp_path, rows)
    ds = make_preference_dataset(path, sp_tokenizer, batch_size=6, seq_len=256, shuffle=False)
    batch = next(iter(ds))
    assert batch["stats"] == {"pairs": 6, "dropped_too_long": 1}
    ds = make_preference_dataset(
        path, sp_tokenizer, batch_size=6, seq_len=256, shuffle=False, on_too_long="raise"
    )
    with pytest.raises(DataError, match="pairs.jsonl:4: field 'chosen'.*over seq_len 256"):
        next(iter(ds))


def test_resume_and_shards_follow_one_global_order(sp_tokenizer):
    task = get_task("arithmetic_preferences")
    make = lambda **kw: make_preference_dataset(task, sp_tokenizer, batch_size=4, seq_len=160, **kw)
    it = iter(make())
    first = [next(it) for _ in range(2)]
    state = it.get_state()
    want = next(it)
    fresh = iter(make())
    fresh.set_state(state)
    got = next(fresh)
    np.testing.assert_array_equal(got["chosen_tokens"], want["chosen_tokens"])
    halves = [next(iter(make(shard_index=i, shard_count=2))) for i in range(2)]
    joined = np.concatenate([h["rejected_tokens"] for h in halves])
    np.testing.assert_array_equal(joined, first[0]["rejected_tokens"])


def test_preference_task_pairs_a_correct_solution_with_each_kind():
    task = get_task("arithmetic_preferences")
    examples = [task.example(i) for i in range(300)]
    kinds = {e["kind"] for e in examples}
    assert kinds == {"wrong_answer", "hasty", "no_format"}
    for e in examples:
        assert e["chosen"] == f"<think>{e['gold_cot']}</think> <answer>{e['answer']}</answer>"
        assert e["rejected"] != e["chosen"]
        if e["kind"] == "wrong_answer":
            assert e["rejected"].startswith(f"<think>{e['gold_cot']}</think>")
            assert f"<answer>{e['answer']}</answer>" not in e["rejected"]
    only = get_task("arithmetic_preferences", kinds="hasty")
    assert {only.example(i)["kind"] for i in range(20)} == {"hasty"}
    with pytest.raises(ValueError, match="kinds"):
        get_task("arithmetic_preferences", kinds="rude")
