"""Mixture-of-experts MLP: top-k routing and dropless grouped expert matmuls.

Shape letters: B batch, T tokens, D hidden, E experts, K experts per token (``experts_per_token``),
F expert width, G expert groups, N = B * T tokens, M = N * K (token, choice) pairs.

Dropless: every (token, choice) pair is computed. The M pairs are sorted by expert so each
expert's rows are contiguous, and the three expert projections run as grouped matmuls
(``jax.lax.ragged_dot``: one matmul over M rows whose row groups use different weights; a
native grouped GEMM on TPU and GPU). ``experts_loop`` is the reference: every expert over every
token, weighted by its routing weight (zero where it was not chosen).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1jax.config.model import MoEConfig
from r1jax.model import expert_parallel
from r1jax.model.layers import dense, swiglu
from r1jax.sharding import current_rules


class RouterStats(NamedTuple):
    """What one MoE layer's router did (stacked ``[L', ...]`` over the MoE layers by
    ``transformer.hidden_states_and_router``). Padding tokens (segment 0) are left out of
    ``load`` and the losses."""

    experts: jax.Array  # int32 [B, T, K]: each token's chosen experts (what routing replay feeds)
    load: jax.Array  # f32 [E]: the fraction of (token, choice) pairs each expert received
    balance_loss: jax.Array  # f32 []: E * sum_e load_e * mean router probability_e (Switch)
    z_loss: jax.Array  # f32 []: mean over tokens of logsumexp(router logits)^2 (ST-MoE)
    # f32 []: the fraction of tokens whose own choice differs from the experts used (replay)
    replay_mismatch: jax.Array
    # f32 []: the fraction of (token, choice) pairs dropped for capacity (expert parallelism)
    dropped: jax.Array


def route(
    x_ND: jax.Array,
    router_DE: jax.Array,
    bias_E: jax.Array | None,
    moe: MoEConfig,
    replay_NK: jax.Array | None = None,
):
    """Chooses each token's experts: ``(weights [N, K] fp32, experts [N, K] int32, logits
    [N, E] fp32, own [N, K] int32)``; ``own`` is the router's own choice (``experts`` unless
    replayed).

    Router logits are computed in fp32. ``"softmax"``: Qwen3-MoE's top-k of the softmax
    (renormalised over the chosen k when ``norm_topk_prob``). ``"sigmoid"``: DeepSeek-V3's
    choice by sigmoid score + ``bias_E`` within the ``groups_per_token`` best groups; weights
    are the chosen sigmoid scores (without the bias), renormalised, times ``routed_scaling``.
    ``replay_NK``: use these experts instead of choosing (routing replay; rows of -1 choose);
    the weights are still this router's probabilities of them, so its gradient keeps its form.
    """
    logits_NE = dense(x_ND.astype(jnp.float32), router_DE.astype(jnp.float32))
    k = moe.experts_per_token
    if moe.router == "softmax":
        probs_NE = jax.nn.softmax(logits_NE, axis=-1)
        _, own = jax.lax.top_k(probs_NE, k)
        experts = _replayed(own, replay_NK)
        weights = jnp.take_along_axis(probs_NE, experts, axis=-1)
        if moe.norm_topk_prob:
            weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
        return weights, experts, logits_NE, own
    scores_NE = jax.nn.sigmoid(logits_NE)
    choice_NE = scores_NE + bias_E.astype(jnp.float32)
    if moe.expert_groups > 1:
        n, g = choice_NE.shape[0], moe.expert_groups
        grouped_NGX = choice_NE.reshape(n, g, -1)
        group_score_NG = jnp.sum(jax.lax.top_k(grouped_NGX, 2)[0], axis=-1)
        _, best_groups = jax.lax.top_k(group_score_NG, moe.groups_per_token)
        keep_NG = jnp.any(best_groups[:, :, None] == jnp.arange(g), axis=1)
        choice_NE = jnp.where(keep_NG[:, :, None], grouped_NGX, -jnp.inf).reshape(n, -1)
    _, own = jax.lax.top_k(choice_NE, k)
    experts = _replayed(own, replay_NK)
    return _sigmoid_weights(scores_NE, experts, moe), experts, logits_NE, own


def _replayed(chosen_NK, replay_NK):
    """The replayed experts where given (>= 0), this router's choice elsewhere (a row of -1:
    a token the recording did not route, e.g. a completion's last token)."""
    if replay_NK is None:
        return chosen_NK
    known = jnp.all(replay_NK >= 0, axis=-1, keepdims=True)
    return jnp.where(known, replay_NK.astype(jnp.int32), chosen_NK)


