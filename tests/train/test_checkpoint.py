"""Checkpoints: round trip, restore on another mesh, a killed save keeps the last good one."""

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
from train_common import TINY, mesh_of

from r1jax.checkpoint import Checkpointer
from r1jax.config import OptimConfig
from r1jax.train.optim import make_optimizer
from r1jax.train.preemption import PreemptionGuard
from r1jax.train.state import abstract_train_state, create_train_state, refresh_frozen

OPTIMIZER = make_optimizer(OptimConfig(learning_rate=1e-3, weight_decay=0.1, total_steps=1000))
REPO = Path(__file__).resolve().parents[2]


def _assert_trees_equal(a, b):
    same = jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)), a, b)
    assert jax.tree.all(same)


def test_checkpoint_from_8_devices_restores_on_2_devices(tmp_path):
    mesh8 = mesh_of((2, 2, 2))
    state = refresh_frozen(create_train_state(TINY, OPTIMIZER, jax.random.key(3), mesh8))
    ckpt = Checkpointer(tmp_path / "ckpt", save_every=1, keep=2)
    assert ckpt.save(state, data_state={"index": 7}, config={"seed": 3})
    ckpt.close()

    mesh2 = mesh_of((1, 2, 1))
    target = abstract_train_state(TINY, OPTIMIZER, mesh2, frozen_config=TINY)
    restored, data, config = Checkpointer(tmp_path / "ckpt").restore(target)
    assert data == {"index": 7} and config == {"seed": 3}
    _assert_trees_equal(jax.device_get(state), jax.device_get(restored))
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target), strict=True):
        assert got.sharding == want.sharding
    assert len(restored.params["embed"].sharding.device_set) == 2


_KILLED_SAVE = """
import os, signal, time, sys
import jax, jax.numpy as jnp
from r1jax.model import ModelConfig
from r1jax.checkpoint import Checkpointer
from r1jax.config import OptimConfig
from r1jax.train.optim import make_optimizer
from r1jax.train.state import create_train_state
from train_common import mesh_of

# Large enough (~60M floats with Adam moments) that the save takes a while.
config = ModelConfig(vocab_size=64, hidden_size=512, num_layers=12, num_heads=8,
                     num_kv_heads=8, head_dim=64, mlp_dim=1024)
optimizer = make_optimizer(OptimConfig(total_steps=1000))
state = create_train_state(config, optimizer, jax.random.key(0), mesh_of((2, 1, 1)))
ckpt = Checkpointer(sys.argv[1], save_every=1)
ckpt.save(state, data_state={"index": 1}); ckpt.wait()
print("EMBED_SUM", float(jnp.sum(state.params["embed"])), flush=True)
state = state.replace(step=state.step + 1,
                      params=jax.tree.map(lambda x: x + 1.0, state.params))
ckpt.save(state, data_state={"index": 2})
deadline = time.time() + 60
while not any("tmp" in p for p in os.listdir(sys.argv[1])) and time.time() < deadline:
    time.sleep(0.001)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_save_killed_midway_leaves_previous_checkpoint_restorable(tmp_path):
    directory = tmp_path / "ckpt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests" / "train"), str(REPO)]))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_KILLED_SAVE), str(directory)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert any("tmp" in p.name for p in directory.iterdir()), "the kill did not hit a save"
    embed_sum = float(proc.stdout.split("EMBED_SUM")[1].split()[0])

    from r1jax.model import ModelConfig

    config = ModelConfig(
        vocab_size=64,
        hidden_size=512,
        num_layers=12,
        num_heads=8,
        num_kv_heads=8,
        head_dim=64,
        mlp_dim=1024,
    )
    optimizer = make_optimizer(OptimConfig(total_steps=1000))
    ckpt = Checkpointer(directory, save_every=1)
    assert ckpt.latest_step() == 0
    target = abstract_train_state(config, optimizer, mesh_of((2, 1, 1)))
    state, data, _ = ckpt.restore(target)
    assert int(state.step) == 0 and data == {"index": 1}
    np.testing.assert_allclose(float(np.sum(state.params["embed"])), embed_sum, rtol=1e-6)


def test_preemption_guard_turns_sigterm_into_a_flag_and_restores_the_handler():
    def previous(signum, frame):  # pragma: no cover - only installed, never called
        raise AssertionError("the guard's handler should have run instead")

    old = signal.signal(signal.SIGTERM, previous)
    try:
        with PreemptionGuard() as guard:
            assert not guard.stop
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.stop
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, old)
