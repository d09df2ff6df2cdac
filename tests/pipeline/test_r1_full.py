"""``configs/r1_full.py``: the four-stage R1 recipe and distillation, in miniature, end to end
in English (killed inside a stage of each kind, then resumed) and in Chinese (slow: CI's second
step); the real-base variants are well-formed recipes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from r1jax.commands import demo
from r1jax.pipeline.recipe import typed_stages

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "configs"))
from r1_full import get_config  # noqa: E402

STAGES = get_config("smoke").stages.split(",")


@pytest.mark.parametrize("variant", ["1.5b", "7b"])
def test_real_variants_chain_the_four_stages_and_the_student(variant):
    stages = typed_stages(get_config(variant))
    assert list(stages)[:6] == [
        "cold_start", "reasoning_rl", "rejection", "sft_all", "reward_model", "rl_all",
    ]  # fmt: skip
    assert stages["rl_all"].link("reward_model_from") == "reward_model"
    assert stages["rl_all"].reward_model.add_rules == ("format", "language")
    assert "language" in stages["reasoning_rl"].rewards
    assert stages["sft_all"].link("init_from") == stages["cold_start"].link("init_from")
    assert stages["reward_model"].model.score_head
    assert stages["student"].model.hidden_size == 1536  # Qwen2.5-1.5B
    assert stages["reasoning_rl"].grpo.num_samples == 16  # R1's G


def _wait_for(path: Path, process, seconds: float) -> None:
    deadline = time.time() + seconds
    while not path.exists():
        assert process.poll() is None, "the recipe ended before the stage started"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.2)


# Where the miniature is killed (SIGKILL: no clean-up), one stage of each kind: a training
# stage once it has written a checkpoint (its last steps, final save and evaluation still to
# come), a sampling stage once it has started.
KILLS = {
    "base": "checkpoints/3",  # sft, 6 steps
    "reasoning_rl": "checkpoints/1",  # grpo, 2 steps
    "rejection": "",  # rejection_sample
    "reward_model": "checkpoints/2",  # reward_model, 4 steps
    "rl_all": "checkpoints/1",  # grpo with the reward model
    "eval_r1": "",  # eval
}


@pytest.mark.slow
def test_miniature_survives_a_kill_in_every_kind_of_stage(tmp_path):
    """Killed inside each stage of ``KILLS`` in turn (one process per kill), the recipe resumes
    each time from where it was: finished stages are not redone, a killed training stage goes
    on from its checkpoint to its last step, and the last run ends the recipe."""
    run_dir = tmp_path / "r1"
    command = [sys.executable, "-m", "r1jax", "demo", "--config=configs/r1_full.py:smoke"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    finished: dict[str, str] = {}
    for stage, marker in KILLS.items():
        process = subprocess.Popen([*command, f"--run_dir={run_dir}"], cwd=ROOT, env=env)
        try:
            _wait_for(run_dir / stage / marker, process, 600)
            process.send_signal(signal.SIGKILL)
            process.wait(60)
        finally:
            process.kill()
        assert not (run_dir / stage / "done.json").exists(), f"{stage} ended before the kill"
        for name, done in finished.items():  # stages finished before this run: not redone
            assert (run_dir / name / "done.json").read_text() == done, name
        before = STAGES[: STAGES.index(stage)]
        finished = {name: (run_dir / name / "done.json").read_text() for name in before}
    assert demo.main(["--config=configs/r1_full.py:smoke", f"--run_dir={run_dir}"]) == 0
    for stage in STAGES:
        assert (run_dir / stage / "done.json").exists(), stage
    for name, done in finished.items():
        assert (run_dir / name / "done.json").read_text() == done, name
    for stage, marker in KILLS.items():
        if marker:  # the killed training stages resumed to their last step
            config = get_config("smoke")[stage]
            steps = [json.loads(line)["step"] for line in open(run_dir / stage / "metrics.jsonl")]
            assert steps[-1] == config.train.steps, stage
    routed = [json.loads(line) for line in open(run_dir / "rl_all" / "metrics.jsonl")]
    assert all(0 <= r["reward/model_routed"] <= 1 for r in routed if "reward/model_routed" in r)
    assert "| R1 (four stages) |" in (run_dir / "report.md").read_text()


@pytest.mark.slow  # about 6 minutes on 2 cores: the stand-in base, then the reward model
def test_the_miniatures_reward_model_reaches_90_percent_on_held_out_pairs(tmp_path):
    """Issue 18's figure: started from the stand-in base (pretrained on worked and hasty
    solutions), the reward model tells the worked, correct response from a wrong final answer,
    a hasty guess or an untagged answer on 256 held-out pairs >= 90% of the time."""
    for stage in ("tokenizer", "base", "reward_model"):
        argv = ["--config=configs/r1_full.py:tiny", f"--run_dir={tmp_path}", f"--only={stage}"]
        assert demo.main(argv) == 0
    records = [json.loads(line) for line in open(tmp_path / "reward_model" / "metrics.jsonl")]
    final = [r for r in records if "eval/accuracy" in r][-1]
    print({k: round(v, 3) for k, v in final.items() if k.startswith("eval/")})
    assert final["step"] == 400 and final["eval/accuracy"] >= 0.9
    assert final["eval/accuracy/wrong_answer"] > 0.7  # not the two easy kinds alone


@pytest.mark.slow
def test_miniature_runs_in_chinese(tmp_path):
    run_dir = tmp_path / "r1_zh"
    assert demo.main(["--config=configs/r1_full.py:smoke_zh", f"--run_dir={run_dir}"]) == 0
    for stage in STAGES:
        assert (run_dir / stage / "done.json").exists(), stage
    trace = json.loads((run_dir / "distill_data" / "traces.jsonl").read_text().splitlines()[0])
    assert trace["language"] == "zh" and trace["prompt"].startswith("计算")


def test_a_preempted_stage_is_not_marked_done(tmp_path, monkeypatch):
    """SIGTERM in a training stage saves and raises Preempted: the recipe stops there (it wrote
    done.json and went on to the next stage, which skipped the rest of this one for good) and
    ``r1jax`` exits 143 for the scheduler to run it again."""
    from r1jax import cli
    from r1jax.pipeline import recipe
    from r1jax.train.preemption import Preempted

    ran = []

    def runner(stage, stage_dir, run_dir):
        ran.append(stage_dir.name)
        if len(ran) == 2:
            raise Preempted(4)
        return {"ok": 1}

    monkeypatch.setattr(recipe, "RUNNERS", {kind: runner for kind in recipe.RUNNERS})
    with pytest.raises(Preempted):
        recipe.run_recipe(get_config("smoke"), tmp_path)
    assert [(tmp_path / name / "done.json").exists() for name in ran] == [True, False]
    ran.clear()
    argv = ["demo", "--config=configs/r1_full.py:smoke", f"--run_dir={tmp_path / 'cli'}"]
    assert cli.main(argv) == 143
