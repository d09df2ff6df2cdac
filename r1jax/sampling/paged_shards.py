"""The paged sampler on a mesh: one page store per batch shard.

A single store of pages for all slots lets any slot read any page, so XLA keeps the whole store
on every device and every device decodes every slot (compiled on a data=4, fsdp=2 mesh: the
store, the tables and the loop all replicated). Here the prompts, requests, slots and
generation pages are cut into D blocks along the mesh's batch axes (``data``, ``fsdp``), and
each block runs ``paged.start`` / ``paged.step`` on a store of its own (``jax.vmap`` over the
blocks with ``spmd_axis_name``): shard d holds its Q / D prompts' pages (or, with more shards
than prompts, its one prompt's, prefilled for its R / D samples) and ``gen_pages // D``
generation pages, and decodes slots ``d * C / D ...`` for requests ``d * R / D ...``. A request
keeps its id (its keys), so its tokens are those of the one-store sampler; a shard's slots only
ever serve its own requests (a shard whose requests finish first idles until the last one does).

D is the largest product of batch axes that ``shard_axes`` finds dividing the work; 1
(``paged.sample`` as is) on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import warnings

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.model import moe
from r1jax.sampling import paged
from r1jax.sampling.continuous import SlotState
from r1jax.sampling.windows import windowed_while
from r1jax.sharding import ShardingRules, current_rules, named_sharding, use_rules

SPLIT_AXES = ("data", "fsdp")  # batch axes that split the store ("expert" also shards weights)


def shard_axes(
    mesh: Mesh | None, *, prompts: int, samples: int, slots: int, gen_pages: int, request_pages: int
) -> tuple[str, ...]:
    """The batch mesh axes the store is split over (their product: D shards): each must leave
    D dividing the slots and the requests, a whole number of prompts per shard or a whole
    number of shards per prompt, and every shard at least one request's pages."""

    def fits(d: int) -> bool:
        per_shard, rest = divmod(prompts * samples, d)
        whole = prompts % d == 0 or (not rest and samples % per_shard == 0)
        return whole and slots % d == 0 and gen_pages // d >= request_pages

    return split_axes_where(mesh, fits)


def split_axes_where(mesh: Mesh | None, fits) -> tuple[str, ...]:
    """Of the mesh's SPLIT_AXES batch axes (size > 1, in the rules' order), those whose
    product d is the largest with ``fits(d)`` (the most axes among equal products): on data=2
    x fsdp=4 with 4 shards, ``fsdp`` (each shard on 2 devices), not ``data`` (on 4)."""
    if mesh is None:
        return ()
    axes = [a for a in current_rules().mesh_axes("batch") if a in SPLIT_AXES]
    axes = [a for a in axes if mesh.shape[a] > 1]
    subsets = (c for n in range(len(axes), 0, -1) for c in itertools.combinations(axes, n))
    size = lambda subset: math.prod(mesh.shape[a] for a in subset)
    return max((c for c in subsets if fits(size(c))), key=size, default=())


def splittable_shards(mesh: Mesh | None) -> int:
    """The batch shards of ``mesh`` a page store could be split over (its SPLIT_AXES)."""
    if mesh is None:
        return 1
    return math.prod(mesh.shape[a] for a in current_rules().mesh_axes("batch") if a in SPLIT_AXES)


def _say_if_held_twice(mesh, axes, shape: dict, request_pages: int, why: str = "") -> None:
    """Warns (when the sampler is traced) if batch axes that could split the store do not:
    each store is then held whole by several devices, which also decode the same slots."""
    could = splittable_shards(mesh)
    split = math.prod(mesh.shape[a] for a in axes) if axes else 1
    why = why or (
        f"{shape}, {request_pages} pages per request: the shard count must divide the slots "
        "and the requests into whole prompts per shard or whole shards per prompt, and leave "
        "each shard one request's pages"
    )
    if could > split:
        warnings.warn(
            f"paged sampler: the page store is split over {split} of the mesh's {could} batch "
            f"shards ({why}); each store is held and decoded by {could // split} devices",
            stacklevel=3,
        )


