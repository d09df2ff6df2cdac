"""The ``r1jax`` command: help lists every subcommand without importing jax or the data stack."""

import subprocess
import sys

from r1jax import cli


def test_help_lists_every_command_and_imports_nothing_heavy():
    code = (
        "import sys; from r1jax import cli; cli.main(['--help']); "
        "print(sorted(m for m in ('jax', 'grain', 'r1jax.data') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.splitlines()[-1] == "[]"
    for name in cli.COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_is_an_error(capsys):
    assert cli.main(["no-such-command"]) == 2
    assert "unknown command 'no-such-command'" in capsys.readouterr().err


def test_a_missing_tpu_compiler_is_one_line_naming_the_fix(capsys, monkeypatch):
    from jax.experimental import topologies

    def no_libtpu(**kwargs):  # what jax raises on a host without the TPU compiler
        raise RuntimeError("JAX TPU support not installed; cannot generate TPU topology")

    monkeypatch.setattr(topologies, "get_topology_desc", no_libtpu)
    argv = [
        "plan",
        "--config=configs/grpo_tiny.py",
        "--topology=v5e-8",
        "--config.mesh.preset=v5e-8",
    ]
    assert cli.main(argv) == 2
    assert "needs the TPU compiler on this host: pip install" in capsys.readouterr().err
