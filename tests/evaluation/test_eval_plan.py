"""How evaluation splits questions over processes and merges the judged samples back.

The multi-process run itself is tests/scaleout/test_eval_multiprocess.py (slow); here the pure
parts: the sampling plan every process follows and the merge of what they gathered.
"""

import dataclasses

import pytest

from r1jax import multihost
from r1jax.evaluation.judge import JudgedSample, _merge_processes, sampling_plan
from r1jax.multihost import DataShard


def test_single_process_plan_is_consecutive_chunks():
    assert sampling_plan(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert sampling_plan(0, 3) == []
    assert sampling_plan(7, 3, splits=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # 7: padding


@pytest.mark.parametrize("num_examples", [1, 7, 16, 20, 33])
@pytest.mark.parametrize("prompts_per_batch", [1, 5, 8, 12])
@pytest.mark.parametrize(("count", "splits"), [(2, 8), (4, 4), (2, 2), (8, 8)])
def test_process_blocks_make_up_the_one_process_calls(
    num_examples, prompts_per_batch, count, splits
):
    """Same mesh, any process count: the global calls, in order, are the one-process calls."""
    one = sampling_plan(num_examples, prompts_per_batch, None, splits)
    blocks = [
        sampling_plan(num_examples, prompts_per_batch, DataShard(i, count), splits)
        for i in range(count)
    ]
    assert [sum(calls, []) for calls in zip(*blocks, strict=True)] == one


@pytest.mark.parametrize("num_examples", [1, 7, 16, 20, 33])
@pytest.mark.parametrize("prompts_per_batch", [1, 5, 8, 12])
@pytest.mark.parametrize(("count", "splits"), [(2, 8), (4, 4), (2, 2), (3, 6)])
def test_process_plans_cover_every_question_once_in_equal_calls(
    num_examples, prompts_per_batch, count, splits
):
    plans = [
        sampling_plan(num_examples, prompts_per_batch, DataShard(i, count), splits)
        for i in range(count)
    ]
    # the same number of sampler calls everywhere, each with the same number of prompts
    assert len({len(p) for p in plans}) == 1
    for calls in zip(*plans, strict=True):
        assert len({len(c) for c in calls}) == 1
        assert sum(len(c) for c in calls) % splits == 0  # the global call splits over the mesh
        assert sum(len(c) for c in calls) <= max(prompts_per_batch, splits) + splits - 1
    questions = sorted(q for p in plans for call in p for q in call)
    real = [q for q in questions if q < num_examples]
    assert real == list(range(num_examples))  # each question exactly once
    assert len(questions) - len(real) < splits  # padding only to the next multiple of splits


def _sample(question: int, sample: int, text: str = "") -> dict:
    fields = dict(prompt="p", extracted=None, correct=False, well_formed=True, length=3)
    fields |= dict(finish_reason="stop", fields={})
    return dataclasses.asdict(
        JudgedSample(question=question, sample=sample, completion=text or f"{question}", **fields)
    )


def test_merge_keeps_one_copy_per_shard_drops_padding_and_orders():
    gathered = [  # per process; process 1 holds shard 0 too (tensor across hosts)
        [_sample(0, 0), _sample(0, 1), _sample(2, 0), _sample(2, 1)],
        [_sample(0, 0, "replica")],
        [_sample(1, 0), _sample(1, 1), _sample(3, 0), _sample(3, 1)],
    ]
    merged = _merge_processes(gathered, owners=[0, 2], num_examples=3)
    assert [(s.question, s.sample) for s in merged] == [(q, i) for q in range(3) for i in (0, 1)]
    assert all(s.completion != "replica" for s in merged)
    assert isinstance(merged[0], JudgedSample)


def test_collectives_are_identities_on_one_process():
    obj = {"a": [1, 2], "b": "x"}
    assert multihost.gather_objects(obj) == [obj]
    multihost.barrier("nothing to wait for")
