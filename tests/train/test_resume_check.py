"""A resumed run refuses settings that change its results and accepts those that do not."""

import json

import pytest

from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.train.resume_check import changed_settings, check_resumable


def _stage(*overrides):
    """The stage's config as a checkpoint stores it (JSON)."""
    config, _ = parse_config(["--config=configs/sft_tiny.py", *overrides], command="t", default="x")
    return json.loads(json.dumps(typed(config).to_dict(), default=str))


def test_length_cadence_mesh_and_evaluation_may_change():
    stored = _stage()
    now = _stage("--config.train.steps=400", "--config.train.log_every=1",
                 "--config.train.checkpoint_every=7", "--config.mesh.fsdp=2",
                 "--config.eval.num_samples=4")  # fmt: skip
    assert changed_settings(stored, now) == {}  # total_steps follows train.steps in both


def test_settings_that_change_the_trajectory_are_named(monkeypatch):
    stored = _stage()
    now = _stage("--config.optim.learning_rate=0.05", "--config.data.seed=7",
                 "--config.train.batch_size=4")  # fmt: skip
    assert set(changed_settings(stored, now)) == {
        "optim.learning_rate", "data.seed", "train.batch_size"
    }  # fmt: skip
    with pytest.raises(ValueError, match=r"ckpt/3: .*config.data.seed: 0 in the checkpoint, 7 now"):
        check_resumable(stored, now, "ckpt/3")
    check_resumable({}, now, "old checkpoint without a config")
    monkeypatch.setenv("R1JAX_RESUME_WITH_CHANGES", "1")
    check_resumable(stored, now, "accepted")


def test_a_resumed_run_drops_the_metric_lines_of_the_steps_it_redoes(tmp_path):
    """Killed after logging steps past its last checkpoint, a run redoes those steps: their
    first lines are dropped, not left twice in metrics.jsonl."""
    from r1jax.train.metrics import MetricsWriter, read_metrics

    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        for step in (1, 2, 3, 4):
            writer.write(step, {"loss": float(step)})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # cut by the kill
    with MetricsWriter(tmp_path, tensorboard=False, after_step=2) as writer:
        writer.write(3, {"loss": 30.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [
        (1, 1.0), (2, 2.0), (3, 30.0)
    ]  # fmt: skip
