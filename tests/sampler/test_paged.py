"""The paged KV cache (``Sampler(slots=C, page_size=Z, pages=N)``): the same rows as the
contiguous continuous sampler, bit for bit, with pages to spare, with too few (slots wait, the
youngest rewinds), sharded or not; memory follows the tokens held; bad settings are errors."""

import functools

import jax
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG, full_logits, layout

from r1jax.model import param_shardings
from r1jax.sampling import Categorical, Greedy, Sampler, paged_shards
from r1jax.sampling.paged_shards import shard_axes
from r1jax.sharding import MeshConfig, make_mesh, named_sharding

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]  # bucket 8: 2 pages of 4
METHODS = {"sampled": Categorical(temperature=0.9, top_k=20), "greedy": Greedy()}
METHOD = dict(method=Categorical(temperature=0.9, top_k=20))
WHOLE = dict(decode_windows=1)  # bit for bit across schedules (waiting slots): the whole cache
KW = dict(num_samples=3, max_new_tokens=12, stop_token_ids=(7, 11, 51))  # 4 pages a request


def _sample(sampler, params, method="sampled", rng=13):
    return sampler(params, PROMPTS, rng=jax.random.key(rng), method=METHODS[method], **KW)


def _same_rows(out, ref):
    for field in ("tokens", "lengths", "finish_reason", "prompt_tokens", "logprobs"):
        np.testing.assert_array_equal(getattr(out, field), getattr(ref, field), err_msg=field)


@pytest.fixture(scope="module")
def contiguous(params):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, **WHOLE)
    return {m: _sample(sampler, params, m) for m in METHODS}


SLOW = pytest.mark.slow
CASES = [(0, "sampled"), (6, "greedy"), (4, "sampled")]
CASES += [pytest.param(p, m, marks=SLOW) for p, m in [(0, "greedy"), (6, "sampled"), (4, "greedy")]]


@pytest.mark.parametrize("pages, method", CASES)
def test_paged_rows_equal_the_contiguous_cache(params, contiguous, method, pages):
    """0: every slot's reach (16 generation pages: a request writes 11 tokens from its prompt's
    length, in a copy of the prompt's last page and 3 more); 6: slots wait for pages; 4: one
    request's worth, the youngest slots rewind again and again. Every row is the same."""
    out = _sample(
        Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=pages, **WHOLE),
        params,
        method,
    )
    ref = contiguous[method]
    assert 0 < (ref.finish_reason == "stop").sum() < len(ref.tokens)
    _same_rows(out, ref)
    store = 1 + len(PROMPTS) * 2 + (pages or 16)  # null page, prompt pages, generation pages
    assert out.paging["store_pages"] == store and out.paging["peak_pages"] <= (pages or 16)
    if pages == 4:
        assert out.paging["rewound_tokens"] > 0 and out.paging["peak_pages"] == 4


def test_paged_logprobs_equal_a_full_forward(params):
    out = _sample(Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=4), params)
    tokens, mask, start = layout(PROMPTS, out.completions(), num_samples=3, new_width=12)
    logp = jax.nn.log_softmax(np.asarray(full_logits(params, tokens, mask), np.float64) / 0.9)
    for row, n in enumerate(out.lengths):
        want = [logp[row, start + c - 1, out.tokens[row, c]] for c in range(n)]
        np.testing.assert_allclose(out.logprobs[row, :n], want, atol=2e-5)


def test_memory_follows_the_tokens_held(params):
    """Short rows (budgets of 1-4 tokens, 1 page each) in 8 slots with 8 pages: every row
    is served (the contiguous cache would hold 8 slots x 3 pages), and rows equal it."""
    budget = [1, 2, 3, 4] * 3
    kw = dict(rng=jax.random.key(5), method=METHODS["greedy"], row_budget=budget, **KW)
    paged = Sampler(CONFIG, buckets=BUCKETS, slots=8, page_size=4, pages=8)(params, PROMPTS, **kw)
    ref = Sampler(CONFIG, buckets=BUCKETS, slots=8)(params, PROMPTS, **kw)
    _same_rows(paged, ref)
    assert paged.paging["peak_pages"] <= 8 and paged.paging["rewound_tokens"] == 0


def test_the_store_splits_over_the_batch_axes_that_divide_it():
    """``paged_shards.shard_axes``: the batch axes dividing the slots and the requests into
    whole prompts per shard or whole shards per prompt, each shard still holding one
    request's pages (3 here); none on one device."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    shape = dict(prompts=4, samples=3, slots=4, gen_pages=12, request_pages=3)
    axes = lambda **kw: shard_axes(mesh, **(shape | kw))
    assert axes() == ("data", "fsdp")
    assert axes(gen_pages=6) == ("data",)  # 3 pages per shard, not 1
    assert axes(prompts=2) == ("data",)  # 6 requests: not 4 shards of whole prompts
    assert axes(prompts=1, samples=16) == ("data", "fsdp")  # 4 shards of one prompt, 4 rows
    assert axes(slots=6) == ("data",)
    assert axes(prompts=3) == ()
    assert shard_axes(None, **shape) == ()
    assert shard_axes(make_mesh(MeshConfig(data=1, fsdp=4, tensor=2)), **shape) == ("fsdp",)
    wide = make_mesh(MeshConfig(data=2, fsdp=4))  # 4 shards fit: fsdp's 4, not data's 2
    assert shard_axes(wide, **(shape | dict(prompts=8, slots=4, gen_pages=24))) == ("fsdp",)
    with pytest.warns(UserWarning, match="split over 2 of the mesh's 4 batch shards"):
        paged_shards._say_if_held_twice(mesh, ("data",), shape, 3)


def test_shards_that_share_a_prompt_prefill_that_prompt():
    """More shards than prompts: each shard's prompt is the one its block of requests samples
    (2 prompts x 4 samples on 4 shards: prompts 0, 0, 1, 1), its budgets their block's."""
    prompt_QP = np.asarray([[1, 2], [3, 4]], np.int32)
    budget_R = np.arange(8, dtype=np.int32)
    (prompts, masks, budgets, first_D), samples = paged_shards.blocks(
        prompt_QP, prompt_QP > 0, budget_R, 4, 4
    )
    np.testing.assert_array_equal(prompts[:, 0], prompt_QP[[0, 0, 1, 1]])
    assert prompts.shape == masks.shape == (4, 1, 2) and samples == 2
    np.testing.assert_array_equal(budgets, budget_R.reshape(4, 2))
    np.testing.assert_array_equal(first_D, [0, 2, 4, 6])


