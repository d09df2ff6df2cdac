"""Processes that share a batch shard (the tensor axis spanning hosts) feed the same rows.

``r1jax train`` (SFT, then GRPO) on 2 processes x 4 CPU devices with the mesh data=1 x
tensor=8: both processes hold the only batch shard, so both must read the whole global batch
(the pipeline shards by data shard, not by process). The metrics must equal one process on 8
devices with the same mesh. Fed by process instead, each process would put a different
half-batch on its devices and the run would train on neither batch.

Marked slow: four launches, each compiling the train step (and GRPO the sampler).
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 600
MESH = ["--config.mesh.data=1", "--config.mesh.tensor=8"]
SFT = ["--config=configs/sft_tiny.py", "--config.train.steps=3", "--config.train.log_every=1"]
GRPO = [
    "--config=configs/grpo_tiny.py", "--config.train.steps=2", "--config.grpo.num_prompts=4",
    "--config.grpo.max_new_tokens=12", "--config.train.eval_every=2", "--config.eval.num_prompts=4",
]  # fmt: skip


def _run(command: list[str], devices: int) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R1JAX_", "XLA_"))}
    env |= {"JAX_PLATFORMS": "cpu", "JAX_DEFAULT_PRNG_IMPL": "rbg", "PYTHONPATH": str(ROOT)}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run(  # noqa: S603
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=TIMEOUT,
    )  # fmt: skip
    if proc.returncode:
        tail = "\n".join(l for l in proc.stdout.splitlines() if "Involuntary" not in l)[-4000:]
        pytest.fail(f"{' '.join(command[:6])} ... exited {proc.returncode}:\n{tail}")


def _metrics(workdir: pathlib.Path, key: str) -> list[float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


def _one_and_two_processes(tmp_path, args: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
    one, two = tmp_path / "one", tmp_path / "two"
    command = [sys.executable, "-m", "r1jax", "train", *args, *MESH]
    _run([*command, f"--workdir={one}"], devices=8)
    local = [str(ROOT / "launch" / "local.sh"), "-n", "2", "-d", "4", "--"]
    _run([*local, *command, f"--workdir={two}"], devices=4)
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
