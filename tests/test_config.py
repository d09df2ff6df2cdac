"""The config schema: defaults written once, one typed conversion, nearest-key errors, GRPO
variants that explicit keys override, derived defaults, and config files free of training code."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from r1jax.config import KINDS, VARIANTS, GRPOConfig, defaults, schema, typed
from r1jax.config.flags import parse_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", KINDS)
def test_generated_defaults_convert_to_the_schema_defaults(kind):
    stage = typed(defaults(kind))
    assert stage.kind == kind and stage.seed == schema.SEED
    for name in schema.SECTIONS[kind]:
        if name in ("model", "rewards"):
            continue
        got, want = getattr(stage, name), schema.SECTION_TYPES[name]()
        if name == "optim":  # total_steps 0 means the stage's steps
            want = dataclasses.replace(want, total_steps=stage.train.steps)
        if name == "lora":  # rank 0 means no adapters: no section
            want = None
        assert got == want, name


def test_unknown_keys_name_the_nearest_valid_key():
    with pytest.raises(
        ValueError, match=r"config.grpo.betta: unknown key; did you mean config.grpo.beta\?"
    ):
        typed({"kind": "grpo", "grpo": {"betta": 0.1}})
    with pytest.raises(ValueError, match=r"config.trian: unknown key; did you mean config.train\?"):
        typed({"kind": "sft", "trian": {}})
    with pytest.raises(ValueError, match="config.kind='rl'"):
        typed({"kind": "rl"})
    with pytest.raises(ValueError, match=r"config.train.steps='10': expected int"):
        typed({"kind": "sft", "train": {"steps": "10"}})


def test_grpo_sampling_settings_are_checked_when_the_config_is_built():
    for field, value in (("temperature", 0.0), ("top_k", -1), ("top_p", 0.0), ("top_p", 1.5)):
        with pytest.raises(ValueError, match=r"config.grpo.temperature=.*GRPO samples G"):
            GRPOConfig(**{field: value})


def test_keeping_no_checkpoint_is_refused():
    with pytest.raises(ValueError, match=r"config.train.keep_checkpoints=0: must be >= 1"):
        typed({"kind": "sft", "train": {"keep_checkpoints": 0}})


def test_an_argument_to_a_config_without_one_is_an_error_naming_the_file():
    with pytest.raises(ValueError, match=r"grpo_tiny.py: get_config\(\) takes no argument"):
        parse_config(["--config=configs/grpo_tiny.py:foo"], command="t", default="x")


def test_r1_is_the_baseline_and_a_variant_fills_only_unset_fields():
    r1 = GRPOConfig()
    assert (r1.beta, r1.eps_low, r1.eps_high, r1.aggregation) == (0.001, 0.2, None, "seq_mean")
    assert (r1.importance, r1.advantage_scale, r1.dynamic_sampling) == ("token", "group", False)
    assert r1.num_samples == 16 == GRPOConfig(variant="dapo").num_samples  # R1: G = 16
    dapo = GRPOConfig(variant="dapo", max_new_tokens=100)
    assert (dapo.beta, dapo.eps_high, dapo.aggregation) == (0.0, 0.28, "token_mean")
    assert dapo.dynamic_sampling and dapo.overlong_cache == 20 and dapo.eps_low == 0.2
    assert GRPOConfig(variant="dapo", eps_high=0.3, beta=0.01).eps_high == 0.3
    assert GRPOConfig(variant="dapo", eps_high=0.3, beta=0.01).beta == 0.01
    dr = GRPOConfig(variant="dr_grpo", max_new_tokens=64)
    assert (dr.advantage_scale, dr.aggregation, dr.max_tokens) == ("none", "constant", 64)
    gspo = GRPOConfig(variant="gspo")
    assert (gspo.importance, gspo.eps_low, gspo.eps_high) == ("sequence", 3e-4, 4e-4)
    assert GRPOConfig(tis_cap=2.0).keep_sampler_logprobs
    with pytest.raises(ValueError, match="config.grpo.variant='ppo'"):
        GRPOConfig(variant="ppo")
    assert set(VARIANTS) == {"r1", "dapo", "dr_grpo", "gspo"}


def test_a_variant_is_one_override_on_the_command_line():
    argv = ["--config=configs/grpo_tiny.py", "--config.grpo.variant=dapo"]
    config, _ = parse_config(argv, command="t", default="x")
    grpo = typed(config).grpo
    assert (grpo.variant, grpo.beta, grpo.aggregation) == ("dapo", 0.0, "token_mean")
    config, _ = parse_config(
        [*argv, "--config.grpo.aggregation=seq_mean"], command="t", default="x"
    )
    assert typed(config).grpo.aggregation == "seq_mean"


def test_total_steps_follows_the_stage_unless_set():
    assert typed({"kind": "sft", "train": {"steps": 7}}).optim.total_steps == 7
    stage = typed({"kind": "sft", "train": {"steps": 7}, "optim": {"total_steps": 50}})
    assert stage.optim.total_steps == 50


def test_a_stage_round_trips_through_its_plain_dict():
    config, _ = parse_config(["--config=configs/distill_tiny.py"], command="t", default="x")
    stage = typed(config)
    assert typed(stage.to_dict()) == stage


def test_config_files_import_no_training_code_nor_jax():
    code = (
        "import sys; from r1jax.config.flags import load_config_file\n"
        "import glob\n"
        "for path in sorted(glob.glob('configs/*.py')): load_config_file(path)\n"
        "heavy = ('jax', 'r1jax.train', 'r1jax.data', 'r1jax.sampling', 'r1jax.rewards')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[-1] == "[]"
