"""Refactors keep behaviour: the tiny GRPO, SFT and distillation configs' first 3 logged losses
and the demo smoke run's stage results, for fixed seeds, equal what the code gave before the
config/loop/evaluation refactor of issue 15 (recorded in ``tests/golden/behaviour.json``).

Regenerate (only when a change is MEANT to alter numerics, and say so in the commit):
``R1JAX_RECORD_GOLDEN=1 pytest tests/test_behaviour_unchanged.py -m "slow or not slow"``.
"""

import json
import os
from pathlib import Path

import pytest

from r1jax.commands import demo, train

GOLDEN = Path(__file__).parent / "golden" / "behaviour.json"
RECORD = bool(os.environ.get("R1JAX_RECORD_GOLDEN"))
# 1e-6 admits a changed order of float operations; R1JAX_GOLDEN_EXACT=1 demands bit-identity.
EXACT = bool(os.environ.get("R1JAX_GOLDEN_EXACT"))
RTOL, ATOL = (0.0, 0.0) if EXACT else (1e-6, 1e-7)

TRAIN_RUNS = {
    "grpo": [
        "--config=configs/grpo_tiny.py",
        "--config.grpo.num_prompts=2",
        "--config.grpo.num_samples=4",
        "--config.grpo.max_new_tokens=12",
        "--config.grpo.beta=0.04",
        "--config.grpo.entropy_coef=0.01",  # a gradient even when every reward is equal
    ],
    "sft": ["--config=configs/sft_tiny.py", "--config.train.batch_size=8"],
    "distill": ["--config=configs/distill_tiny.py", "--config.train.batch_size=8"],
}
COMMON = ["--config.train.steps=3", "--config.train.log_every=1", "--config.train.eval_every=0"]
LOSS_KEYS = ("loss", "train/loss", "kl", "entropy", "train/pg_loss", "reward/total")


def _record_or_compare(name: str, got: dict) -> None:
    table = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if RECORD:
        table[name] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
        return
    want = table[name]
    assert set(got) == set(want), name
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (name, key, got[key], value)


def _logged(workdir: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    out = {}
    for row in rows:
        for key in LOSS_KEYS:
            if key in row:
                out[f"step{row['step']}/{key}"] = float(row[key])
    return out


@pytest.mark.parametrize(
    "objective",
    # grpo and distill in CI's slow step: the default suite stays under 10 minutes
    [o if o == "sft" else pytest.param(o, marks=pytest.mark.slow) for o in sorted(TRAIN_RUNS)],
)
def test_first_three_losses_unchanged(objective, tmp_path):
    argv = [*TRAIN_RUNS[objective], *COMMON, f"--workdir={tmp_path}"]
    assert train.main(argv) == 0
    got = _logged(tmp_path)
    assert len({k.split("/")[0] for k in got}) == 3, got
    _record_or_compare(objective, got)


def _timing(key: str) -> bool:
    return "seconds" in key or key.startswith("time") or "per_s" in key or "throughput" in key


@pytest.mark.slow
def test_demo_smoke_results_unchanged(tmp_path):
    run_dir = tmp_path / "demo"
    assert demo.main(["--config=configs/demo.py:smoke", f"--run_dir={run_dir}"]) == 0
    got = {}
    for done in sorted(run_dir.glob("*/done.json")):
        result = json.loads(done.read_text())
        for key, value in result.items():
            if isinstance(value, int | float) and not _timing(key):
                got[f"{done.parent.name}/{key}"] = float(value)
    assert got
    _record_or_compare("demo_smoke", got)
