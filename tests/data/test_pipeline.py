"""grain pipelines: exact resume, disjoint covering shards, seeded shuffles, bucketed shapes."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from r1jax.data import (
    RecordSource,
    encode_prompt,
    format_r1_zero,
    get_task,
    global_order,
    make_rl_dataset,
    make_sft_dataset,
)

ONE = dict(shard_index=0, shard_count=1)


@pytest.fixture(scope="module")
def jsonl_path(tmp_path_factory):
    """37 arithmetic rows as a {prompt, answer, think} JSONL file (odd size on purpose)."""
    task = get_task("arithmetic")
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = []
    for i in range(37):
        ex = task.example(i, seed=11)
        rows.append(
            {"prompt": ex["prompt"], "answer": ex["answer"], "think": ex["gold_cot"], "id": i}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], np.ndarray):
                np.testing.assert_array_equal(x[k], y[k], err_msg=k)
            else:
                assert x[k] == y[k], k


def check_resume(ds, total: int, cut: int):
    """Batches [cut:total] after save/restore (through JSON) == an uninterrupted run's."""
    reference = list(itertools.islice(iter(ds), total))
    it = iter(ds)
    head = list(itertools.islice(it, cut))
    state = json.loads(json.dumps(it.get_state()))
    for _ in range(3):  # the live iterator moves on; the saved state must not
        next(it, None)
    fresh = iter(ds)
    fresh.set_state(state)
    tail = list(itertools.islice(fresh, total - cut))
    assert_batches_equal(head + tail, reference)
    return reference


@pytest.mark.parametrize("cut", [1, 4, 7])
def test_rl_resume_is_exact_over_epochs(jsonl_path, sp_tokenizer, cut):
    ds = make_rl_dataset(jsonl_path, sp_tokenizer, batch_size=5, seed=3, num_epochs=None, **ONE)
    batches = check_resume(ds, total=10, cut=cut)  # 50 rows: crosses the 37-row epoch boundary
    ids = [i for b in batches for i in b["fields"]["id"]]
    assert sorted(ids[:37]) == list(range(37))  # first epoch is a permutation
    assert ids[37:50] != ids[:13]  # and the next epoch is reshuffled


@pytest.mark.parametrize("prefetch", [0, 3])
def test_rl_resume_on_task_stream(sp_tokenizer, prefetch):
    ds = make_rl_dataset(
        get_task("countdown"),
        sp_tokenizer,
        batch_size=4,
        seed=1,
        buckets=(128, 192),
        prefetch=prefetch,
        **ONE,
    )
    check_resume(ds, total=6, cut=2)


@pytest.mark.parametrize("allow_split", [False, True])
def test_sft_resume_is_exact_with_carried_examples(jsonl_path, sp_tokenizer, allow_split):
    ds = make_sft_dataset(
        jsonl_path,
        sp_tokenizer,
        batch_size=2,
        seq_len=400,
        seed=2,
        allow_split=allow_split,
        prefetch=2 if allow_split else 0,  # a background thread must not change the stream
        **ONE,
    )
    for cut in (1, 3, 5):
        batches = check_resume(ds, total=8, cut=cut)
    assert all(b["tokens"].shape == (2, 400) for b in batches)
    assert max(int(b["segment_ids"].max()) for b in batches) >= 2  # rows really hold several


def _concat_shards(batches_per_shard):
    """The per-shard batches of one step, concatenated back into one global batch."""
    out = []
    for parts in zip(*batches_per_shard, strict=True):
        merged = {}
        for key in parts[0]:
            if key == "stats":
                assert all(p["stats"] == parts[0]["stats"] for p in parts)  # global, everywhere
                merged[key] = parts[0]["stats"]
            elif key == "fields":
                merged[key] = {f: sum((p[key][f] for p in parts), []) for f in parts[0][key]}
            elif isinstance(parts[0][key], list):
                merged[key] = sum((p[key] for p in parts), [])
            else:
                merged[key] = np.concatenate([p[key] for p in parts])
        out.append(merged)
    return out


