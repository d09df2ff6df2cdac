"""Partial rollouts in D shards (``RolloutPool(shards=D)``, ``config.grpo.partial_shards``).

Shape letters as in ``pool.py``: Q prompts per batch, G samples, L lanes, C slots, R = L * G
rows; D shards, and B = Q * G / D, each shard's requests of a batch.

``pool.py`` keeps one pool: with a paged cache, one page store that any slot may read, which a
mesh holds whole on every device, each device decoding every slot (the 1.5B R1-Zero pool at
32k tokens on v5e-8: 43.7 GiB per chip). Here the pool is D pools. Each batch is cut as
``paged_shards`` cuts a call: shard d admits prompts ``d * Q / D ...`` (or, with D > Q, the one
prompt its B requests sample, prefilled once per shard) into L / D lanes (L / Q), holds R / D
rows, C / D slots and, paged, a store with its lanes' prompt pages and 1 / D of the generation
pages; its slots serve only its own requests. The shards run under ``jax.vmap`` (with
``spmd_axis_name``: the mesh's ``data`` / ``fsdp`` axes whose product divides D), so with D a
multiple of those axes' shards a device holds its shards' pools only (fewer: each pool on
several devices, which decode it alike; ``RolloutPool`` warns).

D is a setting, not the mesh's: under policy updates, which policy writes which token follows
the schedule, and the schedule follows how requests share slots. The same D on one device or
on any mesh runs the same schedule (the same requests in the same slots and calls), so the
rows and versions match as far as the mesh's arithmetic reproduces one device's logits (the
tests' CPU mesh: tokens and versions exactly, log-probs to 1e-5). With unchanged
params the rows are those of one pool: a request keeps the keys of its id in one pool
(``key_ids``: shard d's n-th request is request ``(n // B) * Q * G + d * B + n % B``).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.config.pool_layout import Layout
from r1jax.model import moe
from r1jax.sampling import paged_shards
from r1jax.sampling import pool as pool_lib
from r1jax.sampling.pool import Pool
from r1jax.sampling.windows import windowed_while
from r1jax.sharding import current_rules, named_sharding, use_rules


def check_model(config, mesh: Mesh | None, shards: int, name: str) -> None:
    """Error for D > 1 shards of a mixture of experts run expert-parallel on ``mesh``: its
    all-to-all runs inside a ``shard_map`` that the shards' ``vmap`` cannot batch (the split
    sampler falls back to one store there; a pool's D sets its schedule, so it cannot)."""
    if shards > 1 and paged_shards.experts_all_to_all(config, mesh):
        raise ValueError(
            f"{name}={shards}: partial rollouts in shards cannot run this mixture of experts "
            f"expert-parallel (moe.capacity_factor={config.moe.capacity_factor} > 0 on the "
            f"mesh's expert axis of {mesh.shape['expert']}): set {name}=1 (one pool), or "
            "moe.capacity_factor=0"
        )


def block_axes(mesh: Mesh | None, shards: int) -> tuple[str, ...]:
    """The batch axes (``paged_shards.SPLIT_AXES``) the shards are spread over: their product
    divides D (batch shards left over hold the same pools)."""
    return paged_shards.split_axes_where(mesh, lambda d: shards % d == 0)


def shardings(mesh: Mesh | None, axes, abstract: Pool) -> Pool | None:
    """NamedShardings of a sharded ``Pool`` (shapes ``abstract``): the shard dim over ``axes``;
    within a shard, keys and values with their KV heads over "tensor", the rest whole."""
    if mesh is None:
        return None

    def spec(path, x):
        inner = (None,) * (x.ndim - 1)
        logical = paged_shards.kv_axes(jax.tree_util.keystr(path), x.ndim, 6)
        if logical is not None:
            with use_rules(paged_shards.rules_without(current_rules(), axes)):
                inner = tuple(named_sharding(mesh, logical, x.shape[1:]).spec)
                inner += (None,) * (x.ndim - 1 - len(inner))
        return NamedSharding(mesh, P(axes or None, *inner))

    return jax.tree_util.tree_map_with_path(spec, abstract)


def key_ids(shard, lay: Layout):
    """Shard ``shard``'s request ids -> the ids of the same requests in one pool."""
    b, per_batch = lay.batch_rows, lay.prompts * lay.samples
    return lambda n: n // b * per_batch + shard * b + n % b


def _vmap(fn, mesh, axes, **kw):
    """``fn`` vmapped over the shards, traced with the split axes out of "batch" and MoE
    experts batched over the shards' tokens (``moe.merged_under_vmap``)."""
    vmapped = jax.vmap(fn, spmd_axis_name=axes or None, **kw)

    def run(*args):
        rules = paged_shards.rules_without(current_rules(), axes)
        with use_rules(rules), moe.merged_under_vmap():
            out = vmapped(*args)
        return out

    return run


