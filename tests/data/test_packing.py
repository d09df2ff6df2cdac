"""Packing: whole examples per row (unless splitting is configured), segment ids, positions."""

from __future__ import annotations

import itertools
import json

import grain
import numpy as np
import pytest

from r1jax.data import DataError, PackedBatchIterDataset
from r1jax.data.packing import DROPPED


def make_examples(lengths, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for k, n in enumerate(lengths):
        tokens = rng.integers(1, 1000, size=n).astype(np.int32)
        prompt = int(rng.integers(0, n))
        loss_mask = (np.arange(n) >= prompt).astype(np.int32)
        out.append({"tokens": tokens, "loss_mask": loss_mask, "_origin": f"ex{k}"})
    return out


def pack(examples, **kw):
    ds = PackedBatchIterDataset(grain.MapDataset.source(examples).to_iter_dataset(), **kw)
    return ds, list(ds)


def segments_of(batch):
    """Naive unpacking: every (tokens, loss_mask, positions) segment, row by row, in order."""
    out = []
    B, T = batch["tokens"].shape
    for r in range(B):
        seg = batch["segment_ids"][r]
        ids = [s for s in dict.fromkeys(seg.tolist()) if s != 0]
        assert ids == list(range(1, len(ids) + 1))  # 1..n, left to right
        assert (seg[np.argmax(seg == 0) :] == 0).all() if (seg == 0).any() else True  # pad at end
        for s in ids:
            sel = seg == s
            idx = np.flatnonzero(sel)
            assert (np.diff(idx) == 1).all()  # contiguous
            out.append(
                (batch["tokens"][r][sel], batch["loss_mask"][r][sel], batch["positions"][r][sel])
            )
        assert (batch["tokens"][r][seg == 0] == 0).all() and (
            batch["loss_mask"][r][seg == 0] == 0
        ).all()
    return out


def test_no_split_rows_hold_whole_examples_with_correct_ids_and_positions():
    lengths = [5, 17, 3, 30, 8, 8, 21, 1, 12, 29, 4, 16, 9, 2, 25]
    examples = make_examples(lengths)
    _, batches = pack(examples, batch_size=3, seq_len=32, pad_id=0)
    got = [s for b in batches for s in segments_of(b)]
    assert len(got) == len(examples)
    by_tokens = {e["tokens"].tobytes(): e for e in examples}
    for tokens, loss_mask, positions in got:
        e = by_tokens.pop(tokens.tobytes())  # each example appears exactly once, whole
        np.testing.assert_array_equal(loss_mask, e["loss_mask"])
        np.testing.assert_array_equal(positions, np.arange(len(tokens)))
    assert not by_tokens
    for b in batches:
        assert all(
            b[k].shape == (3, 32) and b[k].dtype == np.int32
            for k in ("tokens", "loss_mask", "segment_ids", "positions")
        )
    assert sum(b["stats"]["examples"] for b in batches) == len(examples)
    assert sum(b["stats"]["tokens"] for b in batches) == sum(lengths)
    assert sum(b["stats"]["loss_tokens"] for b in batches) == sum(
        int(e["loss_mask"].sum()) for e in examples
    )


def test_order_is_kept_first_fit():
    examples = make_examples([20, 20, 10, 5])
    _, batches = pack(examples, batch_size=2, seq_len=32)
    # 20 -> row 0, 20 -> row 1, 10 -> row 0 (fits beside the first 20), 5 -> row 1.
    assert batches[0]["segment_ids"][0, :30].tolist() == [1] * 20 + [2] * 10
    assert batches[0]["segment_ids"][1, :25].tolist() == [1] * 20 + [2] * 5
    assert len(batches) == 1


def test_over_long_example_without_split_is_an_error():
    examples = make_examples([5, 40])
    with pytest.raises(DataError, match="ex1: field 'tokens': example of 40 tokens > seq_len 32"):
        pack(examples, batch_size=2, seq_len=32)


def test_split_mode_concatenates_the_stream_exactly():
    lengths = [50, 7, 33, 12, 64, 3]
    examples = make_examples(lengths, seed=1)
    _, batches = pack(examples, batch_size=2, seq_len=16, allow_split=True)
    pieces = [s for b in batches for s in segments_of(b)]
    np.testing.assert_array_equal(
        np.concatenate([p[0] for p in pieces]), np.concatenate([e["tokens"] for e in examples])
    )
    np.testing.assert_array_equal(
        np.concatenate([p[1] for p in pieces]), np.concatenate([e["loss_mask"] for e in examples])
    )
    assert all((p[2] == np.arange(len(p[0]))).all() for p in pieces)  # restart per segment
    assert all((b["segment_ids"] > 0).all() for b in batches[:-1])  # no padding until the end
    assert sum(b["stats"]["examples"] for b in batches) == len(examples)


def test_pack_false_puts_one_example_per_row():
    examples = make_examples([5, 6, 7, 8, 9])
    _, batches = pack(examples, batch_size=2, seq_len=16, pack=False)
    assert len(batches) == 3 and all(b["segment_ids"].max() <= 1 for b in batches)
    assert batches[-1]["segment_ids"][1].max() == 0  # the last row is all padding


def test_dropped_markers_are_counted_and_drop_remainder():
    examples = make_examples([5, 6])
    stream = [examples[0], {DROPPED: "too_long"}, examples[1], {DROPPED: "too_long"}]
    _, batches = pack(stream, batch_size=1, seq_len=8)
    assert [b["stats"]["dropped_too_long"] for b in batches] == [1, 1]
    assert [b["stats"]["examples"] for b in batches] == [1, 1]
    ds, batches = pack(make_examples([5, 6, 7]), batch_size=1, seq_len=8, drop_remainder=True)
    assert len(batches) == 2


@pytest.mark.parametrize("allow_split", [False, True])
def test_resume_mid_stream_rebuilds_the_same_batches(allow_split):
    examples = make_examples([9, 14, 3, 22, 30, 7, 18, 11, 2, 27, 16, 5, 24, 13], seed=3)
    ds, reference = pack(examples, batch_size=2, seq_len=32, allow_split=allow_split)
    for cut in range(1, len(reference)):
        it = iter(ds)
        head = list(itertools.islice(it, cut))
        state = json.loads(json.dumps(it.get_state()))
        fresh = iter(ds)
        fresh.set_state(state)
        rest = list(fresh)
        assert len(head) + len(rest) == len(reference)
        for x, y in zip(head + rest, reference, strict=True):
            for k in ("tokens", "loss_mask", "segment_ids", "positions"):
                np.testing.assert_array_equal(x[k], y[k])
            assert x["stats"] == y["stats"]
