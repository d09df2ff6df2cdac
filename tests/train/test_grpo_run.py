"""``r1jax train`` for GRPO from ``configs/grpo_tiny.py``: config parsing, a short run, resume."""

import pathlib

import pytest

from r1jax.config_flags import parse_config
from r1jax.train import grpo_run
from r1jax.train.metrics import read_metrics

CONFIG = str(pathlib.Path(__file__).parents[2] / "configs" / "grpo_tiny.py")


def tiny_config(steps: int):
    config, _ = parse_config(
        [
            "prog",
            f"--config={CONFIG}",
            f"--config.train.steps={steps}",
            "--config.train.checkpoint_every=2",
            "--config.train.eval_every=2",
            "--config.grpo.num_prompts=2",
            "--config.grpo.num_samples=4",
            "--config.grpo.max_new_tokens=8",
            "--config.model.num_layers=1",
            "--config.reward_pool.num_workers=1",
            "--config.eval.num_prompts=2",
            "--config.eval.num_samples=2",
        ],
        default_config=CONFIG,
    )
    return config


def test_grpo_config_splits_into_rollout_loss_and_loop_options():
    config = tiny_config(1)
    rollout, loss, loop = grpo_run.split_grpo_config(config.grpo)
    assert (rollout.num_samples, loss.beta, loop.num_prompts) == (4, 0.001, 2)
    assert rollout.stop_strings == ("</answer>",)
    _, loss, _ = grpo_run.split_grpo_config({**config.grpo.to_dict(), "tis_cap": 2.0})
    rollout, _, _ = grpo_run.split_grpo_config({**config.grpo.to_dict(), "tis_cap": 2.0})
    assert loss.tis_cap == 2.0 and rollout.keep_sampler_logprobs
    with pytest.raises(ValueError, match="unknown fields.*'bogus'"):
        grpo_run.split_grpo_config({"bogus": 1})


@pytest.mark.slow
def test_grpo_run_writes_metrics_and_checkpoints_and_resumes(tmp_path):
    grpo_run.run(tiny_config(2), tmp_path)
    assert sorted((tmp_path / "checkpoints").iterdir())[-1].name == "2"
    grpo_run.run(tiny_config(3), tmp_path)  # resumes at step 2, runs step 3
    records = read_metrics(tmp_path / "metrics.jsonl")
    train = [r for r in records if "reward/total" in r]
    assert [r["step"] for r in train] == [1, 2, 3]
    for key in (
        "accuracy",
        "format_rate",
        "kl",
        "entropy",
        "clip_frac",
        "truncation_rate",
        "reflection/rate",
        "response_length/max",
        "reward/accuracy",
        "reward/format",
    ):
        assert key in train[-1], key
    assert any("eval/reward/total" in r for r in records)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 3