def experts_all_to_all(config, mesh) -> bool:
    """Whether the model's experts run expert-parallel (``expert_parallel``: its
    ``ragged_dot`` inside a ``shard_map`` does not batch under the shards' ``vmap``)."""
    moe_config = config.moe
    expert = 1 if mesh is None else mesh.shape.get("expert", 1)
    return moe_config is not None and moe_config.capacity_factor > 0 and expert > 1


def _split_axes(mesh, config, shape: dict, request_pages: int) -> tuple[str, ...]:
    """``shard_axes``, or none with expert parallelism; says when a store is held twice."""
    axes = shard_axes(mesh, **shape, request_pages=request_pages)
    why = "expert parallelism's all-to-all is not split" if experts_all_to_all(config, mesh) else ""
    axes = () if why else axes
    _say_if_held_twice(mesh, axes, shape, request_pages, why)
    return axes


def rules_without(rules: ShardingRules, axes) -> ShardingRules:
    """``rules`` with ``axes`` taken out of "batch" (the vmapped block dim holds them)."""
    table = (
        (n, tuple(a for a in m if a not in axes) if n == "batch" else m) for n, m in rules.rules
    )
    return ShardingRules(tuple(table))


def kv_axes(name: str, ndim: int, kv_ndim: int) -> tuple | None:
    """The logical axes of a block's keys or values named ``name`` (a tree path) with
    ``ndim`` == ``kv_ndim`` dims: the page store's ``[K, L, N, Z, H]`` or the prefilled
    prompts' ``[L, Q, K, H, P]``; None for any other array."""
    if ndim != kv_ndim or not name.endswith((".k", ".v")):
        return None
    if name.endswith((".pages.k", ".pages.v")):
        return ("act_kv_heads", "layers", None, None, None)
    return ("layers", None, "act_kv_heads", None, None)


def pin(mesh: Mesh, tree):
    """A block's state or prompts: prefilled keys and values ``[L, Q, K, ...]`` and the page
    store's ``[K, L, N, Z, H]`` with their KV heads over "tensor" as the contiguous cache's,
    every other array whole (within the block: the vmap adds the block dim's batch axes)."""

    def spec(path, x):
        axes = kv_axes(jax.tree_util.keystr(path), x.ndim, 5)
        return NamedSharding(mesh, P()) if axes is None else named_sharding(mesh, axes, x.shape)

    shardings = jax.tree_util.tree_map_with_path(spec, tree)
    return jax.lax.with_sharding_constraint(tree, shardings)


def _merge(s: SlotState, num_slots: int) -> SlotState:
    """The blocks' states ``[D, ...]`` as one: per-request and per-slot rows in block order;
    ``iterations`` the longest block's (every block steps until the last is done, so
    ``slot_steps`` = iterations x C); the cache the blocks' stores ``[D, ...]`` with
    ``peak_pages`` and ``rewinds`` summed over them (each store holds its own peak). Its
    shape properties (``page_size``, ``prompt_pages``, ``max_length``) describe no store
    (index an array ``[d]`` for shard d's); ``paging_stats`` reads the totals."""
    rows = lambda x: x.reshape(-1, *x.shape[2:])
    iterations = jnp.max(s.iterations)
    cache = dataclasses.replace(
        s.cache, peak_pages=jnp.sum(s.cache.peak_pages), rewinds=jnp.sum(s.cache.rewinds)
    )
    return SlotState(
        iterations=iterations,
        slot_steps=iterations * num_slots,
        next_request=jnp.max(s.next_request),
        queue_end=jnp.max(s.queue_end),
        request_C=rows(s.request_C),
        count_C=rows(s.count_C),
        last_C=rows(s.last_C),
        recent_CW=rows(s.recent_CW),
        cache=cache,
        tokens_RT=rows(s.tokens_RT),
        logprobs_RT=rows(s.logprobs_RT),
        lengths_R=rows(s.lengths_R),
        done_R=rows(s.done_R),
        budget_R=rows(s.budget_R),
        wait_R=rows(s.wait_R),
        low_R=rows(s.low_R),
        key=s.key[0],
    )


