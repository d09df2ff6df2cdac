"""GRPO on a tiny mixture-of-experts model with routing replay: the sampler records each
token's experts, the update replays them, and the run logs the routers' figures."""

import pytest
from test_grpo_run import CONFIG

from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.train import loop
from r1jax.train.metrics import read_metrics


def _moe_stage(steps: int, *extra: str):
    config, _ = parse_config(
        [
            f"--config={CONFIG}", f"--config.train.steps={steps}",
            "--config.train.checkpoint_every=100", "--config.train.eval_every=0",
            "--config.grpo.num_prompts=2", "--config.grpo.num_samples=4",
            "--config.grpo.max_new_tokens=8", "--config.model.num_layers=2",
            "--config.reward_pool.num_workers=1", *extra,
        ],
        command="test",
        default=CONFIG,
    )  # fmt: skip
    config.model.qk_norm = True
    config.model.moe = dict(
        num_experts=4, experts_per_token=2, expert_mlp_dim=32, dense_layers=1,
        balance_loss_weight=0.01, z_loss_weight=0.001,
    )  # fmt: skip
    return typed(config)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_grpo_with_routing_replay_runs_on_a_tiny_moe_and_logs_the_routers(tmp_path):
    stage = _moe_stage(2, "--config.grpo.routing_replay=true", "--config.grpo.mu=2")
    loop.run(stage, tmp_path)
    train = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "reward/total" in r]
    assert [r["step"] for r in train] == [1, 2]
    for key in ("balance_loss", "z_loss", "replay_mismatch", "max_load/1"):
        assert f"train/moe/{key}" in train[-1], key
    assert 1.0 <= train[-1]["train/moe/max_load/1"] <= 4.0


def test_routing_replay_is_refused_with_continuous_batching_or_a_dense_model(tmp_path):
    with pytest.raises(ValueError, match="routing_replay"):
        _moe_stage(1, "--config.grpo.routing_replay=true", "--config.grpo.decode_slots=4")
    config, _ = parse_config(
        [f"--config={CONFIG}", "--config.grpo.routing_replay=true"], command="t", default=CONFIG
    )
    with pytest.raises(ValueError, match="no mixture of experts"):
        loop.run(typed(config), tmp_path)
