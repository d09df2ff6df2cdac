"""LoRA adapters: fresh ones leave the model unchanged, applying them equals the merged
weights, and the PEFT form loads with ``peft`` on ``transformers`` with the same logits."""

import jax
import numpy as np
import pytest

from r1jax.config.model import ModelConfig, MoEConfig
from r1jax.model import forward, hf, init_params
from r1jax.model.lora import LoRAConfig, adapter_specs, attach, delta, init_adapters, merge

CONFIG = ModelConfig(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                     head_dim=8, mlp_dim=48, qkv_bias=True, tie_embeddings=False)  # fmt: skip
LORA = LoRAConfig(rank=4, alpha=8.0)
TOKENS = np.array([[3, 17, 92, 5, 44, 120, 7], [9, 8, 7, 6, 5, 4, 3]])


def _random_adapters(config, lora, seed=1):
    fresh = init_adapters(config, lora, jax.random.key(seed))
    return jax.tree.map(
        lambda x: x + 0.1 * jax.random.normal(jax.random.key(seed + 1), x.shape), fresh
    )


def test_fresh_adapters_reproduce_the_base_exactly_and_deltas_have_the_weights_shapes():
    params = init_params(CONFIG, jax.random.key(0))
    adapters = init_adapters(CONFIG, LORA, jax.random.key(1))
    base, _ = forward(params, TOKENS, CONFIG)
    same, _ = forward(merge(params, adapters, LORA), TOKENS, CONFIG)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(base))
    for name, ab in adapters["layers"].items():
        assert delta(ab["a"], ab["b"], name, 2.0).shape == params["layers"][name].shape
    a, b = adapters["layers"]["o"]["a"], adapters["layers"]["o"]["b"]
    assert a.shape == (2, 4, 8, 4) and b.shape == (2, 4, 32)  # o: input dims (heads, head_dim)


def test_a_target_matching_no_weight_lists_the_weights_it_could_match():
    with pytest.raises(ValueError, match=r"\['q_proj'\] match no weight.*'gate'"):
        adapter_specs(CONFIG, LoRAConfig(rank=2, targets=("q_proj",)))


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_expert_weights_get_one_adapter_per_expert():
    config = CONFIG.replace(moe=MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=16))
    lora = LoRAConfig(rank=2, targets=("q", "expert_up"))
    specs = adapter_specs(config, lora)["layers"]["expert_up"]
    assert specs["a"].shape == (2, 4, 32, 2) and specs["b"].shape == (2, 4, 2, 16)
    params = init_params(config, jax.random.key(0))
    adapters = _random_adapters(config, lora)
    merged = merge(params, adapters, lora)
    assert not np.allclose(merged["layers"]["expert_up"], params["layers"]["expert_up"])
    # Attached (merged per layer inside the scan, experts included) = merged up front.
    attached, _ = forward(attach(params, adapters, lora), TOKENS, config)
    np.testing.assert_allclose(attached, forward(merged, TOKENS, config)[0], atol=1e-5)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_attached_adapters_equal_the_merged_weights_and_train_through_the_merge():
    params = init_params(CONFIG, jax.random.key(0))
    adapters = _random_adapters(CONFIG, LORA)
    attached, _ = forward(attach(params, adapters, LORA), TOKENS, CONFIG)
    np.testing.assert_allclose(attached, forward(merge(params, adapters, LORA), TOKENS, CONFIG)[0],
                               atol=1e-5)  # fmt: skip
    loss = lambda f: lambda a: jax.numpy.mean(forward(f(params, a, LORA), TOKENS, CONFIG)[0] ** 2)
    grads, reference = jax.grad(loss(attach))(adapters), jax.grad(loss(merge))(adapters)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-7), grads,
                 reference)  # fmt: skip


def test_peft_export_loads_in_transformers_with_the_same_logits_and_merges(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from r1jax.model import peft as peft_io

    params = init_params(CONFIG.replace(init_std=0.1), jax.random.key(0))
    adapters = _random_adapters(CONFIG, LORA)
    merged = merge(params, adapters, LORA)
    expected, _ = forward(merged, TOKENS, CONFIG)
    hf.save(tmp_path / "base", CONFIG, params)
    peft_io.save_adapters(tmp_path / "adapter", CONFIG, adapters, LORA)
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    model = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        got = model(torch.tensor(TOKENS)).logits.float().numpy()
    np.testing.assert_allclose(got, np.asarray(expected), atol=1e-4, rtol=0)
    # ... and merging in peft equals our merged weights exported
    with torch.no_grad():
        merged_hf = model.merge_and_unload()(torch.tensor(TOKENS)).logits.float().numpy()
    np.testing.assert_allclose(merged_hf, np.asarray(expected), atol=1e-4, rtol=0)
    again, lora = peft_io.load_adapters(tmp_path / "adapter", CONFIG)
    assert lora == LORA
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), again, adapters)


def test_peft_adapters_that_would_load_as_something_else_are_refused(tmp_path):
    """PEFT puts gate/up/down adapters of a mixture of experts on its fused experts (a dense
    first layer's adapters loaded and did nothing), and a per-module alpha loaded at the
    global alpha: each is an error naming what it is."""
    import json

    from r1jax.model import peft as peft_io

    moe = CONFIG.replace(
        qk_norm=True, qkv_bias=False,
        moe=MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=16, dense_layers=1),
    )  # fmt: skip
    mlp = LoRAConfig(rank=4, alpha=8.0, targets=("q", "gate", "up", "down"))
    with pytest.raises(ValueError, match="not the MLP of a mixture of experts"):
        peft_io.save_adapters(tmp_path / "moe", moe, {}, mlp)
    peft_io.save_adapters(tmp_path / "dense", CONFIG, _random_adapters(CONFIG, LORA), LORA)
    meta_path = tmp_path / "dense" / "adapter_config.json"
    meta = json.loads(meta_path.read_text())
    for change in ({"alpha_pattern": {"v_proj": 32}}, {"rank_pattern": {"q_proj": 2}},
                   {"bias": "all"}, {"use_dora": True}):  # fmt: skip
        meta_path.write_text(json.dumps(meta | change))
        with pytest.raises(ValueError, match=f"only plain LoRA.*{next(iter(change))}"):
            peft_io.load_adapters(tmp_path / "dense", CONFIG)
