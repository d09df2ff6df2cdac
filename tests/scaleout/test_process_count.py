"""The same run on any number of processes: 2 processes x 4 devices == 1 process x 8 devices.

``r1jax train`` (SFT, then GRPO) for 3 steps on the mesh data=1 x fsdp=4 x tensor=2, fp32,
same seeds. Every process walks one global order of examples and feeds its contiguous block of
each global batch, so the run must not depend on how many processes there are: the final
parameters agree to 1e-5 (max abs) and every logged scalar to 1e-6 + 1e-4 * |value| (timings
aside). Then the 2 x 4 run's step-2 checkpoint is resumed on 1 x 8 and must continue the
uninterrupted 1 x 8 trajectory within the same bounds (the data position is one global state).

Marked slow: eight launches, each compiling the train step (GRPO also the sampler).
"""

import json
import pathlib
import shutil

import numpy as np
import pytest
from launching import r1jax_on_one_process, r1jax_on_two_processes

MESH = ["--config.mesh.data=1", "--config.mesh.fsdp=4", "--config.mesh.tensor=2"]
STEPS = [
    "--config.train.steps=3",
    "--config.train.log_every=1",
    "--config.train.checkpoint_every=1",
]
SFT = ["--config=configs/sft_tiny.py", *STEPS]
GRPO = [
    "--config=configs/grpo_tiny.py", *STEPS, "--config.grpo.num_prompts=4",
    "--config.grpo.max_new_tokens=12", "--config.train.eval_every=3", "--config.eval.num_prompts=4",
]  # fmt: skip


def _timing(key: str) -> bool:
    return key.startswith("time/") or key.endswith("tokens_per_s")  # e.g. sample/useful_...


def _metrics(workdir: pathlib.Path) -> dict[int, dict[str, float]]:
    """step -> every logged number (timings aside), from metrics.jsonl."""
    out: dict[int, dict[str, float]] = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        flat = _numbers(row)
        out.setdefault(int(row["step"]), {}).update(
            {k: v for k, v in flat.items() if k != "step" and not _timing(k)}
        )
    return out


def _numbers(row: dict, prefix: str = "") -> dict[str, float]:
    flat = {}
    for key, value in row.items():
        if isinstance(value, dict):
            flat |= _numbers(value, f"{prefix}{key}/")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            flat[prefix + key] = float(value)
    return flat


def _params(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
    """The saved params at ``step``, as host arrays keyed by their path."""
    import jax
    import orbax.checkpoint as ocp

    path = workdir / "checkpoints" / str(step) / "params"
    checkpointer = ocp.PyTreeCheckpointer()
    as_numpy = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
        checkpointer.metadata(path).item_metadata,
    )
    tree = checkpointer.restore(path, restore_args=as_numpy)
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(k): np.asarray(v, np.float32) for k, v in flat}


def _assert_same_run(got: pathlib.Path, want: pathlib.Path, step: int = 3) -> None:
    got_metrics, want_metrics = _metrics(got), _metrics(want)
    assert sorted(got_metrics) == sorted(want_metrics) == [1, 2, 3]
    for s, want_row in want_metrics.items():
        assert got_metrics[s].keys() == want_row.keys(), s
        for key, value in want_row.items():
            np.testing.assert_allclose(
                got_metrics[s][key], value, rtol=1e-4, atol=1e-6, err_msg=f"step {s}: {key}"
            )
    got_params, want_params = _params(got, step), _params(want, step)
    assert got_params.keys() == want_params.keys()
    worst = max(float(np.max(np.abs(got_params[k] - want_params[k]))) for k in want_params)
    assert worst <= 1e-5, f"max |params(2x4) - params(1x8)| = {worst:.3g}"


def _resumed_on_one_process(two: pathlib.Path, into: pathlib.Path, args: list[str]):
    """The 2 x 4 run cut back to its step-2 checkpoint, then resumed on 1 x 8 to step 3."""
    shutil.copytree(two, into)
    shutil.rmtree(into / "checkpoints" / "3")
    lines = (into / "metrics.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["step"] <= 2]
    (into / "metrics.jsonl").write_text("".join(line + "\n" for line in kept))
    r1jax_on_one_process("train", *args, *MESH, f"--workdir={into}")


@pytest.mark.slow
@pytest.mark.parametrize("args", [SFT, GRPO], ids=["sft", "grpo"])
def test_two_processes_run_like_one_and_resume_across_process_counts(tmp_path, args):
    one, two = tmp_path / "one", tmp_path / "two"
    r1jax_on_one_process("train", *args, *MESH, f"--workdir={one}")
    r1jax_on_two_processes("train", *args, *MESH, f"--workdir={two}")
    _assert_same_run(two, one)
    resumed = tmp_path / "resumed"
    _resumed_on_one_process(two, resumed, args)
    _assert_same_run(resumed, one)


@pytest.mark.slow
def test_fewer_prompts_than_batch_shards_run_alike_on_one_and_two_processes(tmp_path):
    """4 prompts on data=8: one process replicates the prompt batch over the shards; two
    processes must accept it too (the prompts are gathered) and sample and train alike."""
    args = [*GRPO, "--config.mesh.data=8", "--config.mesh.fsdp=1", "--config.mesh.tensor=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    r1jax_on_one_process("train", *args, f"--workdir={one}")
    r1jax_on_two_processes("train", *args, f"--workdir={two}")
    _assert_same_run(two, one)


PAGED = ["--config.grpo.decode_page_size=4"]


@pytest.mark.slow
@pytest.mark.parametrize("cache", [["--config.grpo.decode_min_slots=2"], PAGED], ids=["", "paged"])
def test_continuous_batching_runs_alike_on_one_and_two_processes(tmp_path, cache):
    """GRPO sampling with 8 decode slots (``grpo.decode_slots``) shrinking to 2: one queue of
    requests over both processes' prompts; each process gets its own rows back. Paged: one
    page store per fsdp shard (4, two per process), each serving its prompt's requests."""
    args = [*GRPO, *MESH, "--config.grpo.decode_slots=8", *cache]
    one, two = tmp_path / "one", tmp_path / "two"
    r1jax_on_one_process("train", *args, f"--workdir={one}")
    r1jax_on_two_processes("train", *args, f"--workdir={two}")
    _assert_same_run(two, one)


@pytest.mark.slow
@pytest.mark.parametrize(
    "cache", [[], PAGED, [*PAGED, "--config.grpo.partial_shards=4"]], ids=["", "paged", "shards"]
)
def test_partial_rollouts_run_alike_on_one_and_two_processes(tmp_path, cache):
    """Partial rollouts (``grpo.partial_lanes``: 8 lanes for batches of 4 prompts, decode
    calls of 4 steps, so rows are cut mid-sequence and carried into the next iteration): each
    process admits its block of every batch into one ring and gets its rows back; the rows,
    metrics and parameters equal one process's, with a contiguous or a paged cache, or split
    into 4 pools (one per fsdp shard, two per process)."""
    args = [
        *GRPO, *MESH, "--config.grpo.decode_slots=8", "--config.grpo.partial_lanes=8",
        "--config.grpo.partial_step_budget=4", *cache,
    ]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    r1jax_on_one_process("train", *args, f"--workdir={one}")
    r1jax_on_two_processes("train", *args, f"--workdir={two}")
    _assert_same_run(two, one)
    stale = [r.get("sample/stale_token_fraction", 0.0) for r in _metrics(one).values()]
    assert max(stale) > 0  # rows carried across an update: the pool's point
