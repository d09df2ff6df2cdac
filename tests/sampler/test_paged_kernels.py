"""The Pallas paged-attention kernels over the page store (``model/paged_attention.py``), run
in Pallas' interpreter on CPU: they equal attention over the gathered keys, the sampler that
calls them returns the contiguous sampler's rows, and the choice of kernel is what it says."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG

from r1jax.config.model import MLAConfig
from r1jax.model import layers, param_shardings
from r1jax.model.paged_attention import _paged_attention, paged_kernel
from r1jax.sampling import Categorical, Greedy, Sampler, paged
from r1jax.sharding import MeshConfig, make_mesh


def _reference(q, k_store, v_store, layer, table, lengths):
    """Attention of ``q [C, N, H]`` over each row's tokens ``[0, length)`` gathered from its
    pages (``layers.attention``: fp32 scores scaled after the product)."""
    kh, _, _, z, h = k_store.shape
    c, p = table.shape
    rows = lambda store: store[:, layer][:, table].reshape(kh, c, p * z, h)  # [K, C, S, H]
    keys, values = rows(k_store).transpose(1, 0, 3, 2), rows(v_store).transpose(1, 0, 2, 3)
    mask = (jnp.arange(p * z)[None] < lengths[:, None])[:, None]
    return layers.attention(q[:, None], keys, values, mask)[:, 0]


@pytest.mark.parametrize(
    "platform, dtype, atol", [("gpu", jnp.float32, 1e-5), ("tpu", jnp.bfloat16, 2e-2)]
)
def test_the_kernels_equal_attention_over_the_gathered_pages(platform, dtype, atol):
    """Rows of 1 token, of part of a page and of every page (lengths 1, 7, 20 of 5 pages of
    4), at layer 1 of 3 (the kernel reads the whole store, its table offset by the layer)."""
    rng = np.random.default_rng(0)
    kh, num_layers, n, z, h, heads = 2, 3, 10, 4, 16, 4
    store = lambda: jnp.asarray(rng.normal(size=(kh, num_layers, n, z, h)), dtype)
    k_store, v_store = store(), store()
    q = jnp.asarray(rng.normal(size=(3, heads, h)), dtype)
    table = jnp.asarray(rng.integers(1, n, size=(3, 5)), jnp.int32)
    lengths = jnp.asarray([1, 7, 20], jnp.int32)
    got = _paged_attention(
        q, k_store, v_store, 1, table, lengths, platform=platform, interpret=True
    )
    want = _reference(q, k_store, v_store, 1, table, lengths)
    assert got.shape == (3, heads, h)
    np.testing.assert_allclose(np.float32(got), np.float32(want), atol=atol)


@pytest.mark.slow  # the interpreted kernel in every decode step: ~20 s
@pytest.mark.parametrize("method", [Greedy(), Categorical(temperature=0.9, top_k=20)])
def test_the_sampler_with_the_kernel_returns_the_contiguous_rows(params, monkeypatch, method):
    """The paged sampler with the (GPU, fp32) kernel in place of the gather: the contiguous
    sampler's tokens, log-probs to rounding, with pages to spare and with slots waiting."""
    kernel = functools.partial(_paged_attention, platform="gpu", interpret=True)
    monkeypatch.setattr(paged, "paged_kernel", lambda config, page_size: kernel)
    prompts = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]
    run = dict(num_samples=2, max_new_tokens=8, rng=jax.random.key(3), method=method)
    want = Sampler(CONFIG, buckets=BUCKETS, slots=4, decode_windows=1)(params, prompts, **run)
    for pages in (0, 4):
        sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=pages)
        got = sampler(params, prompts, **run)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)


@pytest.mark.slow  # the interpreted kernel per shard in every decode step: ~15 s
def test_the_kernel_runs_per_shard_on_a_mesh(params, monkeypatch):
    """data=2, fsdp=2, tensor=2: the kernel per device (``shard_map``: rows over the batch
    axes, KV heads over tensor), in one store per batch shard and in one store for all:
    the contiguous sampler's tokens, log-probs to rounding."""
    kernel = functools.partial(_paged_attention, platform="gpu", interpret=True)
    monkeypatch.setattr(paged, "paged_kernel", lambda config, page_size: kernel)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, param_shardings(CONFIG, mesh))
    prompts = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]
    run = dict(num_samples=2, max_new_tokens=8, rng=jax.random.key(3), method=Greedy())
    want = Sampler(CONFIG, buckets=BUCKETS, slots=4, decode_windows=1)(params, prompts, **run)
    for slots, pages in ((8, 0), (4, 4)):  # four stores; one store (4 pages do not split)
        sampler = Sampler(CONFIG, buckets=BUCKETS, slots=slots, page_size=4, pages=pages, mesh=mesh)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the one store: held by every device
            got = sampler(sharded, prompts, **run)
        np.testing.assert_array_equal(got.tokens, want.tokens)
        np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)


def test_a_kernel_serves_grouped_query_attention_on_tpu_and_gpu_only():
    """``model.paged_attention="auto"``: a kernel where it lowers (head dims, page sizes) and
    nowhere else: CPU, sliding windows, MLA's latent head. "gather" never; "kernel" says why
    it cannot."""
    wide, mid = CONFIG.replace(head_dim=128), CONFIG.replace(head_dim=64)
    assert paged_kernel(wide, 16) is None  # CPU: the gather
    assert callable(paged_kernel(wide, 16, platform="tpu"))
    assert paged_kernel(mid, 16, platform="tpu") is None  # Mosaic: head dim a multiple of 128
    assert paged_kernel(wide, 4, platform="tpu") is None
    assert callable(paged_kernel(mid, 16, platform="gpu"))
    assert paged_kernel(mid, 8, platform="gpu") is None
    assert paged_kernel(CONFIG, 16, platform="gpu") is None  # head dim 8
    assert paged_kernel(wide.replace(sliding_window=16), 16, platform="tpu") is None
    mla = MLAConfig(kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)
    plain = dict(qkv_bias=False, o_bias=False, qk_norm=False)
    assert paged_kernel(CONFIG.replace(head_dim=24, mla=mla, **plain), 16, platform="gpu") is None
    assert paged_kernel(wide.replace(paged_attention="gather"), 16, platform="tpu") is None
    forced = mid.replace(paged_attention="kernel")
    assert callable(paged_kernel(forced, 16, platform="gpu"))
    with pytest.raises(ValueError, match="paged_attention='kernel': the TPU kernel needs head_dim"):
        paged_kernel(forced, 16, platform="tpu")
    with pytest.raises(ValueError, match="no Pallas paged-attention kernel on cpu"):
        paged_kernel(forced, 16)
    with pytest.raises(ValueError, match="model.paged_attention='pallas'; one of"):
        CONFIG.replace(paged_attention="pallas")