def _sigmoid_weights(scores_NE, experts_NK, moe: MoEConfig) -> jax.Array:
    weights = jnp.take_along_axis(scores_NE, experts_NK, axis=-1)
    if moe.norm_topk_prob:
        weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
    return weights * moe.routed_scaling


def router_stats(logits_NE, experts_NK, own_NK, valid_N, moe: MoEConfig) -> RouterStats:
    """Load per expert, the auxiliary losses and the replay mismatch over the ``valid_N``
    tokens (``own_NK``: the router's own choice, ``experts_NK``: the experts used)."""
    e, k = logits_NE.shape[1], experts_NK.shape[1]
    valid = valid_N.astype(jnp.float32)
    tokens = jnp.maximum(jnp.sum(valid), 1.0)
    chosen_NE = jnp.sum(jax.nn.one_hot(experts_NK, e, dtype=jnp.float32), axis=1)
    load_E = jnp.sum(chosen_NE * valid[:, None], axis=0) / (tokens * k)
    if moe.router == "softmax":
        probs_NE = jax.nn.softmax(logits_NE, axis=-1)
    else:  # DeepSeek's sequence-wise balance loss normalises the sigmoid scores per token
        scores = jax.nn.sigmoid(logits_NE)
        probs_NE = scores / jnp.sum(scores, axis=-1, keepdims=True)
    mean_prob_E = jnp.sum(probs_NE * valid[:, None], axis=0) / tokens
    balance = e * jnp.sum(jax.lax.stop_gradient(load_E) * mean_prob_E)
    z = jnp.sum(jax.nn.logsumexp(logits_NE, axis=-1) ** 2 * valid) / tokens
    differs = jnp.any(jnp.sort(own_NK, axis=-1) != jnp.sort(experts_NK, axis=-1), axis=-1)
    mismatch = jnp.sum(differs * valid) / tokens
    return RouterStats(experts_NK, load_E, balance, z, mismatch, jnp.zeros((), jnp.float32))


