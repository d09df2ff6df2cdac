"""Evaluation, rejection sampling and a whole recipe on 2 processes x 4 CPU devices.

``r1jax eval`` under ``launch/local.sh -n 2 -d 4``: each process samples its share of the
questions over the global mesh (the same global sampler calls as one process makes, each process
feeding its block of every call), the judged samples are gathered and process 0 writes them.
Sampled at temperature 1 (the same questions meet the same keys), the samples and the summary
must equal a single process's on the same 8-device data mesh. ``r1jax demo``'s smoke
recipe then runs every stage kind (tokenizer, SFT, eval, GRPO, rejection sampling, distillation)
across the two processes.

Marked slow: three launches, each compiling the sampler (and the recipe its train steps).
"""

import json
import pathlib

import jax
import pytest
from launching import r1jax_on_one_process, r1jax_on_two_processes

TIMING = {"generation_seconds", "tokens_per_second", "seconds_per_completion"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> pathlib.Path:
    """A random tiny model as an r1jax checkpoint with a sentencepiece tokenizer beside it."""
    from r1jax.checkpoint import save_params
    from r1jax.data import format_completion, format_r1_zero, get_task, train_sentencepiece
    from r1jax.model import ModelConfig, init_params

    path = tmp_path_factory.mktemp("ckpt")
    task = get_task("arithmetic")
    lines = [
        format_r1_zero(ex["prompt"]) + format_completion(ex["gold_cot"], ex["answer"])
        for ex in (task.example(i, seed=0) for i in range(500))
    ]
    train_sentencepiece(lines, path / "tokenizer", 320)
    config = ModelConfig(
        vocab_size=320, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
        head_dim=8, mlp_dim=64, max_position_embeddings=512, tie_embeddings=True,
    )  # fmt: skip
    save_params(path, config, init_params(config, jax.random.key(3)))
    return path


@pytest.mark.slow
def test_eval_on_two_processes_equals_one_process(checkpoint, tmp_path):
    common = [
        "eval", f"--config.model_from={checkpoint}", "--config.eval.task=arithmetic",
        "--config.eval.num_prompts=20", "--config.eval.num_samples=2",
        "--config.eval.temperature=1", "--config.eval.max_new_tokens=12",
        "--config.eval.prompts_per_batch=12", "--config.mesh.data=-1",
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    r1jax_on_one_process(*common, f"--config.output={one}")
    out = r1jax_on_two_processes(*common, f"--config.output={two}")
    assert "[p0] eval: 20 questions x 2 samples on 8 device(s) in 2 process(es)" in out
    assert "[p0]" in out and "pass@1" in out and "[p1]   " not in out  # process 0 reports

    read = lambda d: [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]
    samples_one, samples_two = read(one), read(two)
    # every question once (padding dropped), k samples each, in order; the same sampled completions
    assert [(s["question"], s["sample"]) for s in samples_two] == [
        (q, i) for q in range(20) for i in range(2)
    ]
    assert samples_two == samples_one
    summary = lambda d: json.loads((d / "summary.json").read_text())
    one_summary, two_summary = summary(one), summary(two)
    assert {k: v for k, v in two_summary.items() if k not in TIMING} == {
        k: v for k, v in one_summary.items() if k not in TIMING
    }


@pytest.mark.slow
def test_recipe_stages_on_two_processes(tmp_path):
    run = tmp_path / "run"
    out = r1jax_on_two_processes(
        "demo", "--config=configs/demo.py:smoke", f"--run_dir={run}",
        "--config.grpo.grpo.num_prompts=8",  # 4 per process, split over the 8 data shards
    )  # fmt: skip
    assert "report:" in out
    stages = json.loads((run / "config.json").read_text())["stages"].split(",")
    for stage in stages:
        assert (run / stage / "done.json").exists(), stage
    # eval: 4 questions x 2 samples; rejection keeps all 4 x 2 (the smoke filters keep anything)
    samples = (run / "eval_grpo" / "samples.jsonl").read_text().splitlines()
    assert sorted((json.loads(s)["question"], json.loads(s)["sample"]) for s in samples) == [
        (q, i) for q in range(4) for i in range(2)
    ]
    traces = (run / "rejection" / "traces.jsonl").read_text().splitlines()
    assert len(traces) == json.loads((run / "rejection" / "done.json").read_text())["kept"] == 8
    grpo = [json.loads(line) for line in (run / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in grpo if "train/loss" in r] == [1, 2]
    assert (run / "distill" / "checkpoints").is_dir() and (run / "report.md").exists()
