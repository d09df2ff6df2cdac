"""``r1jax train`` with ``config.lora``: a QLoRA GRPO run checkpoints its adapters only and
resumes; ``load_params`` merges them into the base it trained on; ``r1jax convert`` writes
them in the PEFT format."""

import jax
import numpy as np
import pytest
from test_grpo_run import tiny_stage

from r1jax.checkpoint import load_adapters, load_params, run_config, run_lora
from r1jax.commands import convert
from r1jax.model import init_params, peft
from r1jax.model.lora import merge
from r1jax.train import loop
from r1jax.train.metrics import read_metrics

QLORA = ("--config.lora.rank=4", "--config.lora.base_quant=nf4", "--config.lora.quant_block=16")


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_qlora_grpo_run_saves_adapters_only_resumes_merges_and_exports(tmp_path):
    run = tmp_path / "run"
    loop.run(tiny_stage(2, *QLORA), run)
    items = {p.name for p in (run / "checkpoints" / "2").iterdir()}
    assert "params" in items and "frozen" not in items  # the base is never written
    loop.run(tiny_stage(3, *QLORA), run)  # resumes at step 2
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "reward/total" in r]
    assert steps == [1, 2, 3]

    stage = tiny_stage(3, *QLORA)
    lora = run_lora(run_config(run))
    assert lora == stage.lora
    config, merged = load_params(run)
    adapters = load_adapters(run, config, lora)
    base = init_params(config, jax.random.key(stage.seed))  # no init_from: the seed's init
    expected = merge(base, adapters, lora)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(merged), jax.device_get(expected))

    out = tmp_path / "peft"
    argv = ["--config.convert.direction=r1jax-to-peft", f"--config.convert.input={run}",
            f"--config.convert.output={out}"]  # fmt: skip
    assert convert.main(argv) == 0
    reloaded, reloaded_lora = peft.load_adapters(out, config)
    assert (reloaded_lora.rank, reloaded_lora.alpha) == (lora.rank, lora.alpha)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, atol=0),
        reloaded,
        jax.device_get(adapters),
    )


def test_lora_options_training_cannot_honour_are_refused_by_field():
    with pytest.raises(ValueError, match="config.lora.dropout=0.1"):
        tiny_stage(1, "--config.lora.rank=4", "--config.lora.dropout=0.1")
    with pytest.raises(ValueError, match="config.grpo.ref_refresh_every=5"):
        tiny_stage(1, "--config.lora.rank=4", "--config.grpo.ref_refresh_every=5")
    with pytest.raises(ValueError, match="config.lora.base_quant='nf4' needs adapters"):
        tiny_stage(1, "--config.lora.base_quant=nf4")
    with pytest.raises(ValueError, match="config.lora.base_quant='fp8'"):
        tiny_stage(1, "--config.lora.rank=4", "--config.lora.base_quant=fp8")


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_lora_sft_from_an_r1jax_run_checkpoints_adapters_merged_into_that_base(tmp_path):
    from r1jax.commands import train

    tiny = ["--config=configs/sft_tiny.py", "--config.train.batch_size=8",
            "--config.train.log_every=1"]  # fmt: skip
    base_run, lora_run = tmp_path / "base", tmp_path / "lora"
    assert train.main([*tiny, "--config.train.steps=2", f"--workdir={base_run}"]) == 0
    argv = [*tiny, f"--config.data.tokenizer={base_run / 'tokenizer.model'}",
            f"--config.init_from={base_run}", "--config.lora.rank=4",
            "--config.train.steps=2"]  # fmt: skip
    assert train.main([*argv, f"--workdir={lora_run}"]) == 0
    items = {p.name for p in (lora_run / "checkpoints" / "2").iterdir()}
    assert "frozen" not in items
    config, merged = load_params(lora_run)
    lora = run_lora(run_config(lora_run))
    adapters = load_adapters(lora_run, config, lora)
    assert all(float(np.abs(ab["b"]).max()) > 0 for ab in adapters["layers"].values())
    expected = merge(load_params(base_run)[1], adapters, lora)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(merged), jax.device_get(expected))


def test_a_distillation_stage_takes_the_section_but_not_adapters():
    from r1jax.config import defaults, typed

    config = defaults("distill")
    assert typed(config).lora is None
    config.lora.rank = 4
    with pytest.raises(ValueError, match="config.lora.rank=4: adapters train in sft and grpo"):
        typed(config)
