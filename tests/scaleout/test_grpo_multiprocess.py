"""``r1jax train`` GRPO on 2 processes x 4 CPU devices (``launch/local.sh``), then resumed.

Each process reads its own shard of the prompts (4 of the 8 per step), the sampler runs over the
global mesh and hands each process its rows, each process scores them in its own reward pool,
and the update takes one global batch. Checked: the metrics count every process's groups
(8 sampled per round, dynamic sampling agreed across processes), rewards vary so advantages are
non-zero, the loss is finite, the evaluation hook ran, and a second launch resumes from the
checkpoint (each process's data position included) and adds exactly one step.

Marked slow: two launches of two processes, each compiling the sampler and the train step.
"""

import json
import pathlib

import numpy as np
import pytest
from launching import ROOT, r1jax_on_two_processes

CONFIG = """
import importlib.util

import ml_collections

spec = importlib.util.spec_from_file_location("grpo_tiny", {path!r})
grpo_tiny = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grpo_tiny)


def get_config():
    config = grpo_tiny.get_config()
    # A reward that varies between random completions: the 1-gram repetition penalty.
    config.rewards = ml_collections.ConfigDict(
        {{"repetition": {{"weight": 1.0, "ngram_size": 1}}}}
    )
    config.grpo.num_prompts = 8  # 4 per process, one per data shard of the 8 devices
    config.grpo.num_samples = 4
    config.grpo.max_new_tokens = 12
    config.grpo.top_k = 12  # a random model then repeats words now and then
    config.grpo.dynamic_sampling = True  # some groups are all-equal: rounds agreed across processes
    config.train.eval_every = 2
    config.train.checkpoint_every = 1
    config.eval.num_prompts = 8
    config.eval.num_samples = 2
    return config
"""


def _launch(config: pathlib.Path, workdir: pathlib.Path, steps: int) -> None:
    r1jax_on_two_processes(
        "train", f"--config={config}", f"--workdir={workdir}", f"--config.train.steps={steps}"
    )


def _metrics(workdir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_grpo_trains_on_two_processes_and_resumes(tmp_path):
    config, workdir = tmp_path / "grpo_mp.py", tmp_path / "run"
    config.write_text(CONFIG.format(path=str(ROOT / "configs" / "grpo_tiny.py")))

    _launch(config, workdir, steps=2)
    rows = _metrics(workdir)
    train = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train] == [1, 2]
    for r in train:
        assert r["dynamic/groups_sampled"] >= 8 and r["dynamic/groups_sampled"] % 8 == 0
        assert r["dynamic/groups_sampled"] == 8 * r["dynamic/rounds"]  # both processes' groups
        assert r["reward/std"] > 0 and r["groups/degenerate_rate"] < 1
        assert np.isfinite(r["train/loss"]) and r["train/grad_norm"] > 0
    assert any("eval/reward/total" in r and r["step"] == 2 for r in rows)
    assert (workdir / "checkpoints" / "2").is_dir()

    _launch(config, workdir, steps=3)  # resumes at step 2: one more iteration
    steps = [r["step"] for r in _metrics(workdir) if "train/loss" in r]
    assert steps == [1, 2, 3]
    assert (workdir / "checkpoints" / "3").is_dir()
