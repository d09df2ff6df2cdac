"""``config.init_from``: a fresh ``r1jax train`` run starts from another run's (or a Hugging
Face directory's) params; a resumed run ignores it; a model of another shape is refused."""

import jax
import numpy as np
import pytest

from r1jax.checkpoint import load_params
from r1jax.commands import train

TINY = ["--config=configs/sft_tiny.py", "--config.train.batch_size=8", "--config.train.log_every=1"]


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_a_fresh_run_starts_from_init_from(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert train.main([*TINY, "--config.train.steps=2", f"--workdir={first}"]) == 0
    tokenizer = f"--config.data.tokenizer={first / 'tokenizer.model'}"
    frozen = ["--config.optim.learning_rate=0.0", "--config.optim.weight_decay=0.0"]
    argv = [*TINY, *frozen, tokenizer, "--config.train.steps=1", f"--config.init_from={first}"]
    assert train.main([*argv, f"--workdir={second}"]) == 0
    (_, a), (_, b) = load_params(first), load_params(second)
    assert jax.tree.all(jax.tree.map(np.array_equal, jax.device_get(a), jax.device_get(b)))
    bigger = [*argv, "--config.model.num_layers=3", f"--workdir={tmp_path / 'third'}"]
    with pytest.raises(ValueError, match="num_layers=2 but config.model.num_layers=3"):
        train.main(bigger)
