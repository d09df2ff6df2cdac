"""Partial rollouts in D shards (``RolloutPool(shards=D)``): with unchanged params every batch
is one pool's (whole prompts per shard, or shards sharing a prompt; pages to spare or one
request's worth per shard); under changing params the same D gives the same rows, log-probs
and policy versions on one device and on the 8-device mesh, each device holding only its
shards' pages; settings that cannot split are errors, and pools held twice say so."""

import dataclasses

import jax
import numpy as np
import pytest
import test_rollout_pool as one_pool
from sampler_common import BUCKETS, CONFIG

from r1jax.config.model import MoEConfig
from r1jax.model import param_shardings
from r1jax.sampling import Sampler
from r1jax.sampling import pool as pool_lib
from r1jax.sampling import windows as windows_lib
from r1jax.sampling.rollout_pool import RolloutPool
from r1jax.sharding import MeshConfig, make_mesh

G = 4  # 2 prompts x 4 samples per batch: 4 shards share each prompt two by two


def _pool(sampler, shards, max_steps=3, lanes=4):
    return RolloutPool(
        sampler,
        batch_prompts=2,
        lanes=lanes,
        num_samples=G,
        max_new_tokens=one_pool.T,
        prompt_length=one_pool.WIDTH,
        method=one_pool.METHOD,
        key=jax.random.key(13),
        stop_token_ids=one_pool.STOPS,
        max_steps=max_steps,
        shards=shards,
    )


def _paged(pages, mesh=None, **kw):
    return Sampler(CONFIG, buckets=BUCKETS, slots=4, page_size=2, pages=pages, mesh=mesh, **kw)


WHOLE = dict(decode_windows=1)  # bit for bit across schedules: the whole cache every step


@pytest.fixture(scope="module")
def one_pools_batches(params):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, **WHOLE)
    return one_pool._run(_pool(sampler, 1), lambda i: params)


@pytest.mark.parametrize(
    "shards, pages",
    [
        (2, 10),
        pytest.param(4, 0, marks=pytest.mark.slow),
        pytest.param(2, 0, marks=pytest.mark.slow),
    ],
)
def test_shards_return_one_pools_batches(params, one_pools_batches, shards, pages):
    """2 shards (a prompt each) or 4 (two per prompt), with every slot's reach in pages, or
    one request's worth for a shard's 2 slots (5 pages: they wait and rewind): with the same
    params every batch equals the one contiguous pool's, rows cut every 3 steps."""
    pool = _pool(_paged(pages, **WHOLE), shards)
    got = one_pool._run(pool, lambda i: params)
    for a, b in zip(got, one_pools_batches, strict=True):
        one_pool._same_rows(a.sample, b.sample)
    store = pool.pool.slots.cache
    # The shards' decode windows are one pool's (Z read from the stores' last dims, not [D])
    whole = windows_lib.window_ends(one_pool.WIDTH, one_pool.T, 4, 2)
    assert pool_lib.window_ends(pool.pool, 4) == whole and whole[-1] == one_pool.WIDTH + 10
    gen = (pages or 20) // shards  # 4 slots x 5 pages of 2 tokens reach 10 new tokens
    # the null page, 2 lanes x 4 pages (a prompt of 8), the generation pages
    assert store.pages.k.shape[:4] == (
        shards,
        CONFIG.num_kv_heads,
        CONFIG.num_layers,
        1 + 2 * 4 + gen,
    )
    assert (int(store.rewinds.sum()) > 0) == (pages > 0) and max(h.calls for h in got) > 1


@pytest.mark.slow  # ~8 s: the default suite stays under 10 minutes; CI runs -m slow
def test_windowed_shards_return_the_whole_caches_batches(params, one_pools_batches):
    """2 paged shards with one request's pages each (their 2 slots wait and rewind) attending
    over the decode windows (``Sampler``'s default 4; one window for every shard, the largest
    need): the batches of reading the whole cache, log-probs to rounding."""
    pool = _pool(_paged(10), 2)
    got = one_pool._run(pool, lambda i: params)
    for a, b in zip(got, one_pools_batches, strict=True):
        for field in ("tokens", "lengths", "finish_reason", "prompt_tokens"):
            np.testing.assert_array_equal(getattr(a.sample, field), getattr(b.sample, field))
        np.testing.assert_allclose(a.sample.logprobs, b.sample.logprobs, atol=1e-5)
    assert int(pool.pool.slots.cache.rewinds.sum()) > 0