@pytest.mark.parametrize("shards", [2, 4])
def test_rl_shards_are_contiguous_blocks_of_the_one_process_batches(
    jsonl_path, sp_tokenizer, shards
):
    # Short buckets drop some prompts as too long and the last batch has filler rows: both are
    # decided once, globally, so every shard count gives the same global batches.
    kw = dict(batch_size=8, seed=5, num_epochs=2, drop_remainder=False, buckets=(136, 138))
    one = list(make_rl_dataset(jsonl_path, sp_tokenizer, **kw))
    assert sum(b["stats"]["dropped_too_long"] for b in one) > 0
    assert not one[-1]["valid"].all()
    per_shard = [
        list(make_rl_dataset(jsonl_path, sp_tokenizer, shard_index=i, shard_count=shards, **kw))
        for i in range(shards)
    ]
    assert all(b["prompt_tokens"].shape[0] == 8 // shards for b in per_shard[0])
    assert_batches_equal(_concat_shards(per_shard), one)


@pytest.mark.parametrize("shards", [2, 4])
def test_sft_shards_are_contiguous_blocks_of_the_one_process_batches(
    jsonl_path, sp_tokenizer, shards
):
    kw = dict(batch_size=4, seq_len=400, seed=2, num_epochs=1)
    one = list(make_sft_dataset(jsonl_path, sp_tokenizer, **kw))
    per_shard = [
        list(make_sft_dataset(jsonl_path, sp_tokenizer, shard_index=i, shard_count=shards, **kw))
        for i in range(shards)
    ]
    assert_batches_equal(_concat_shards(per_shard), one)


def test_data_state_is_global_and_restores_onto_another_shard_count(jsonl_path, sp_tokenizer):
    kw = dict(batch_size=4, seed=3, num_epochs=None)
    two = [
        iter(make_rl_dataset(jsonl_path, sp_tokenizer, shard_index=i, shard_count=2, **kw))
        for i in range(2)
    ]
    for it in two:
        for _ in range(3):
            next(it)
    assert two[0].get_state() == two[1].get_state()  # one state: the global order's position
    one = iter(make_rl_dataset(jsonl_path, sp_tokenizer, **kw))
    one.set_state(two[0].get_state())  # saved on 2 shards, resumed on 1
    reference = iter(make_rl_dataset(jsonl_path, sp_tokenizer, **kw))
    for _ in range(3):
        next(reference)
    assert_batches_equal([next(one) for _ in range(2)], [next(reference) for _ in range(2)])


def test_global_order_covers_every_record_once_per_epoch(jsonl_path):
    order = global_order(RecordSource(jsonl_path), seed=5, shuffle=True, num_epochs=3)
    ids = [order[i]["id"] for i in range(len(order))]
    assert sorted(ids) == sorted(list(range(37)) * 3)
    assert ids[:37] != ids[37:74]  # reshuffled every epoch


def test_a_batch_that_does_not_split_over_the_shards_is_refused(jsonl_path, sp_tokenizer):
    with pytest.raises(ValueError, match="batch_size=6 .* multiple of the 4 data shards"):
        make_rl_dataset(jsonl_path, sp_tokenizer, batch_size=6, shard_index=0, shard_count=4)


def test_task_stream_shards_are_blocks_of_one_stream(sp_tokenizer):
    task = get_task("arithmetic")
    one = make_rl_dataset(task, sp_tokenizer, batch_size=4, seed=9)
    origins = [o for b in itertools.islice(one, 3) for o in b["fields"]["_origin"]]
    per_shard = [
        make_rl_dataset(task, sp_tokenizer, batch_size=4, seed=9, shard_index=i, shard_count=2)
        for i in range(2)
    ]
    shards = [list(itertools.islice(ds, 3)) for ds in per_shard]
    merged = [o for b in _concat_shards(shards) for o in b["fields"]["_origin"]]
    assert merged == origins == [f"task:arithmetic/9#{i}" for i in range(12)]


def test_shuffle_is_seeded(jsonl_path, sp_tokenizer):
    def order(seed, shuffle=True):
        ds = make_rl_dataset(
            jsonl_path, sp_tokenizer, batch_size=37, seed=seed, num_epochs=1, shuffle=shuffle, **ONE
        )
        return next(iter(ds))["fields"]["id"]

    assert order(0) == order(0)
    assert order(0) != order(1)
    assert sorted(order(1)) == list(range(37))
    assert order(0, shuffle=False) == list(range(37))


def test_rl_batch_layout(jsonl_path, sp_tokenizer):
    buckets = (160, 192, 256)
    ds = make_rl_dataset(jsonl_path, sp_tokenizer, batch_size=4, seed=0, buckets=buckets, **ONE)
    for batch in itertools.islice(ds, 5):
        tokens, mask, lengths = (
            batch["prompt_tokens"],
            batch["prompt_mask"],
            batch["prompt_lengths"],
        )
        assert tokens.dtype == np.int32 and tokens.shape[0] == 4 and tokens.shape[1] in buckets
        assert tokens.shape[1] == min(b for b in buckets if b >= lengths.max())
        for i in range(4):
            n = lengths[i]
            prompt = batch["fields"]["prompt"][i]
            assert batch["prompts"][i] == format_r1_zero(prompt)
            expected = encode_prompt(sp_tokenizer, format_r1_zero(prompt))
            np.testing.assert_array_equal(tokens[i, -n:], expected)  # left-padded
            assert (tokens[i, :-n] == sp_tokenizer.pad_id).all()
            assert mask[i].tolist() == [0] * (tokens.shape[1] - n) + [1] * n
        assert set(batch["fields"]) >= {"prompt", "answer", "think", "id", "_origin"}
        assert batch["valid"].all()


def test_rl_final_short_batch_is_filled_with_invalid_rows(jsonl_path, sp_tokenizer):
    ds = make_rl_dataset(
        jsonl_path, sp_tokenizer, batch_size=8, num_epochs=1, drop_remainder=False, **ONE
    )
    batches = list(ds)
    assert len(batches) == 5 and batches[-1]["valid"].sum() == 37 - 32
    last = batches[-1]
    assert last["prompt_tokens"].shape[0] == 8 and (last["prompt_mask"][~last["valid"]] == 0).all()
    assert last["fields"]["answer"][-1] is None and last["prompts"][-1] == ""
    assert (
        len(list(make_rl_dataset(jsonl_path, sp_tokenizer, batch_size=8, num_epochs=1, **ONE))) == 4
    )


def test_sft_batches_hold_every_example_once(jsonl_path, sp_tokenizer):
    ds = make_sft_dataset(jsonl_path, sp_tokenizer, batch_size=3, seq_len=512, num_epochs=1, **ONE)
    batches = list(ds)
    assert sum(b["stats"]["examples"] for b in batches) == 37
    segments = []
    for b in batches:
        for r in range(3):
            for s in range(1, b["segment_ids"][r].max() + 1):
                sel = b["segment_ids"][r] == s
                segments.append(sp_tokenizer.decode(b["tokens"][r][sel & (b["loss_mask"][r] == 1)]))
    src = RecordSource(jsonl_path)
    expected = sorted(
        f"<think>{r['think']}</think> <answer>{r['answer']}</answer>"
        for r in (src[i] for i in range(37))
    )
    assert sorted(segments) == expected


def test_chat_template_pipeline(hf_tokenizer, tmp_path):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{i}+1?"},
                {"role": "assistant", "content": f"{i + 1}"},
            ]
        }
        for i in range(6)
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = make_sft_dataset(
        path,
        hf_tokenizer,
        batch_size=2,
        seq_len=64,
        template="chat",
        num_epochs=1,
        shuffle=False,
        **ONE,
    )
    batch = next(iter(ds))
    row = batch["tokens"][0][batch["segment_ids"][0] == 1]
    loss = batch["loss_mask"][0][batch["segment_ids"][0] == 1]
    assert hf_tokenizer.decode(row, skip_special=False).startswith(
        "<|im_start|>user\n0+1?<|im_end|>"
    )
    assert hf_tokenizer.decode(row[loss == 1]) == "1"


@pytest.mark.slow  # ~20 s: worker processes start a fresh interpreter each
def test_worker_processes_give_the_same_examples(sp_tokenizer):
    """mp_prefetch workers: same set of examples as in-process, and resumable."""
    task = get_task("arithmetic")
    kw = dict(batch_size=4, seed=0, buckets=(192,), **ONE)
    plain = list(itertools.islice(make_rl_dataset(task, sp_tokenizer, **kw), 4))
    ds = make_rl_dataset(task, sp_tokenizer, worker_count=2, **kw)
    it = iter(ds)
    with_workers = list(itertools.islice(it, 4))
    key = lambda bs: sorted(o for b in bs for o in b["fields"]["_origin"])
    assert key(plain) == key(with_workers)
    state = it.get_state()
    reference = [next(it) for _ in range(2)]
    fresh = iter(ds)
    fresh.set_state(state)
    assert_batches_equal([next(fresh) for _ in range(2)], reference)
