"""Preemption: SIGTERM a ``r1jax train`` run mid-way, restart it, and get the same trajectory.

The interrupted + resumed run must log bit-identical metrics at every step (losses, and for
GRPO rewards, lengths, KL...: the sampler's keys come from the step, the data iterator resumes
exactly) and end with bit-identical params compared with an uninterrupted run; SFT and GRPO.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from r1jax.checkpoint import Checkpointer, load_params
from r1jax.config import DataConfig, presets
from r1jax.model import ModelConfig
from r1jax.train.metrics import read_metrics
from r1jax.train.setup import make_tokenizer

REPO = Path(__file__).resolve().parents[2]
MODEL = dict(hidden_size=32, head_dim=8, mlp_dim=64, num_layers=2)
RUNS = {  # kind: (config file, steps, its own overrides)
    "sft": ("configs/sft_tiny.py", 60, {"train.batch_size": 8, "train.seq_len": 160}),
    "grpo": (
        "configs/grpo_tiny.py",
        16,
        {
            "grpo.num_prompts": 2,
            "grpo.num_samples": 4,
            "grpo.max_new_tokens": 16,
            "train.eval_every": 0,
            "reward_pool.num_workers": 1,
            # From a random init every reward is 0 (no advantage): the entropy bonus moves the
            # params at every step, so later samples depend on the restored params.
            "grpo.entropy_coef": 0.01,
        },
    ),
}


def _command(workdir, tokenizer, kind):
    config, steps, own = RUNS[kind]
    overrides = {
        "train.steps": steps,
        "train.log_every": 1,
        "train.checkpoint_every": 1000,
        "data.tokenizer": tokenizer,
        "optim.warmup_steps": 5,
        "optim.total_steps": steps,
        **own,
        **{f"model.{k}": v for k, v in MODEL.items()},
    }
    flags = [f"--config.{k}={v}" for k, v in overrides.items()]
    return [
        sys.executable,
        "-c",
        'import sys; from r1jax.cli import main; sys.exit(main(["train", *sys.argv[1:]]))',
        f"--config={config}",
        f"--workdir={workdir}",
        *flags,
    ]


def _start(workdir, tokenizer, kind):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        _command(workdir, tokenizer, kind),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _logged_steps(path: Path) -> int:
    if not path.exists():
        return 0
    return len([line for line in path.read_text().splitlines() if line.strip()])


def _final_params(workdir, steps):
    config = ModelConfig.from_mapping(presets.TINY_MODEL | MODEL)
    ckpt = Checkpointer(Path(workdir) / "checkpoints")
    assert ckpt.latest_step() == steps
    _, params = load_params(workdir, config, format="r1jax")  # on the first local device
    return jax.device_get(params)


def _losses(workdir):
    """Every logged metric but wall-clock figures (times and rates)."""
    timing = lambda k: k.startswith("time/") or k.endswith("tokens_per_s")
    records = read_metrics(Path(workdir) / "metrics.jsonl")
    return [{k: v for k, v in r.items() if not timing(k)} for r in records]


@pytest.mark.slow  # three CLI subprocesses: ~1.5 min of CPU, several minutes on shared cores
@pytest.mark.parametrize("kind", sorted(RUNS))
def test_sigterm_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, kind):
    steps = RUNS[kind][1]
    tokenizer = make_tokenizer(DataConfig(tokenizer_examples=300), tmp_path)
    tokenizer_path = str(tmp_path / "tokenizer.model")
    del tokenizer
    reference = _start(tmp_path / "reference", tokenizer_path, kind)
    interrupted = _start(tmp_path / "interrupted", tokenizer_path, kind)
    metrics_file = tmp_path / "interrupted" / "metrics.jsonl"
    deadline = time.time() + 400
    while _logged_steps(metrics_file) < 3 and interrupted.poll() is None:
        assert time.time() < deadline, "the run did not start"
        time.sleep(0.01)
    interrupted.send_signal(signal.SIGTERM)
    out, _ = interrupted.communicate(timeout=300)
    assert interrupted.returncode == 143, out[-3000:]  # preempted: to be run again
    stopped_at = _logged_steps(metrics_file)
    assert "preempted: checkpoint saved at step" in out, out[-3000:]
    assert 3 <= stopped_at < steps

    resumed = _start(tmp_path / "interrupted", tokenizer_path, kind)
    out_resumed, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out_resumed[-3000:]
    out_reference, _ = reference.communicate(timeout=400)
    assert reference.returncode == 0, out_reference[-3000:]

    expected, got = _losses(tmp_path / "reference"), _losses(tmp_path / "interrupted")
    assert [r["step"] for r in got] == list(range(1, steps + 1))
    assert got == expected
    if kind == "grpo":  # the params moved, so the resumed run's samples had to match
        norms = [r["train/param_norm"] for r in got]
        assert len(set(norms)) == steps and min(r["train/grad_norm"] for r in got) > 1e-6
    a, b = (_final_params(tmp_path / run, steps) for run in ("reference", "interrupted"))
    assert jax.tree.all(jax.tree.map(np.array_equal, a, b))
