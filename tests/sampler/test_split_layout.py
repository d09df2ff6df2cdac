"""The static loop's "split" layout (each layer's weights and cache, one chunk per decode
window, in buffers of their own: ``split_cache``) samples the rows of the stacked layout."""

import jax
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG

from r1jax.config.model import MLAConfig, MoEConfig
from r1jax.model import init_params
from r1jax.sampling import Categorical, Greedy, Sampler, compile_options

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]
KW = dict(num_samples=3, max_new_tokens=30, stop_token_ids=(7, 11))
METHODS = {"sampled": Categorical(temperature=0.9, top_k=20), "greedy": Greedy()}


def _rows(params, layout, method, windows, config=CONFIG, **kw):
    sampler = Sampler(config, buckets=BUCKETS, layout=layout, decode_windows=windows, **kw)
    return sampler(params, PROMPTS, rng=jax.random.key(5), method=METHODS[method], **KW)


@pytest.mark.parametrize("windows", [1, 4])
@pytest.mark.parametrize("method", list(METHODS))
def test_split_layout_samples_the_stacked_layouts_rows(params, method, windows):
    """Sampled rows end at mixed steps (stop tokens) and, with 4 windows, cross chunk boundaries.
    One window: the same products, bit for bit; four: the value products are summed per chunk
    (another order of the same terms)."""
    split = _rows(params, "split", method, windows)
    stacked = _rows(params, "default", method, windows)
    if method == "sampled":
        assert 0 < (split.finish_reason == "stop").sum() < len(split.tokens)
    assert split.lengths.max() > 16  # past the first window's chunk (24 slots)
    np.testing.assert_array_equal(split.tokens, stacked.tokens)
    np.testing.assert_array_equal(split.lengths, stacked.lengths)
    atol = 0.0 if windows == 1 else 1e-5
    np.testing.assert_allclose(split.logprobs, stacked.logprobs, rtol=0, atol=atol)


@pytest.mark.slow  # ~8 s: the default suite stays under 10 minutes; CI runs -m slow
def test_split_layout_records_the_routing_of_a_mixture_of_experts():
    """The unrolled layers stack their router stats as the scan did (routing replay)."""
    config = CONFIG.replace(moe=MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=16))
    moe_params = init_params(config, jax.random.key(3))
    split = _rows(moe_params, "split", "sampled", 4, config, record_routing=True)
    stacked = _rows(moe_params, "default", "sampled", 4, config, record_routing=True)
    np.testing.assert_array_equal(split.tokens, stacked.tokens)
    np.testing.assert_array_equal(split.routing, stacked.routing)


def test_default_layout_splits_on_cpus_only_up_to_a_depth_and_never_a_latent_cache(monkeypatch):
    latent = MLAConfig(kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    mla = CONFIG.replace(mla=latent, head_dim=16, qkv_bias=False)
    for platform, dense, latent in [("cpu", "split", "default"), ("gpu", "default", "default"),
                                    ("tpu", "auto", "auto")]:  # fmt: skip
        monkeypatch.setattr(compile_options, "target_platform", lambda p=platform: p)
        assert compile_options.default_layout(CONFIG) == dense
        assert compile_options.default_layout(mla) == latent
    deep = CONFIG.replace(num_layers=compile_options.CPU_SPLIT_MAX_LAYERS + 1)
    monkeypatch.setattr(compile_options, "target_platform", lambda: "cpu")
    assert compile_options.default_layout(deep) == "default"
