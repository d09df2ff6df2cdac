"""The sampler on a multi-head latent attention model: its cache holds only the latent and the
RoPE key per token (the absorbed form), and it decodes what full forwards (the expanded form)
give: greedy tokens equal, log-probs within 1e-5."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.config.model import MLAConfig, ModelConfig, MoEConfig, RopeScaling
from r1jax.model import forward, init_cache, init_params
from r1jax.model import param_shardings as sharding_of
from r1jax.sampling import Sampler

MLA = MLAConfig(kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8,
                v_head_dim=12)  # fmt: skip
CONFIG = ModelConfig(
    vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=4, head_dim=24,
    mlp_dim=48, tie_embeddings=False, mla=MLA,
    # YaRN past 4 positions, mscale_all_dim != mscale: both forms scale alike
    rope_scaling=RopeScaling(rope_type="yarn", factor=4.0, original_max_position_embeddings=4,
                             mscale=1.0, mscale_all_dim=0.8),
    moe=MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=16, router="sigmoid",
                  shared_experts=1, dense_layers=1),
)  # fmt: skip
PROMPTS = [[5, 9, 13, 2, 7], [33, 4], [1, 2, 3, 4, 5, 6, 7]]
MAX_NEW = 8


def test_the_latent_cache_holds_kv_lora_rank_plus_rope_dim_per_token_and_layer():
    for dtype in (jnp.float32, jnp.bfloat16):
        cache = init_cache(CONFIG, batch_size=2, max_length=10, dtype=dtype)
        per_token = (cache.k.nbytes + cache.v.nbytes) / (2 * 10)
        expected = (MLA.kv_lora_rank + MLA.qk_rope_head_dim) * CONFIG.num_layers
        assert per_token == expected * jnp.dtype(dtype).itemsize


def _rows(completions):
    width_p = max(len(p) for p in PROMPTS)
    tokens = np.zeros((len(completions), width_p + MAX_NEW), np.int32)
    mask = np.zeros_like(tokens)
    for i, c in enumerate(completions):
        p = PROMPTS[i * len(PROMPTS) // len(completions)]
        tokens[i, width_p - len(p) : width_p + len(c)] = list(p) + list(c)
        mask[i, width_p - len(p) : width_p + len(c)] = 1
    return tokens, mask, width_p


@jax.jit
def _full_logits(params, tokens, mask):
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    return forward(params, tokens, CONFIG, positions=positions, segment_ids=mask)[0]


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_mla_sampler_equals_full_forward_decoding():
    noise = lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape)
    params = jax.jit(lambda p: jax.tree.map(noise, p))(init_params(CONFIG, jax.random.key(0)))
    sampler = Sampler(CONFIG, buckets=(8,))
    greedy = sampler(params, PROMPTS, rng=jax.random.key(0), max_new_tokens=MAX_NEW, greedy=True)
    expected = [[] for _ in PROMPTS]
    for _ in range(MAX_NEW):
        tokens, mask, start = _rows(expected)
        logits = np.asarray(_full_logits(params, tokens, mask))
        for i, c in enumerate(expected):
            c.append(int(logits[i, start + len(c) - 1].argmax()))
    np.testing.assert_array_equal(greedy.tokens, np.array(expected))

    sampled = sampler(params, PROMPTS, rng=jax.random.key(3), num_samples=2, max_new_tokens=MAX_NEW)
    tokens, mask, start = _rows(sampled.completions())
    logits = np.asarray(_full_logits(params, tokens, mask))[:, start - 1 : start - 1 + MAX_NEW]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    picked = np.take_along_axis(logp, sampled.tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(sampled.logprobs, picked, atol=1e-5)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_continuous_and_paged_sampling_of_an_mla_model_equal_the_static_loop():
    params = init_params(CONFIG.replace(init_std=0.3), jax.random.key(0))
    kwargs = dict(rng=jax.random.key(4), num_samples=2, max_new_tokens=MAX_NEW)
    static = Sampler(CONFIG, buckets=(8,), keys="request", decode_windows=1)(
        params, PROMPTS, **kwargs
    )
    for options in (dict(slots=4), dict(slots=4, page_size=4)):
        out = Sampler(CONFIG, buckets=(8,), **options)(params, PROMPTS, **kwargs)
        np.testing.assert_array_equal(out.tokens, static.tokens)
        np.testing.assert_allclose(out.logprobs, static.logprobs, atol=1e-6)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_sharded_mla_model_equals_unsharded_forward_and_gradients():
    """Mesh data 2 x fsdp 2 x tensor 2: heads over tensor, the latent replicated."""
    from r1jax import sharding

    params = init_params(CONFIG.replace(init_std=0.2), jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, CONFIG.vocab_size)

    def loss(params, tokens):
        logits, _ = forward(params, tokens, CONFIG)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss))(params, tokens)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = init_params(CONFIG.replace(init_std=0.2), jax.random.key(0), mesh=mesh)
    assert sharded["layers"]["kv_b"].sharding.spec[2] == "tensor"
    tokens = jax.device_put(tokens, sharding.named_sharding(mesh, ("batch", "seq"), tokens.shape))
    with jax.set_mesh(mesh):
        got_loss, got_grads = jax.jit(jax.value_and_grad(loss))(sharded, tokens)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), got_grads, ref_grads)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
@pytest.mark.parametrize(
    "mesh, capacity, stores",
    [((2, 2, 1, 2), 0.0, 4), ((2, 1, 2, 2), 0.0, 2), ((2, 1, 2, 2), 4.0, 1)],
    ids=["data-fsdp", "expert", "expert-parallel"],
)
def test_paged_sampling_of_an_mla_moe_model_on_a_mesh(mesh, capacity, stores):
    """MLA + MoE (R1's model, in miniature) over a paged cache on a mesh: one store per batch
    shard (the experts' grouped matmuls run once over every shard's tokens), the expert axis
    inside each shard; with expert parallelism (its all-to-all does not split) one store, said
    in a warning. Tokens equal one store on one device, log-probs within 1e-5."""
    from r1jax import sharding

    config = CONFIG.replace(moe=dataclasses.replace(CONFIG.moe, capacity_factor=capacity))
    params = init_params(config.replace(init_std=0.3), jax.random.key(0))
    prompts, kw = (
        PROMPTS + PROMPTS[:1],
        dict(rng=jax.random.key(4), num_samples=2, max_new_tokens=8),
    )
    ref = Sampler(config, buckets=(8,), slots=4, page_size=4)(params, prompts, **kw)
    axes = dict(zip(("data", "fsdp", "expert", "tensor"), mesh, strict=True))
    mesh = sharding.make_mesh(sharding.MeshConfig(**axes))
    sharded = jax.device_put(params, sharding_of(config, mesh))
    sampler = Sampler(config, buckets=(8,), slots=4, page_size=4, mesh=mesh)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sampler(sharded, prompts, **kw)
    said = [str(w.message) for w in caught if "page store is split" in str(w.message)]
    assert bool(said) == (stores == 1) and all("expert parallelism" in s for s in said)
    one_store = 1 + 4 * 2 + 4 * 3  # null page, 4 prompts x 2 pages, 4 slots x 3 pages
    assert out.paging["store_pages"] == one_store + (stores - 1)  # a null page per store
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