@pytest.mark.slow  # ~6 s: the default suite stays under 10 minutes; CI runs -m slow
def test_three_batches_in_flight_with_request_budgets(params):
    """6 lanes (3 batches in flight; 6 batches wrap each shard's ring twice) and per-request
    new-token limits: 2 paged shards return the one contiguous pool's batches, rows ending
    at their limits."""
    batches = one_pool.BATCHES + one_pool.BATCHES[:2]
    budgets = np.random.default_rng(0).integers(1, one_pool.T + 1, (len(batches), 2 * G))

    def run(pool):
        pending, out = list(range(len(batches))), []
        while pending or pool.batches:
            while pending and pool.wants_prompts:
                i = pending.pop(0)
                pool.admit(params, batches[i], payload=i, budget=budgets[i])
            out.append(pool.next_batch(params))
        return out

    want = run(_pool(Sampler(CONFIG, buckets=BUCKETS, slots=4, **WHOLE), 1, lanes=6))
    got = run(_pool(_paged(10, **WHOLE), 2, lanes=6))
    for a, b in zip(got, want, strict=True):
        assert a.payload == b.payload
        one_pool._same_rows(a.sample, b.sample)
        assert np.all(a.sample.lengths <= budgets[a.payload])
    assert any(np.any(h.sample.finish_reason == "length") for h in got)


@pytest.mark.slow  # ~9 s: the default suite stays under 10 minutes; CI runs -m slow
def test_the_same_shards_on_a_mesh_give_the_same_rows_and_versions(params):
    """Params change after every batch: 4 shards on data=2 x fsdp=2 x tensor=2 (one per batch
    shard, KV heads over tensor) return the rows, log-probs and versions of 4 shards on one
    device, rows carried across the changes; each device holds only its shard's pages."""
    other = jax.tree.map(lambda a: a * 1.05, params)
    policies = [params, other, params, other]
    want = one_pool._run(_pool(_paged(20), 4), lambda i: policies[i])
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded = [jax.device_put(p, param_shardings(CONFIG, mesh)) for p in policies]
    pool = _pool(_paged(20, mesh), 4)
    got = one_pool._run(pool, lambda i: sharded[i])
    mixed = 0
    for a, b in zip(got, want, strict=True):
        for field in ("tokens", "lengths", "finish_reason"):
            np.testing.assert_array_equal(getattr(a.sample, field), getattr(b.sample, field))
        np.testing.assert_array_equal(a.versions_BT, b.versions_BT)
        np.testing.assert_allclose(a.sample.logprobs, b.sample.logprobs, atol=1e-5)
        mixed += sum(len(set(v[v >= 0])) > 1 for v in a.versions_BT)
    assert mixed > 0  # rows sampled by two policies
    k = pool.pool.slots.cache.pages.k  # [D, K, L, N / D, Z, H]
    assert k.sharding.spec[0] == ("data", "fsdp")
    assert {s.data.shape[:4] for s in k.addressable_shards} == {(1, 1, 2, k.shape[3])}
    assert pool.pool.slots.tokens_RT.sharding.spec[0] == ("data", "fsdp")


def test_pools_held_by_several_devices_say_so():
    """2 shards on 4 batch shards: each pool held (and decoded) twice; one pool: four times."""
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    with pytest.warns(UserWarning, match="keep 2 pool shards, each held whole .* on 2 of the"):
        _pool(_paged(20, mesh), 2)
    with pytest.warns(UserWarning, match="keep one page store, each held whole .* on 4 of the"):
        _pool(_paged(20, mesh), 1)


def test_shards_that_cannot_split_are_errors():
    with pytest.raises(ValueError, match="shards=3: the shard count must divide"):
        _pool(_paged(0), 3)
    with pytest.raises(ValueError, match="a request's 5 of the 10 generation pages"):
        _pool(_paged(10), 4)


def test_shards_of_an_expert_parallel_mixture_of_experts_are_an_error():
    """Its all-to-all's ``shard_map`` does not batch under the shards' vmap (one pool runs)."""
    moe = MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=16, capacity_factor=4.0)
    config = dataclasses.replace(CONFIG, moe=moe)
    mesh = make_mesh(MeshConfig(data=2, expert=2, tensor=2))
    sampler = Sampler(config, buckets=BUCKETS, slots=4, page_size=2, mesh=mesh)
    with pytest.raises(ValueError, match=r"shards\) \(config.grpo.partial_shards\)=2: .* expert"):
        _pool(sampler, 2)
