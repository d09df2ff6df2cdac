"""Partial rollouts (``RolloutPool``): a batch equals the continuous sampler's call on its
prompts; rows cut by the step budget resume bit-identically while params are unchanged; after a
params change they continue from their cache and each token's log-prob is the policy's that
sampled it; sharded equals unsharded; every call reuses one compiled program."""

import collections

import jax
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG, full_logits, layout

from r1jax.model import param_shardings
from r1jax.sampling import Categorical, Sampler
from r1jax.sampling.rollout_pool import RolloutPool
from r1jax.sharding import MeshConfig, make_mesh

BATCHES = [
    [[3, 1, 4, 1, 5], [9, 2, 6]],
    [[5, 3, 5, 8, 9, 7], [9]],
    [[2, 7, 1, 8], [2, 8, 1, 8, 2, 8]],
    [[4, 4], [6, 2, 6, 4, 3]],
]
METHOD = Categorical(temperature=0.9, top_k=20)
G, T, WIDTH = 3, 10, 8  # WIDTH: the sampler's bucket for these prompts
STOPS = (7, 11, 51)
MESH = MeshConfig(data=2, fsdp=2, tensor=2)


def _pool(sampler, *, max_steps=0, lanes=4, key=13):
    return RolloutPool(
        sampler,
        batch_prompts=2,
        lanes=lanes,
        num_samples=G,
        max_new_tokens=T,
        prompt_length=WIDTH,
        method=METHOD,
        key=jax.random.key(key),
        stop_token_ids=STOPS,
        max_steps=max_steps,
    )


def _run(pool, params_for, batches=BATCHES, admitted=None):
    """Admits while the pool wants prompts, takes a batch after each admission round: the
    ``Harvest`` of every batch, in order. ``params_for(i)``: params for the i-th batch;
    ``admitted[b]`` records which i batch b's prompts were prefilled under."""
    pending, harvests = list(batches), []
    while pending or pool.batches:
        while pending and pool.wants_prompts:
            index = len(batches) - len(pending)
            pool.admit(params_for(len(harvests)), pending.pop(0), payload=index)
            if admitted is not None:
                admitted[index] = len(harvests)
        harvests.append(pool.next_batch(params_for(len(harvests)), version=len(harvests)))
    return harvests