def _pin(mesh, tree):
    """``paged_shards.pin`` (traced inside ``_vmap``: its rules apply); nothing without a mesh."""
    return tree if mesh is None else paged_shards.pin(mesh, tree)


def empty(key, *, lay: Layout, **options) -> Pool:
    """D empty pools (``pool.empty_pool``; ``options``: its keywords, with ``lanes``,
    ``slots``, ``gen_pages`` and ``num_samples`` replaced by ``lay``'s per shard), every leaf
    with a leading [D]."""
    shard = dict(
        lanes=lay.shard_lanes, slots=lay.shard_slots, num_samples=lay.shard_samples,
        gen_pages=lay.shard_gen_pages,
    )  # fmt: skip
    one = lambda _: pool_lib.empty_pool(key, **(options | shard))
    return jax.vmap(one)(jnp.arange(lay.shards))


def admit(params, pools: Pool, prompt_QP, prompt_mask_QP, budget_N=None, *, lay, mesh, **options):
    """``pool.admit`` of a batch ``[Q, P]``: shard d admits its prompts and its B requests
    (``paged_shards.blocks``; ``budget_N`` cut alike); ``options``: ``pool.admit``'s."""
    axes = block_axes(mesh, lay.shards)
    parts, samples = paged_shards.blocks(
        prompt_QP, prompt_mask_QP, budget_N, lay.shards, options.pop("num_samples")
    )
    prompts, masks, budgets, _ = parts

    def one(pool, prompt_QP, prompt_mask_QP, budget_N):
        pool = pool_lib.admit(
            params, pool, prompt_QP, prompt_mask_QP, budget_N, num_samples=samples, **options
        )
        return _pin(mesh, pool)

    in_axes = (0, 0, 0, None if budgets is None else 0)
    return _vmap(one, mesh, axes, in_axes=in_axes)(pools, prompts, masks, budgets)


def advance(
    params, pools: Pool, stop_table_EW, target_end, max_steps, *, lay, mesh, windows=1, **options
) -> Pool:
    """``pool.advance`` of every shard until each request of one pool's ids below
    ``target_end`` (a batch boundary) is done, or ``max_steps``; ``options``: its keywords.

    The shards begin and step under ``vmap``; the loop around the step is not vmapped (it runs
    while any shard has the target's work), so a shard done early keeps decoding its later
    requests or steps idle, rather than every step selecting between copies of its store; the
    decode window (``windows``) is the one holding every shard's writes."""
    axes = block_axes(mesh, lay.shards)
    key = pools.slots.key[0]  # the call's key unbatched: "rbg" keys draw other bits batched
    options |= dict(num_samples=lay.shard_samples, mesh=None)
    local_end = target_end // lay.shards  # each shard holds B of every batch's Q * G ids

    def keyed(prompts, s, shard):
        pool = Pool(prompts, dataclasses.replace(s, key=key))
        return pool, dict(options, key_ids=key_ids(shard, lay))

    def begin(prompts, s, shard):
        pool, kw = keyed(prompts, s, shard)
        return _pin(mesh, pool_lib.begin(params, pool, stop_table_EW, **kw))

    def step(prompts, s, shard, window):
        pool, kw = keyed(prompts, s, shard)
        return _pin(mesh, pool_lib.step(params, pool, stop_table_EW, window, **kw))

    shard_D = jnp.arange(lay.shards, dtype=jnp.int32)
    s = _vmap(begin, mesh, axes)(pools.prompts, pools.slots, shard_D)
    start = s.iterations[0]  # every shard steps every iteration

    def keep_going(s):
        going = jax.vmap(pool_lib.keep_going, in_axes=(0, None, None, None))
        return jnp.any(going(s, local_end, max_steps, start))

    def step_all(s, window):
        return _vmap(functools.partial(step, window=window), mesh, axes)(pools.prompts, s, shard_D)

    ends = pool_lib.window_ends(pools, windows)
    s = windowed_while(keep_going, step_all, s, ends=ends, needed=pool_lib.needed_columns)
    return Pool(pools.prompts, s)


def harvest(pools: Pool, row0, since, *, lay: Layout):
    """``pool.harvest`` of one batch: each shard's B rows from its ring row ``row0``, merged in
    group order ``[Q * G, ...]``; the counters (decode steps, slot-steps of every shard)."""
    take = functools.partial(pool_lib.harvest, rows=lay.batch_rows)
    fields, (steps_D, slot_steps_D) = jax.vmap(take, in_axes=(0, None, None))(pools, row0, since)
    rows = lambda x: x.reshape(-1, *x.shape[2:])
    return tuple(map(rows, fields)), (steps_D[0], jnp.sum(slot_steps_D))
