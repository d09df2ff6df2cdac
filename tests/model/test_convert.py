"""``r1jax convert`` both directions, and ``checkpoint.load_params`` on each format."""

import jax
import numpy as np
import pytest

from r1jax.checkpoint import find_tokenizer, load_params, save_params
from r1jax.commands import convert
from r1jax.model import ModelConfig, hf, init_params

CONFIG = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=48,
    qkv_bias=True,
    tie_embeddings=False,
)


def _assert_same(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _args(direction, source, target) -> list[str]:
    return [
        f"--config.convert.direction={direction}",
        f"--config.convert.input={source}",
        f"--config.convert.output={target}",
        "--config.mesh.data=1",
        "--config.mesh.fsdp=-1",
    ]


def test_hf_to_r1jax_to_hf_round_trip(tmp_path):
    params = init_params(CONFIG, jax.random.key(3))
    hf.save(tmp_path / "hf", CONFIG, params)
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "generation_config.json")
    for name in tokenizer_files:  # travel with the weights, both ways (the chat template, EOS)
        (tmp_path / "hf" / name).write_text(f'{{"{name}": 1}}')

    assert convert.main(_args("hf-to-r1jax", tmp_path / "hf", tmp_path / "ours")) == 0
    config, loaded = load_params(tmp_path / "ours")
    assert config == CONFIG
    _assert_same(loaded, params)
    assert find_tokenizer(tmp_path / "ours" / "checkpoints") == tmp_path / "ours" / "tokenizer.json"

    assert convert.main(_args("r1jax-to-hf", tmp_path / "ours", tmp_path / "back")) == 0
    config2, back = hf.load(tmp_path / "back")
    assert config2 == CONFIG
    _assert_same(back, params)
    for name in tokenizer_files:
        assert (tmp_path / "back" / name).read_text() == f'{{"{name}": 1}}', name


def test_an_export_over_an_older_one_leaves_none_of_its_files(tmp_path):
    """A sharded export's index stayed next to a later single-file export and was read first:
    load_params returned the older weights."""
    first, second = init_params(CONFIG, jax.random.key(1)), init_params(CONFIG, jax.random.key(2))
    hf.save(tmp_path / "out", CONFIG, first, max_shard_bytes=20_000)
    assert (tmp_path / "out" / "model.safetensors.index.json").exists()
    hf.save(tmp_path / "out", CONFIG, second)
    assert sorted(p.name for p in (tmp_path / "out").glob("model*")) == ["model.safetensors"]
    _assert_same(hf.load(tmp_path / "out")[1], second)
    cut = (tmp_path / "out" / "model.safetensors").read_bytes()[:100]
    (tmp_path / "out" / "model.safetensors").write_bytes(cut)
    with pytest.raises(ValueError, match="model.safetensors: not a readable safetensors file"):
        hf.load(tmp_path / "out")


def test_load_params_onto_a_mesh_and_bf16_export(tmp_path):
    from jax.sharding import PartitionSpec as P

    from r1jax.config import MeshConfig
    from r1jax.sharding import make_mesh

    params = init_params(CONFIG, jax.random.key(4))
    save_params(tmp_path / "run", CONFIG, params)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    _, sharded = load_params(tmp_path / "run", mesh=mesh)
    assert sharded["layers"]["gate"].sharding.spec == P(None, "fsdp", "tensor")
    _assert_same(sharded, params)
    convert.main(
        [
            *_args("r1jax-to-hf", tmp_path / "run", tmp_path / "bf16"),
            "--config.convert.dtype=bfloat16",
        ]
    )
    config, low = hf.load(tmp_path / "bf16")
    assert config.param_dtype == "float32"  # loaded back in the default param dtype
    np.testing.assert_allclose(np.asarray(low["embed"]), np.asarray(params["embed"]), rtol=1e-2)
