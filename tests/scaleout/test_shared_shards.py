"""Processes that share a batch shard (the tensor axis spanning hosts) feed the same rows.

``r1jax train`` (SFT, then GRPO) on 2 processes x 4 CPU devices with the mesh data=1 x
tensor=8: both processes hold the only batch shard, so both must read the whole global batch
(the pipeline shards by data shard, not by process). The metrics must equal one process on 8
devices with the same mesh. Fed by process instead, each process would put a different
half-batch on its devices and the run would train on neither batch.

Marked slow: four launches, each compiling the train step (and GRPO the sampler).
"""

import json
import pathlib

import numpy as np
import pytest
from launching import r1jax_on_one_process, r1jax_on_two_processes

MESH = ["--config.mesh.data=1", "--config.mesh.tensor=8"]
SFT = ["--config=configs/sft_tiny.py", "--config.train.steps=3", "--config.train.log_every=1"]
GRPO = [
    "--config=configs/grpo_tiny.py", "--config.train.steps=2", "--config.grpo.num_prompts=4",
    "--config.grpo.max_new_tokens=12", "--config.train.eval_every=2", "--config.eval.num_prompts=4",
]  # fmt: skip


def _metrics(workdir: pathlib.Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def _one_and_two_processes(tmp_path, args: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
    one, two = tmp_path / "one", tmp_path / "two"
    r1jax_on_one_process("train", *args, *MESH, f"--workdir={one}")
    r1jax_on_two_processes("train", *args, *MESH, f"--workdir={two}")
    return one, two


@pytest.mark.slow
def test_processes_sharing_the_batch_shard_train_like_one_process(tmp_path):
    one, two = _one_and_two_processes(tmp_path, SFT)
    losses_one, losses_two = _metrics(one, "loss"), _metrics(two, "loss")
    assert len(losses_one) == len(losses_two) == 3
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-5)


@pytest.mark.slow
def test_grpo_with_a_shared_batch_shard_counts_each_group_once(tmp_path):
    """Both processes sample and score the same 4 groups: metrics count them once, and the
    run equals one process's (same prompts, samples, rewards and update)."""
    one, two = _one_and_two_processes(tmp_path, GRPO)
    for key in ("reward/total", "response_length/mean", "train/loss", "eval/reward/total"):
        np.testing.assert_allclose(_metrics(two, key), _metrics(one, key), rtol=1e-5, err_msg=key)
    assert _metrics(two, "dynamic/groups_sampled") == [4.0, 4.0]