@SLOW
@pytest.mark.parametrize(
    "num_prompts, samples, pages", [(8, 3, 0), (8, 3, 16), (1, 8, 16), (2, 4, 0)]
)
def test_one_store_per_batch_shard_gives_the_one_store_rows(params, num_prompts, samples, pages):
    """data=2, fsdp=2, tensor=2: four stores, each on its pair of tensor devices (KV heads
    split), each shard's slots serving its block of requests: 8 prompts x 3 samples (2 prompts
    per shard), 1 prompt x 8 samples (each shard prefills it for its 2 samples) or 2 prompts x
    4 samples (two shards per prompt, each prefilling its own). Rows equal
    one store on one device (16 pages: 4 per shard, one request's worth, so slots wait and
    rewind), and no device holds another shard's pages."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    kw = dict(buckets=BUCKETS, slots=8, page_size=4, pages=pages)
    prompts = (PROMPTS * 2)[:num_prompts]
    run = dict(num_samples=samples, max_new_tokens=12, **METHOD)
    stops = dict(stop_token_ids=KW["stop_token_ids"])
    sample = lambda sampler, p: sampler(p, prompts, rng=jax.random.key(3), **run, **stops)
    ref = sample(Sampler(CONFIG, **kw), params)
    sharded = jax.device_put(params, param_shardings(CONFIG, mesh))
    out = sample(Sampler(CONFIG, mesh=mesh, **kw), sharded)
    for field in ("tokens", "lengths", "finish_reason"):
        np.testing.assert_array_equal(getattr(out, field), getattr(ref, field), err_msg=field)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)
    gen, shard_prompts = pages or 8 * 4, max(len(prompts) // 4, 1)
    store = 1 + shard_prompts * 2 + gen // 4  # null page, 2 pages per prompt, generation
    assert out.paging["store_pages"] == 4 * store
    assert out.paging["peak_pages"] <= gen and (out.paging["rewound_tokens"] > 0) == (pages > 0)

    tokens = np.ones((len(prompts), 8), np.int32)
    tokens = jax.device_put(tokens, named_sharding(mesh, ("batch", None), tokens.shape))
    fn = functools.partial(
        paged_shards.sample, mesh=mesh, config=CONFIG, num_slots=8, page_size=4, gen_pages=gen,
        pad_id=0, **run,
    )  # fmt: skip
    with jax.set_mesh(mesh):
        state = jax.jit(fn)(sharded, tokens, tokens, jax.random.key(0), np.full((1, 4), 7))
    pages_k = state.cache.pages.k  # [D, K, L, N / D, Z, H]
    assert pages_k.shape[:4] == (4, CONFIG.num_kv_heads, CONFIG.num_layers, store)
    assert {s.data.shape[:4] for s in pages_k.addressable_shards} == {(1, 1, 2, store)}
    assert state.tokens_RT.sharding.spec[0] == ("data", "fsdp")


@pytest.mark.slow  # ~5 s: the default suite stays under 10 minutes; CI runs it with -m slow
def test_sharded_paged_equals_unsharded(params, contiguous):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, param_shardings(CONFIG, mesh))
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=8, mesh=mesh)
    out = _sample(sampler, sharded)
    np.testing.assert_array_equal(out.tokens, contiguous["sampled"].tokens)
    np.testing.assert_allclose(out.logprobs, contiguous["sampled"].logprobs, atol=1e-5)


def test_one_compile_and_bad_settings(params):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=4)
    for rng in (1, 2, 3):
        _sample(sampler, params, rng=rng)
    assert sampler.compile_counts() == (1, 1)
    with pytest.raises(ValueError, match="needs slots > 0"):
        Sampler(CONFIG, page_size=4)
    with pytest.raises(ValueError, match="min_slots=0"):
        Sampler(CONFIG, slots=4, min_slots=2, page_size=4)
    with pytest.raises(ValueError, match="pages=2 cannot hold one request"):
        _sample(Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=2), params)
    with pytest.raises(ValueError, match="page_size=3 must divide the prompt bucket 8"):
        _sample(Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=3), params)


@SLOW
def test_unrolled_layers_give_the_same_rows(params, contiguous):
    """``model.scan_unroll``: the layer loop unrolled (paged decode, prefill) changes no row."""
    unrolled = CONFIG.replace(scan_unroll=CONFIG.num_layers)
    sampler = Sampler(unrolled, buckets=BUCKETS, slots=4, page_size=4, pages=6, **WHOLE)
    out = _sample(sampler, params)
    _same_rows(out, contiguous["sampled"])
