"""The paged KV cache (``Sampler(slots=C, page_size=Z, pages=N)``): the same rows as the
contiguous continuous sampler, bit for bit, with pages to spare, with too few (slots wait, the
youngest rewinds), sharded or not; memory follows the tokens held; bad settings are errors."""

import jax
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG, full_logits, layout

from r1jax.model import param_shardings
from r1jax.sampling import Categorical, Greedy, Sampler
from r1jax.sharding import MeshConfig, make_mesh

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]  # bucket 8: 2 pages of 4
METHODS = {"sampled": Categorical(temperature=0.9, top_k=20), "greedy": Greedy()}
KW = dict(num_samples=3, max_new_tokens=12, stop_token_ids=(7, 11, 51))  # 3 pages per row


def _sample(sampler, params, method="sampled", rng=13):
    return sampler(params, PROMPTS, rng=jax.random.key(rng), method=METHODS[method], **KW)


def _same_rows(out, ref):
    for field in ("tokens", "lengths", "finish_reason", "prompt_tokens", "logprobs"):
        np.testing.assert_array_equal(getattr(out, field), getattr(ref, field), err_msg=field)


@pytest.fixture(scope="module")
def contiguous(params):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    return {m: _sample(sampler, params, m) for m in METHODS}


SLOW = pytest.mark.slow
CASES = [(0, "sampled"), (6, "greedy"), (3, "sampled")]
CASES += [pytest.param(p, m, marks=SLOW) for p, m in [(0, "greedy"), (6, "sampled"), (3, "greedy")]]


@pytest.mark.parametrize("pages, method", CASES)
def test_paged_rows_equal_the_contiguous_cache(params, contiguous, method, pages):
    """0: every slot's reach (12 generation pages); 6: half, slots wait for pages; 3: one
    request's worth, the youngest slots rewind again and again. Every row is the same."""
    out = _sample(
        Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=pages), params, method
    )
    ref = contiguous[method]
    assert 0 < (ref.finish_reason == "stop").sum() < len(ref.tokens)
    _same_rows(out, ref)
    store = 1 + len(PROMPTS) * 2 + (pages or 12)  # null page, prompt pages, generation pages
    assert out.paging["store_pages"] == store and out.paging["peak_pages"] <= (pages or 12)
    if pages == 3:
        assert out.paging["rewound_tokens"] > 0 and out.paging["peak_pages"] == 3


def test_paged_logprobs_equal_a_full_forward(params):
    out = _sample(Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=3), params)
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


@pytest.mark.slow  # ~5 s: the default suite stays under 10 minutes; CI runs it with -m slow
def test_sharded_paged_equals_unsharded(params, contiguous):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, param_shardings(CONFIG, mesh))
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=4, pages=6, mesh=mesh)
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
    out = _sample(Sampler(unrolled, buckets=BUCKETS, slots=4, page_size=4, pages=6), params)
    _same_rows(out, contiguous["sampled"])