def experts_grouped(x_ND, weights_NK, experts_NK, gate_EDF, up_EDF, down_EFD) -> jax.Array:
    """Sum over each token's chosen experts of ``weight * SwiGLU_e(x)``: ``[N, D]``.

    The M = N * K pairs are sorted by expert (stable: within an expert, by token), run through
    three ``ragged_dot``s with per-expert group sizes, and gathered back in token order.
    """
    n, k = experts_NK.shape
    num_experts = gate_EDF.shape[0]
    flat_M = experts_NK.reshape(-1)
    order_M = jnp.argsort(flat_M, stable=True)
    sizes_E = jnp.bincount(flat_M, length=num_experts).astype(jnp.int32)
    x_MD = jnp.take(x_ND, order_M // k, axis=0)
    gate = jax.lax.ragged_dot(x_MD, gate_EDF, sizes_E)
    up = jax.lax.ragged_dot(x_MD, up_EDF, sizes_E)
    y_MD = jax.lax.ragged_dot(jax.nn.silu(gate) * up, down_EFD, sizes_E)
    y_NKD = jnp.take(y_MD, jnp.argsort(order_M), axis=0).reshape(n, k, -1)
    return jnp.einsum("nkd,nk->nd", y_NKD, weights_NK.astype(y_NKD.dtype))


_TOKENS_MERGED = [False]  # ``merged_under_vmap``: set while the paged sampler traces its shards


@contextlib.contextmanager
def merged_under_vmap() -> Iterator[None]:
    """Within: ``experts_grouped`` under ``vmap`` runs once over the tokens of every mapped
    element (routing is per token, so the rows are the same), since ``ragged_dot`` batches
    only with its expert weights batched too. No autodiff through it (the paged sampler's
    shards, ``r1jax.sampling.paged_shards``, which decode)."""
    _TOKENS_MERGED.append(True)
    try:
        yield
    finally:
        _TOKENS_MERGED.pop()


@jax.custom_batching.custom_vmap
def _experts_grouped_merging(x_ND, weights_NK, experts_NK, gate_EDF, up_EDF, down_EFD):
    return experts_grouped(x_ND, weights_NK, experts_NK, gate_EDF, up_EDF, down_EFD)


@_experts_grouped_merging.def_vmap
def _merge_mapped_tokens(size, batched, *args):
    """The mapped elements' tokens as one batch over the shared expert weights; with mapped
    expert weights, each element in turn (``lax.map``)."""
    spread = lambda a, b: a if b else jnp.broadcast_to(a, (size, *a.shape))
    if any(batched[3:]):
        mapped = [spread(a, b) for a, b in zip(args, batched, strict=True)]
        return jax.lax.map(lambda a: _experts_grouped_merging(*a), mapped), True
    tokens = [spread(a, b) for a, b in zip(args[:3], batched[:3], strict=True)]
    n = tokens[0].shape[1]
    rows = [a.reshape(size * n, a.shape[-1]) for a in tokens]
    return _experts_grouped_merging(*rows, *args[3:]).reshape(size, n, -1), True


def experts_loop(x_ND, weights_NK, experts_NK, gate_EDF, up_EDF, down_EFD) -> jax.Array:
    """Reference of ``experts_grouped``: each expert over all N tokens, weighted by its routing
    weight (0 where not chosen). E times the work; for tests and benchmarks."""
    out = jnp.zeros_like(x_ND)
    for e in range(gate_EDF.shape[0]):
        weight_N = jnp.sum(jnp.where(experts_NK == e, weights_NK, 0.0), axis=-1)
        y = swiglu(x_ND[None], gate_EDF[e], up_EDF[e], down_EFD[e])[0]
        out = out + weight_N[:, None].astype(y.dtype) * y
    return out


def experts_per_shard(
    x_BTD, weights_BTK, experts_BTK, gate_EDF, up_EDF, down_EFD, capacity_factor: float = 0.0
) -> tuple[jax.Array, jax.Array]:
    """``experts_grouped`` of each batch shard's own tokens: ``([B, T, D], dropped f32 [])``.

    Under an ambient mesh the rows are split over the "batch" rule's mesh axes and each shard
    sorts and runs only its tokens (``jax.shard_map``); the expert weights are gathered to
    every shard (as FSDP gathers a layer's weights) and their gradients summed back. Sorting
    the whole batch instead would gather every token to every device. Without a mesh, or when
    the rows do not divide over the batch axes, one ``experts_grouped`` over all tokens. With
    ``capacity_factor`` > 0 and an ``expert`` axis > 1, expert parallelism instead
    (``r1jax.model.expert_parallel``; ``dropped``: the pairs over capacity, else 0).
    """
    b, t, d = x_BTD.shape
    mesh = jax.sharding.get_abstract_mesh()
    axes = () if mesh.empty else current_rules().spec(("batch",), (b,), dict(mesh.shape))[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    if capacity_factor > 0 and expert_parallel.EXPERT_AXIS in axes:
        return expert_parallel.experts_all_to_all(
            x_BTD, weights_BTK, experts_BTK, gate_EDF, up_EDF, down_EFD,
            row_axes=axes, capacity_factor=capacity_factor,
        )  # fmt: skip

    def local(x, w, e, *expert_weights):
        rows = x.shape[0] * x.shape[1]
        flat = lambda a: a.reshape(rows, -1)
        grouped = _experts_grouped_merging if _TOKENS_MERGED[-1] else experts_grouped
        return grouped(flat(x), flat(w), flat(e), *expert_weights).reshape(x.shape)

    none = jnp.zeros((), jnp.float32)
    if not axes:
        return local(x_BTD, weights_BTK, experts_BTK, gate_EDF, up_EDF, down_EFD), none
    rows = jax.sharding.PartitionSpec(axes)
    whole = jax.sharding.PartitionSpec()
    y = jax.shard_map(
        local, mesh=mesh, in_specs=(rows, rows, rows, whole, whole, whole), out_specs=rows
    )(x_BTD, weights_BTK, experts_BTK, gate_EDF, up_EDF, down_EFD)
    return y, none


def moe_mlp(
    x_BTD: jax.Array,
    p: dict,
    moe: MoEConfig,
    valid_BT: jax.Array | None = None,
    replay_BTK: jax.Array | None = None,
) -> tuple[jax.Array, RouterStats]:
    """The mixture-of-experts MLP of one layer (params ``r1jax.model.params``): ``[B, T, D]``
    and its ``RouterStats``. ``valid_BT``: tokens counted in the stats (default all);
    ``replay_BTK``: experts to use instead of the router's choice (routing replay)."""
    b, t, d = x_BTD.shape
    x_ND = x_BTD.reshape(b * t, d)
    replay = None if replay_BTK is None else replay_BTK.reshape(b * t, -1)
    weights, experts, logits, own = route(x_ND, p["router"], p.get("router_bias"), moe, replay)
    by_row = lambda a: a.reshape(b, t, -1)
    expert_weights = (p["expert_gate"], p["expert_up"], p["expert_down"])
    y_BTD, dropped = experts_per_shard(
        x_BTD, by_row(weights), by_row(experts), *expert_weights, moe.capacity_factor
    )
    if moe.shared_experts:
        y_BTD = y_BTD + swiglu(x_BTD, p["shared_gate"], p["shared_up"], p["shared_down"])
    valid = jnp.ones((b * t,), bool) if valid_BT is None else valid_BT.reshape(-1)
    stats = router_stats(logits, experts, own, valid, moe)
    return y_BTD, stats._replace(experts=experts.reshape(b, t, -1), dropped=dropped)