def blocks(prompt_QP, prompt_mask_QP, budget_R, d: int, num_samples: int):
    """The shards' prompts ``[D, Q / D, P]`` (or ``[D, 1, P]``: its prompt, when D / Q shards
    share one), masks, budgets ``[D, R / D]`` (or None) and first request ids ``[D]``; and the
    samples per shard prompt (G, or G / (D / Q))."""
    num_requests = prompt_QP.shape[0] * num_samples
    split = lambda x: None if x is None else x.reshape(d, -1, *x.shape[1:])
    first_D = jnp.arange(d, dtype=jnp.int32) * (num_requests // d)
    prompts = split
    if prompt_QP.shape[0] % d:  # each shard prefills its prompt for its R / D samples
        prompt_D = first_D // num_samples
        prompts = lambda x: x[prompt_D][:, None]
        num_samples = num_requests // d
    blocks = prompts(prompt_QP), prompts(prompt_mask_QP), split(budget_R), first_D
    return blocks, num_samples


def sample(
    params,
    prompt_QP: jax.Array,
    prompt_mask_QP: jax.Array,
    key: jax.Array,
    stop_table_EW: jax.Array,
    *,
    mesh: Mesh | None,
    num_slots: int,
    gen_pages: int,
    budget_R: jax.Array | None = None,
    windows: int = 1,
    **options,
) -> SlotState:
    """``paged.sample`` (same arguments; ``options``: its other keywords) with one store per
    batch shard of ``mesh``. The final state's ``cache`` is ``paged.sample``'s with a leading
    ``[D]`` on every store array when split (``paging_stats`` reads either).

    The blocks start and step under ``vmap``; the loop around the step is not vmapped (its
    condition is any block busy), so a block done early steps with idle slots, writing
    nothing, rather than every step selecting between old and new copies of its store; the
    decode window (``windows``) is every block's: the one holding all blocks' writes."""
    num_prompts, prompt_len = prompt_QP.shape
    max_new = options["max_new_tokens"]
    num_samples = options.pop("num_samples")
    shape = dict(prompts=num_prompts, samples=num_samples, slots=num_slots, gen_pages=gen_pages)
    paged.page_counts(prompt_len, max_new, z := options["page_size"])  # Z divides the bucket
    axes = _split_axes(mesh, options["config"], shape, paged.request_pages(max_new, z))
    if not axes:
        return paged.sample(
            params, prompt_QP, prompt_mask_QP, key, stop_table_EW, num_slots=num_slots,
            gen_pages=gen_pages, budget_R=budget_R, num_samples=num_samples, windows=windows,
            **options,
        )  # fmt: skip
    d = math.prod(mesh.shape[a] for a in axes)
    parts, options["num_samples"] = blocks(prompt_QP, prompt_mask_QP, budget_R, d, num_samples)
    pinned = functools.partial(pin, mesh)
    statics = {k: options[k] for k in ("config", "method", "num_samples")}

    def start(prompt_QP, prompt_mask_QP, budget_R, first):
        prompts, s = paged.start(
            params, prompt_QP, prompt_mask_QP, key, stop_table_EW, num_slots=num_slots // d,
            gen_pages=gen_pages // d, budget_R=budget_R, first_request=first, **options,
        )  # fmt: skip
        return pinned(prompts), pinned(s)

    def step(prompts, s, window):
        # The call's key, not the carry's copy per block: "rbg" keys draw other bits batched.
        s = dataclasses.replace(s, key=key)
        out = paged.step(params, prompts, stop_table_EW, s, window, max_new=max_new, **statics)
        return pinned(out)

    ends = paged.window_ends(prompt_len, max_new, options["page_size"], windows)
    with use_rules(rules_without(current_rules(), axes)), moe.merged_under_vmap():
        vmap = functools.partial(jax.vmap, spmd_axis_name=axes)
        prompts, s = vmap(start)(*parts)
        step_all = lambda s, w: vmap(functools.partial(step, window=w))(prompts, s)
        s = windowed_while(paged.keep_going, step_all, s, ends=ends, needed=paged.needed_columns)
    return _merge(s, num_slots)


def paging_stats(cache: paged.PagedSlots) -> dict:
    """``store_pages``, ``peak_pages``, ``rewound_tokens`` of a final state's cache, one store
    or one per shard: the pages of every store, their peaks and rewinds summed."""
    stats = cache.free.size, cache.peak_pages, cache.rewinds
    return dict(zip(("store_pages", "peak_pages", "rewound_tokens"), stats, strict=True))
