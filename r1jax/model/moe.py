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

import jax
import jax.numpy as jnp

from r1jax.config.model import MoEConfig
from r1jax.model.layers import dense, swiglu


def route(x_ND: jax.Array, router_DE: jax.Array, bias_E: jax.Array | None, moe: MoEConfig):
    """Chooses each token's experts. Returns ``(weights [N, K] fp32, experts [N, K] int32)``.

    Router logits are computed in fp32. ``"softmax"``: Qwen3-MoE's top-k of the softmax
    (renormalised over the chosen k when ``norm_topk_prob``). ``"sigmoid"``: DeepSeek-V3's
    choice by sigmoid score + ``bias_E`` within the ``groups_per_token`` best groups; weights
    are the chosen sigmoid scores (without the bias), renormalised, times ``routed_scaling``.
    """
    logits_NE = dense(x_ND.astype(jnp.float32), router_DE.astype(jnp.float32))
    k = moe.experts_per_token
    if moe.router == "softmax":
        weights, experts = jax.lax.top_k(jax.nn.softmax(logits_NE, axis=-1), k)
        if moe.norm_topk_prob:
            weights = weights / jnp.sum(weights, axis=-1, keepdims=True)
        return weights, experts
    scores_NE = jax.nn.sigmoid(logits_NE)
    choice_NE = scores_NE + bias_E.astype(jnp.float32)
    if moe.expert_groups > 1:
        n, g = choice_NE.shape[0], moe.expert_groups
        grouped_NGX = choice_NE.reshape(n, g, -1)
        group_score_NG = jnp.sum(jax.lax.top_k(grouped_NGX, 2)[0], axis=-1)
        _, best_groups = jax.lax.top_k(group_score_NG, moe.groups_per_token)
        keep_NG = jnp.any(best_groups[:, :, None] == jnp.arange(g), axis=1)
        choice_NE = jnp.where(keep_NG[:, :, None], grouped_NGX, -jnp.inf).reshape(n, -1)
    _, experts = jax.lax.top_k(choice_NE, k)
    weights = jnp.take_along_axis(scores_NE, experts, axis=-1)
    if moe.norm_topk_prob:
        weights = weights / (jnp.sum(weights, axis=-1, keepdims=True) + 1e-20)
    return weights * moe.routed_scaling, experts


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


def experts_loop(x_ND, weights_NK, experts_NK, gate_EDF, up_EDF, down_EFD) -> jax.Array:
    """Reference of ``experts_grouped``: each expert over all N tokens, weighted by its routing
    weight (0 where not chosen). E times the work; for tests and benchmarks."""
    out = jnp.zeros_like(x_ND)
    for e in range(gate_EDF.shape[0]):
        weight_N = jnp.sum(jnp.where(experts_NK == e, weights_NK, 0.0), axis=-1)
        y = swiglu(x_ND[None], gate_EDF[e], up_EDF[e], down_EFD[e])[0]
        out = out + weight_N[:, None].astype(y.dtype) * y
    return out


def moe_mlp(x_BTD: jax.Array, p: dict, moe: MoEConfig) -> jax.Array:
    """The mixture-of-experts MLP of one layer (params ``r1jax.model.params``): ``[B, T, D]``."""
    b, t, d = x_BTD.shape
    x_ND = x_BTD.reshape(b * t, d)
    weights, experts = route(x_ND, p["router"], p.get("router_bias"), moe)
    y = experts_grouped(x_ND, weights, experts, p["expert_gate"], p["expert_up"], p["expert_down"])
    y_BTD = y.reshape(b, t, d)
    if moe.shared_experts:
        y_BTD = y_BTD + swiglu(x_BTD, p["shared_gate"], p["shared_up"], p["shared_down"])
    return y_BTD
