"""Memory-linear attention (``r1jax.model.attention``, ``attention_kernels``) against the
reference ``layers.attention``: values and gradients, every layout the model passes (causal,
packed segments, left padding, GQA, odd lengths, sliding window, KV-cache prefill and decode),
compiled-memory growth, the splash kernel in interpret mode and the cuDNN wrapper's logic."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.model import ModelConfig, init_cache, init_params, layers
from r1jax.model import attention as attn
from r1jax.model import attention_kernels as kernels
from r1jax.model import forward as _forward

forward = jax.jit(_forward, static_argnums=2)


def _rows(spec, length):
    """Segment ids and positions ``[B, length]`` from per-row runs ``[(segment, n), ...]``
    (segment 0 = padding; positions restart at 0 in each run, padding at 0 as the sampler's)."""
    seg = np.zeros((len(spec), length), np.int32)
    pos = np.zeros((len(spec), length), np.int32)
    for r, runs in enumerate(spec):
        t = 0
        for s, n in runs:
            seg[r, t : t + n] = s
            pos[r, t : t + n] = np.arange(n) if s else 0
            t += n
    return jnp.asarray(seg), jnp.asarray(pos)


def _qkv(b, t, s, n, k, h, seed=0, dtype=jnp.float32):
    r = np.random.default_rng(seed)
    q = r.normal(size=(b, t, n, h))
    keys, values = r.normal(size=(b, k, h, s)), r.normal(size=(b, k, s, h))
    return tuple(jnp.asarray(x, dtype) for x in (q, keys, values))


def _reference(q, k, v, q_pos, q_seg, k_pos, k_seg, window=None):
    mask = layers.attention_mask(q_pos, q_seg, k_pos, k_seg, window)
    return layers.attention(q, k, v, mask)


def _assert_same(fn, ref, q, k, v, q_seg, tol=1e-5):
    """Equal outputs and q/k/v gradients on rows that attend something (padding rows: see the
    module docstring of ``attention``); the cotangent is random on those rows, zero elsewhere."""
    valid = (q_seg != 0)[:, :, None, None]
    cotangent = jnp.asarray(np.random.default_rng(9).normal(size=q.shape), jnp.float32) * valid
    grad = lambda f: jax.jit(jax.grad(lambda *a: jnp.sum(f(*a) * cotangent), (0, 1, 2)))
    out, want = jax.jit(fn)(q, k, v), jax.jit(ref)(q, k, v)
    np.testing.assert_allclose(out * valid, want * valid, atol=tol, rtol=tol)
    grads, want_grads = grad(fn)(q, k, v), grad(ref)(q, k, v)
    for g, w in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(g, w, atol=tol, rtol=tol)


LAYOUTS = [  # one batch row each: causal, packed, left padded, right padded, all padding
    [(1, 37)],
    [(1, 12), (2, 20), (3, 5)],
    [(0, 9), (1, 28)],
    [(1, 30), (0, 7)],
    [(0, 37)],
]


@pytest.mark.parametrize(
    ("heads", "window"),
    [((4, 2), None), ((4, 2), 5), ((4, 4), None), ((6, 1), 5)],
    ids=["gqa", "gqa-window", "mha", "mqa-window"],
)
def test_blockwise_equals_reference(heads, window):
    """Every layout at once; T = 37 with blocks of 8: five query and key blocks, the last one
    padded. With block skipping (``q_offset=0``: these rows are slot-ordered) and without."""
    n, kh = heads
    seg, pos = _rows(LAYOUTS, 37)
    q, k, v = _qkv(len(LAYOUTS), 37, 37, n, kh, 8)
    ref = lambda q, k, v: _reference(q, k, v, pos, seg, pos, seg, window)
    assert attn.index_ordered(seg, pos)
    for offset in (0, None):

        def fn(q, k, v, offset=offset):
            return attn.blockwise_attention(
                q, k, v, pos, seg, pos, seg, q_offset=offset, sliding_window=window, block=8
            )

        _assert_same(fn, ref, q, k, v, seg)


def test_blockwise_with_unordered_positions_visits_every_block():
    """Positions that do not follow slot order (a repeated segment id, a jump) switch block
    skipping off at run time: the result is still the reference's."""
    seg = jnp.asarray([[1] * 10 + [2] * 10 + [1] * 10, [1] * 30], jnp.int32)
    pos = jnp.asarray([list(range(10)) * 3, list(range(30, 0, -1))], jnp.int32)
    assert not attn.index_ordered(seg, pos)
    q, k, v = _qkv(2, 30, 30, 4, 2, 8)
    ref = lambda q, k, v: _reference(q, k, v, pos, seg, pos, seg)
    fn = lambda q, k, v: attn.blockwise_attention(q, k, v, pos, seg, pos, seg, q_offset=0, block=8)
    _assert_same(fn, ref, q, k, v, seg)


@pytest.mark.parametrize(
    ("spec", "ordered"),
    [
        ([[(0, 3), (1, 5)], [(1, 8)]], True),  # left padding
        ([[(1, 3), (2, 4), (0, 1)]], True),  # packed, right padding
        ([[(2, 3), (1, 5)]], False),  # ids decrease
        ([[(1, 3), (0, 2), (1, 3)]], False),  # one id in two runs
    ],
)
def test_index_ordered(spec, ordered):
    seg, pos = _rows(spec, 8)
    assert bool(attn.index_ordered(seg, pos)) == ordered


def test_index_ordered_rejects_a_position_gap():
    seg = jnp.ones((1, 4), jnp.int32)
    assert not attn.index_ordered(seg, jnp.asarray([[0, 1, 3, 4]]))


@pytest.mark.parametrize("window", [None, 3, 11])
@pytest.mark.parametrize("offset", [0, 5, 13])
def test_block_ranges_cover_every_attended_pair(offset, window):
    """For slot-ordered data, query block i attends only key blocks in ``_kv_blocks(i)`` and key
    block j is reached only from query blocks in ``_q_blocks(j)``; some blocks are skipped."""
    bq, bk, t = 4, 8, 12
    s, nq = offset + t, 3
    nk = -(-s // bk)
    q_slot, k_slot = offset + np.arange(t)[:, None], np.arange(nk * bk)[None, :]
    delta = q_slot - k_slot
    attended = (delta >= 0) & ((delta < window) if window else True)
    visited = 0
    for i in range(nq):
        lo, hi = (int(x) for x in attn._kv_blocks(i, offset, True, bq, bk, nk, window))
        rows = attended[i * bq : (i + 1) * bq]
        blocks = {c // bk for c in np.nonzero(rows.any(0))[0]}
        assert blocks <= set(range(lo, hi)), (i, blocks, lo, hi)
        visited += hi - lo
        for j in blocks:
            qlo, qhi = (int(x) for x in attn._q_blocks(j, offset, True, bq, bk, nq, window))
            assert qlo <= i < qhi, (i, j, qlo, qhi)
    assert visited < nq * nk


def _cache_case(prompt_len, new, t):
    """A 2-row cache of ``prompt_len + new`` slots: left-padded prompts (segment 0 / 1), ``t``
    tokens being written at slot ``offset``, the tail still empty. Returns q/k/v, query
    positions and segments, slot positions and segments, offset."""
    s = prompt_len + new
    offset = prompt_len if t == 1 else 0
    lens = np.array([prompt_len - 4, prompt_len])
    k_seg = np.zeros((2, s), np.int32)
    k_pos = np.zeros((2, s), np.int32)
    for r, n in enumerate(lens):
        written = offset + t
        k_seg[r, prompt_len - n : written] = 1
        k_pos[r, prompt_len - n : written] = np.arange(written - prompt_len + n)
    q_seg, q_pos = k_seg[:, offset : offset + t], k_pos[:, offset : offset + t]
    q, k, v = _qkv(2, t, s, 4, 2, 8, seed=3)
    return (q, k, v), jnp.asarray(q_pos), jnp.asarray(q_seg), k_pos, k_seg, offset


@pytest.mark.parametrize("t", [1, 20], ids=["decode", "prefill"])
def test_blockwise_with_a_kv_cache_equals_reference(t):
    """Decode (T = 1, S = cache length, only the written slots read) and prefill into a longer
    cache (T < S, empty tail) by the traced write index, as ``transformer`` passes it."""
    (q, k, v), q_pos, q_seg, k_pos, k_seg, offset = _cache_case(20, 19, t)
    ref = lambda q, k, v: _reference(q, k, v, q_pos, q_seg, k_pos, k_seg)

    def fn(q, k, v):
        off = jnp.asarray(offset, jnp.int32)  # traced, as cache.length - T
        return attn.blockwise_attention(q, k, v, q_pos, q_seg, k_pos, k_seg, q_offset=off, block=8)

    _assert_same(fn, ref, q, k, v, q_seg)


def _temp_bytes(fn, t, b=1, n=4, kh=2, h=64):
    sd = jax.ShapeDtypeStruct
    shapes = [sd((b, t, n, h), jnp.float32), sd((b, kh, h, t), jnp.float32)]
    shapes += [sd((b, kh, t, h), jnp.float32), sd((b, t), jnp.int32), sd((b, t), jnp.int32)]
    loss = lambda q, k, v, pos, seg: jnp.sum(fn(q, k, v, pos, seg))
    compiled = jax.jit(jax.value_and_grad(loss, (0, 1, 2))).lower(*shapes).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_blockwise_gradient_memory_is_linear_in_sequence_length():
    """Forward + backward temporaries of one attention call (B=1, 4/2 heads of 64), compiled
    for CPU: blockwise ~19.7 -> ~32.0 MB from T=2048 to 8192 (fixed per-block buffers plus
    O(T) ones), the reference 0.2 -> 3.2 GB (the [T, T] scores and probabilities)."""

    def blockwise(q, k, v, pos, seg):
        return attn.blockwise_attention(q, k, v, pos, seg, pos, seg, q_offset=0, block=512)

    def reference(q, k, v, pos, seg):
        return _reference(q, k, v, pos, seg, pos, seg)

    small, large = _temp_bytes(blockwise, 2048), _temp_bytes(blockwise, 8192)
    assert large / small <= 4.5, (small, large)
    ref_small, ref_large = _temp_bytes(reference, 2048), _temp_bytes(reference, 8192)
    assert ref_large / ref_small >= 12, (ref_small, ref_large)
    assert large * 50 < ref_large


def _splash(q, k, v, seg, window=None):
    return kernels.splash_attention(q, k, v, seg, sliding_window=window, block=128)


@pytest.mark.parametrize("window", [None, 7])
def test_splash_kernel_in_interpret_mode_equals_reference(window):
    """The Pallas TPU kernel runs on CPU in interpret mode (slowly): packed rows, left and right
    padding, an all-padding row; T = 200 padded to 256; GQA 4/2."""
    seg, pos = _rows([[(0, 9), (1, 100), (2, 91)], [(1, 150), (0, 50)], [(0, 200)]], 200)
    q, k, v = _qkv(3, 200, 200, 4, 2, 16)
    ref = lambda q, k, v: _reference(q, k, v, pos, seg, pos, seg, window)
    _assert_same(lambda q, k, v: _splash(q, k, v, seg, window), ref, q, k, v, seg)


@pytest.mark.slow
def test_splash_kernel_runs_per_shard_under_a_mesh():
    """Under an ambient mesh the kernel is ``shard_map``-ped over batch (data, fsdp) and kv heads
    (tensor): same values as on one device."""
    seg, pos = _rows([[(0, 9), (1, 119)], [(1, 128)], [(1, 60), (2, 68)], [(0, 128)]], 128)
    q, k, v = _qkv(4, 128, 128, 4, 2, 16)
    with jax.set_mesh(sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})):
        out = jax.jit(lambda q, k, v: _splash(q, k, v, seg))(q, k, v)
    want = _reference(q, k, v, pos, seg, pos, seg) * (seg != 0)[:, :, None, None]
    np.testing.assert_allclose(out, want, atol=1e-5)


@pytest.mark.parametrize("window", [None, 7])
def test_cudnn_wrapper_rotates_left_padding(window):
    """``cudnn_attention``'s row rotation and lengths, run through JAX's XLA implementation of
    the same ``dot_product_attention`` call (the cuDNN kernel itself needs a GPU)."""
    seg, pos = _rows([[(0, 9), (1, 31)], [(1, 40)], [(0, 39), (1, 1)]], 40)
    assert kernels.single_sequence(seg, pos)
    q, k, v = _qkv(3, 40, 40, 4, 2, 16)
    ref = lambda q, k, v: _reference(q, k, v, pos, seg, pos, seg, window)

    def fn(q, k, v):
        return kernels.cudnn_attention(q, k, v, seg, sliding_window=window, implementation="xla")

    _assert_same(fn, ref, q, k, v, seg)


def test_single_sequence_rejects_packed_rows_and_empty_rows():
    assert not kernels.single_sequence(*_rows([[(1, 4), (2, 4)]], 8))
    assert not kernels.single_sequence(*_rows([[(1, 8)], [(0, 8)]], 8))


def test_fused_attention_falls_back_to_blockwise_on_unordered_data():
    """A kernel masking by slot index would be wrong here (a segment id used twice, positions
    not advancing by one): the run-time check sends the call down the blockwise path."""
    seg = jnp.asarray([[1] * 10 + [2] * 10 + [1] * 10, [1] * 30], jnp.int32)
    pos = jnp.asarray([list(range(10)) * 3, list(range(0, 60, 2))], jnp.int32)
    q, k, v = _qkv(2, 30, 30, 4, 2, 8)
    config = CONFIG.replace(attention_block=8)
    out = jax.jit(lambda q, k, v: kernels.fused_attention("splash", q, k, v, pos, seg, config))(
        q, k, v
    )
    np.testing.assert_allclose(out, _reference(q, k, v, pos, seg, pos, seg), atol=1e-5)


def test_blockwise_in_bfloat16_stays_close_to_the_reference():
    seg, pos = _rows(LAYOUTS[:4], 37)
    q, k, v = _qkv(4, 37, 37, 4, 2, 16, dtype=jnp.bfloat16)
    out = attn.blockwise_attention(q, k, v, pos, seg, pos, seg, q_offset=0, block=8)
    want = _reference(q, k, v, pos, seg, pos, seg)
    assert out.dtype == jnp.bfloat16
    valid = (seg != 0)[:, :, None, None]
    np.testing.assert_allclose(
        np.asarray(out * valid, np.float32), np.asarray(want * valid, np.float32), atol=3e-2
    )


CONFIG = ModelConfig(
    vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8
)


@pytest.mark.parametrize(
    ("impl", "t", "s", "self_attention", "backend", "dtype", "want"),
    [
        ("auto", 64, 64, True, "cpu", "float32", "xla"),  # short: the reference's numbers
        ("auto", 1, 32768, False, "gpu", "bfloat16", "xla"),  # a decode step
        ("auto", 4096, 4096, True, "cpu", "float32", "blockwise"),
        ("auto", 4096, 4096, True, "tpu", "bfloat16", "splash"),
        ("auto", 4096, 8192, False, "tpu", "bfloat16", "blockwise"),  # prefill into a cache
        ("auto", 4096, 4096, True, "gpu", "bfloat16", "cudnn"),
        ("auto", 4096, 4096, True, "gpu", "float32", "blockwise"),
        ("splash", 4096, 8192, False, "tpu", "bfloat16", "blockwise"),
        ("xla", 4096, 4096, True, "tpu", "bfloat16", "xla"),
    ],
)
def test_choose_impl(impl, t, s, self_attention, backend, dtype, want):
    config = CONFIG.replace(head_dim=128, compute_dtype=dtype)
    got = kernels.choose_impl(
        impl, t=t, s=s, self_attention=self_attention, config=config, backend=backend
    )
    assert got == want


def test_cudnn_off_gpu_and_unknown_impls_are_rejected():
    with pytest.raises(ValueError, match="needs a GPU"):
        kernels.choose_impl("cudnn", t=8, s=8, self_attention=True, config=CONFIG, backend="cpu")
    with pytest.raises(ValueError, match="attention_impl='flash'"):
        CONFIG.replace(attention_impl="flash")
    with pytest.raises(ValueError, match="attention_block=0"):
        CONFIG.replace(attention_block=0)


def _model_logits(config, params, tokens, mask):
    """Prefill of left-padded prompts into a cache plus 2 decode steps, and the full forward of
    the same tokens with a packed row: logits of the real tokens only."""
    positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    full, _ = forward(params, tokens, config, positions=positions, segment_ids=mask)
    cache = init_cache(config, tokens.shape[0], tokens.shape[1] + 2)
    prefill, cache = forward(
        params, tokens, config, positions=positions, segment_ids=mask, cache=cache
    )
    steps = []
    for i in range(2):
        nxt = jnp.full((tokens.shape[0], 1), 3 + i, jnp.int32)
        pos = positions[:, -1:] + 1 + i
        seg = jnp.ones_like(nxt)
        out, cache = forward(params, nxt, config, positions=pos, segment_ids=seg, cache=cache)
        steps.append(out)
    valid = (mask != 0)[:, :, None]
    return full * valid, prefill * valid, *steps


@pytest.mark.slow  # a whole model, twice (default run stays under 10 minutes)
@pytest.mark.parametrize("impl", ["blockwise", "splash"])
def test_model_with_memory_linear_attention_equals_xla(impl):
    """The whole decoder (2 layers, GQA 4/2) with blocks of 8 (splash: 128, interpret mode on
    CPU): the same logits as the reference path, and the same parameter gradient."""
    config = CONFIG.replace(attention_impl=impl, attention_block=8)
    params = init_params(CONFIG, jax.random.key(0))
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1, 64, size=(3, 21)), jnp.int32)
    mask = jnp.asarray(_rows([[(0, 5), (1, 16)], [(1, 21)], [(1, 9), (2, 12)]], 21)[0])
    got = _model_logits(config, params, tokens, mask)
    want = _model_logits(CONFIG.replace(attention_impl="xla"), params, tokens, mask)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-5)

    def loss(p, config):
        positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
        logits, _ = _forward(p, tokens, config, positions=positions, segment_ids=mask)
        return jnp.sum(jnp.where(mask[:, :, None] != 0, logits, 0) ** 2)

    grad = jax.jit(jax.grad(loss), static_argnums=1)
    got, want = grad(params, config.replace(remat_policy="full")), grad(params, CONFIG)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, atol=1e-5, rtol=1e-4), got, want)
