"""Running r1jax in subprocesses for the slow scale-out tests: one process on N fake CPU devices,
or ``launch/local.sh -n 2 -d 4`` (two processes x 4 devices, one distributed job)."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT = 600
R1JAX = [sys.executable, "-m", "r1jax"]
TWO_PROCESSES = [str(ROOT / "launch" / "local.sh"), "-n", "2", "-d", "4", "--"]


def cpu_env(devices: int | None = None) -> dict:
    """The environment minus R1JAX_/XLA_ settings; CPU, fast-compiling PRNG, the repo importable;
    ``devices`` fake CPU devices (``local.sh`` sets its own per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("R1JAX_", "XLA_"))}
    env |= {"JAX_PLATFORMS": "cpu", "JAX_DEFAULT_PRNG_IMPL": "rbg", "PYTHONPATH": str(ROOT)}
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def run_checked(command: list[str], env: dict) -> str:
    """Runs ``command`` from the repository root; its output, or the test fails with its tail."""
    proc = subprocess.run(  # noqa: S603
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=TIMEOUT,
    )  # fmt: skip
    if proc.returncode:
        tail = "\n".join(l for l in proc.stdout.splitlines() if "Involuntary" not in l)[-4000:]
        pytest.fail(f"{' '.join(command[:8])} ... exited {proc.returncode}:\n{tail}")
    return proc.stdout


def r1jax_on_one_process(*args: str, devices: int = 8) -> str:
    return run_checked([*R1JAX, *args], cpu_env(devices))


def r1jax_on_two_processes(*args: str) -> str:
    return run_checked([*TWO_PROCESSES, *R1JAX, *args], cpu_env())