def _same_rows(a, b):
    for field in ("tokens", "lengths", "finish_reason", "prompt_tokens", "logprobs"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_first_batch_equals_a_continuous_call(params):
    """Request ids 0 ... QG-1 and the call's key: the first batch is the continuous sampler's
    call on its prompts (other lanes decoding alongside change nothing)."""
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    first = _run(_pool(sampler), lambda i: params)[0]
    ref = sampler(
        params,
        BATCHES[0],
        rng=jax.random.key(13),
        method=METHOD,
        num_samples=G,
        max_new_tokens=T,
        stop_token_ids=STOPS,
    )
    assert first.payload == 0 and 0 < (ref.finish_reason == "stop").sum() < len(ref.tokens)
    _same_rows(first.sample, ref)
    assert np.all(first.versions_BT[first.sample.mask == 1] == 0)


@pytest.mark.parametrize("max_steps", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_cut_rows_resume_bit_identically(params, max_steps):
    """A step budget cuts rows mid-sequence (several calls per batch); with the same params
    every batch equals the uncut run's, with the same compiled programs throughout."""
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    whole = _run(_pool(sampler), lambda i: params)
    cut_pool = _pool(sampler, max_steps=max_steps)
    cut = _run(cut_pool, lambda i: params)
    assert [h.payload for h in cut] == [0, 1, 2, 3]
    assert max(h.calls for h in cut) > 1 and max(h.calls for h in whole) == 1
    for a, b in zip(cut, whole, strict=True):
        _same_rows(a.sample, b.sample)
    assert cut_pool._advance._cache_size() == 1 and cut_pool._admit._cache_size() == 1


def test_rows_continue_under_new_params_with_behaviour_logprobs(params):
    """Params change after every batch: rows in flight continue from their cache; each token's
    log-prob is the one its sampling policy gave (a recompute with those params, the prompt and
    the tokens before it computed under the policies that wrote their cache), and
    ``versions_BT`` says which policy that was."""
    other = jax.tree.map(lambda a: a * 1.05, params)
    policies = [params, other, params, other]
    admitted = {}
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    harvests = _run(_pool(sampler), lambda i: policies[i], admitted=admitted)
    mixed, checked = 0, 0
    for h in harvests:
        s, versions = h.sample, h.versions_BT
        prompts = [list(BATCHES[h.payload][i // G]) for i in range(len(s.tokens))]
        completions = s.completions()
        mixed += sum(len(set(v[v >= 0])) > 1 for v in versions)
        for version in np.unique(versions[versions >= 0]):
            tokens, mask, start = layout(prompts, completions, new_width=T)
            logits = full_logits(policies[version], tokens, mask)
            logp = jax.nn.log_softmax(np.asarray(logits, np.float64) / 0.9, axis=-1)
            for row, cols in enumerate(versions == version):
                if admitted[h.payload] != version:
                    continue  # the prompt's cache came from another policy
                for c in np.flatnonzero(cols):
                    if np.all(versions[row, :c] == version):  # the earlier tokens' cache too
                        want = logp[row, start + c - 1, s.tokens[row, c]]
                        np.testing.assert_allclose(s.logprobs[row, c], want, atol=2e-4)
                        checked += version > 0
    assert mixed > 0 and checked > 0  # rows sampled by two policies; the second one checked


@pytest.mark.parametrize("pages", [pytest.param(0, marks=pytest.mark.slow), 6])
def test_a_paged_pool_returns_the_same_batches(params, pages):
    """The slots' cache in pages of 2 tokens (``Sampler(page_size=2)``): the lanes' prompts in
    prompt pages, rows cut every 3 steps; with every slot's reach (20 pages) or 6 pages
    (slots wait and rewind), every batch equals the contiguous pool's."""
    whole = dict(decode_windows=1)  # bit for bit across schedules (waiting slots)
    want = _run(
        _pool(Sampler(CONFIG, buckets=BUCKETS, slots=4, **whole), max_steps=3), lambda i: params
    )
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=2, pages=pages, **whole)
    pool = _pool(sampler, max_steps=3)
    got = _run(pool, lambda i: params)
    for a, b in zip(got, want, strict=True):
        _same_rows(a.sample, b.sample)
    store = pool.pool.slots.cache
    assert store.pages.k.shape[2] == 1 + 4 * 4 + (pages or 4 * 5)  # null, lanes', generation
    assert (int(store.rewinds) > 0) == (pages == 6) and int(store.peak_pages) <= (pages or 20)


def test_rewound_rows_carry_the_version_that_sampled_them_again(params):
    """6 pages (slots rewind: a row set back to its first token samples the rest again), params
    changing after every batch: every token a call (re)sampled carries that call's version,
    and the useful tokens counted are the tokens the batches keep (the dropped ones are not)."""
    policies = [params, jax.tree.map(lambda a: a * 1.3, params)] * 2
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=2, pages=6, decode_windows=1)
    pool = _pool(sampler, max_steps=3)
    record, calls = pool._record_versions, collections.Counter()
    logprobs = lambda: np.array(pool.pool.slots.logprobs_RT)

    def checked_record(version):
        before = pool.before if pool.before.shape else logprobs()
        record(version)
        after, now = logprobs(), np.asarray(pool.pool.slots.lengths_R)[:, None]
        columns = np.arange(T)[None]
        sampled = (after != before) & (columns >= 1) & (columns < now)  # 0: the prefill's
        np.testing.assert_array_equal(pool.versions_RT[sampled], version)
        calls["tokens"] += int(sampled.sum())
        pool.before = after

    pool._record_versions, pool.before = checked_record, np.zeros(())
    admit = pool.admit
    pool.admit = lambda *a, **k: (admit(*a, **k), setattr(pool, "before", logprobs()))
    harvests = _run(pool, lambda i: policies[i])
    assert int(pool.pool.slots.cache.rewinds) > 0 and calls["tokens"] > 0
    kept = sum(int(h.sample.lengths.sum()) for h in harvests)
    assert sum(h.sample.work()["useful_tokens"] for h in harvests) == kept


@pytest.mark.slow  # ~8 s: the default suite stays under 10 minutes; CI runs it with -m slow
def test_sharded_pool_equals_unsharded(params):
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = jax.device_put(params, param_shardings(CONFIG, mesh))
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, mesh=mesh)
    got = _run(_pool(sampler, max_steps=3), lambda i: sharded)
    want = _run(_pool(Sampler(CONFIG, buckets=BUCKETS, slots=4), max_steps=3), lambda i: params)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.sample.tokens, b.sample.tokens)
        np.testing.assert_allclose(a.sample.logprobs, b.sample.logprobs, atol=1e-5)


def test_bad_pools_and_prompts_are_errors(params):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    with pytest.raises(ValueError, match="lanes=3"):
        _pool(sampler, lanes=3)
    with pytest.raises(ValueError, match="continuous batching"):
        _pool(Sampler(CONFIG, buckets=BUCKETS))
    pool = _pool(sampler)
    with pytest.raises(ValueError, match="prompt 1 has 9 tokens"):
        pool.admit(params, [[1], list(range(1, 10))])
    with pytest.raises(RuntimeError, match="admit prompts first"):
        pool.next_batch(params)


def test_request_budgets_end_rows_at_their_limit(params):
    """Per-request limits at admission (as ``Sampler(row_budget=...)``): a row ends at its
    limit ("length") unless a stop token came first."""
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    budgets = np.asarray([[1, 2, 3, 10, 4, 5], [6, 7, 8, 9, 10, 1]])
    pool = _pool(sampler)
    for prompts, budget in zip(BATCHES[:2], budgets, strict=True):
        pool.admit(params, prompts, budget=budget)
    hit = 0
    for budget in budgets:
        got = pool.next_batch(params).sample
        by_length = got.finish_reason == "length"
        np.testing.assert_array_equal(got.lengths[by_length], budget[by_length])
        assert np.all(got.lengths <= budget)
        hit += np.sum(by_length & (budget < T))
    assert hit > 0
    with pytest.raises(ValueError, match="budget: 6 values >= 1"):
        pool.admit(params, BATCHES[0], budget=[0] * 6)
