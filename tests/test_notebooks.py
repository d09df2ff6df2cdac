"""The notebooks execute top to bottom on CPU, and the committed files match notebooks/build.py."""

import os
import pathlib
import subprocess
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat (test extra)")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient + ipykernel (test extra)")
pytest.importorskip("ipykernel", reason="needs ipykernel (test extra)")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BUDGET_S = 60  # per notebook on a CPU; the cell timeout below is the hard stop


def kernel_env() -> dict:
    """The kernel's environment: one plain CPU device, not the test suite's 8 fake ones."""
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAX_DEFAULT_PRNG_IMPL")}
    env["JAX_PLATFORMS"] = "cpu"
    env["MPLBACKEND"] = "agg"
    return env


def test_there_are_five_notebooks_without_outputs():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_hf_checkpoint.ipynb",
        "03_losses_explained.ipynb",
        "04_inside_the_reasoner.ipynb",
        "05_lora_grpo.ipynb",
    ]
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


def test_notebooks_match_their_builder():
    result = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "notebooks" / "build.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Every notebook (15 s each on 2 cores) in CI's slow step: the default suite stays under 10 min.
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    start = time.perf_counter()
    client.execute(env=kernel_env())
    seconds = time.perf_counter() - start
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    print(f"{path.name}: {seconds:.1f} s")
