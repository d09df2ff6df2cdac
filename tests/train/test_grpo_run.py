"""``r1jax train`` for GRPO from ``configs/grpo_tiny.py``: config parsing, a short run, resume."""

import pathlib

import pytest

from r1jax.config import typed
from r1jax.config.flags import parse_config
from r1jax.train import loop
from r1jax.train.metrics import read_metrics

CONFIG = str(pathlib.Path(__file__).parents[2] / "configs" / "grpo_tiny.py")


def tiny_stage(steps: int, *extra: str):
    config, _ = parse_config(
        [
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
            "--config.eval.max_new_tokens=8",
            *extra,
        ],
        command="test",
        default=CONFIG,
    )
    return typed(config)


def test_grpo_section_is_one_typed_config_with_r1_defaults():
    grpo = tiny_stage(1).grpo
    assert (grpo.num_samples, grpo.beta, grpo.num_prompts) == (4, 0.001, 2)
    assert grpo.stop_strings == ("</answer>",)
    grpo = tiny_stage(1, "--config.grpo.tis_cap=2.0").grpo
    assert grpo.tis_cap == 2.0 and grpo.keep_sampler_logprobs


@pytest.mark.slow
def test_grpo_run_writes_metrics_and_checkpoints_and_resumes(tmp_path):
    loop.run(tiny_stage(2), tmp_path)
    assert sorted((tmp_path / "checkpoints").iterdir())[-1].name == "2"
    loop.run(tiny_stage(3), tmp_path)  # resumes at step 2, runs step 3
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
    assert any("eval/pass@1" in r for r in records)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert steps[-1] == 3


def test_the_dropped_prompt_count_goes_on_after_a_resume():
    """The count of too-long prompts is cumulative: it restarted at 0 on resume."""
    from r1jax.train.grpo_job import _PoppingStats

    class Batches:  # a pipeline whose every batch dropped one prompt, with a state
        def __init__(self):
            self.n = 0

        def __next__(self):
            self.n += 1
            return {"tokens": self.n, "stats": {"dropped_too_long": 1}}

        def get_state(self):
            return {"n": self.n}

        def set_state(self, state):
            self.n = state["n"]

    first = _PoppingStats(Batches())
    [next(first) for _ in range(3)]
    resumed = _PoppingStats(Batches())
    resumed.set_state(first.get_state())
    assert next(resumed) == {"tokens": 4} and resumed.dropped == 4
    old = _PoppingStats(Batches())
    old.set_state({"n": 3})  # a checkpoint from before the count was saved
    assert next(old) == {"tokens": 4} and old.dropped == 1


def test_a_checkpoint_saves_the_data_position_before_the_partial_rollout_pools_batches():
    """The pool is not checkpointed: the saved position is the one before its oldest batch in
    flight, so a resumed run draws those prompts again (it skipped them)."""
    import numpy as np

    from r1jax.train.grpo_job import _PoppingStats
    from r1jax.train.partial_rollouts import PartialRounds

    class Batches:
        def __init__(self):
            self.n = 0

        def __next__(self):
            self.n += 1
            return {"prompt_tokens": np.full((1, 2), self.n), "prompt_mask": np.ones((1, 2))}

        def get_state(self):
            return {"n": self.n}

    class Pool:  # two batches in flight; harvests the oldest
        def __init__(self):
            self.batches = []

        @property
        def wants_prompts(self):
            return len(self.batches) < 2

        def admit(self, params, prompts, payload):
            self.batches.append(payload)

        def next_batch(self, params, version):
            return type("Harvest", (), {"payload": self.batches.pop(0)})

    data, pool = _PoppingStats(Batches()), Pool()
    for step in range(3):  # each iteration trains on the oldest batch: 1, then 2, then 3
        trained = PartialRounds(pool, data, None, step).next_prompts(0)
        assert int(trained["prompt_tokens"][0, 0]) == step + 1
        # saved after training on batch step + 1; batch step + 2 is in flight: draw it again
        assert data.get_state()["pipeline"] == {"n": step + 1}
