"""The forward of G continuations of each prefix, each prefix computed once.

GRPO's update runs the policy over prompt + completion for each of the G samples of a prompt.
With causal attention a prompt token sees only the prompt, so the prompt's part of the forward
is the same in all G rows: ``shared_prefix_hidden`` runs each prompt once, keeps its keys and
values per layer, and runs the G continuations over them (repeated per row, the sampler's
prefill does the same). The gradient is the unshared one: the repeat's transpose sums the G
rows' gradients into the prompt's. Only rounding differs: a continuation's attention scores
come in two chunks (prompt, own tokens) with one softmax across them.

Saved: (G - 1) / G of the prompt's share of the forward and backward (64 rows of 16 prompt + 64
completion tokens, G = 8: 17% of the update's matmuls). Limits, checked by the caller
(``r1jax.train.objectives``): rows come in groups of G consecutive rows sharing one prompt, a
dense model with grouped-query attention (a mixture of experts' router statistics would count
a prompt once instead of G times; multi-head latent attention has its own cache form), and
the continuation's attention is not a fused kernel's (cuDNN and splash attend a row's own
tokens only: with a prefix the long-sequence path is blockwise, ``attention_kernels``).

Shape letters: P prompts, G continuations each, B = P * G rows, S prompt tokens, T continuation
tokens, D hidden, L layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model import layers
from r1jax.model.transformer import _block, embed, layer_stacks, rope_lookup, run_stack
from r1jax.model.weights import materialize


def _prefix_pass(params, tokens_PS, positions_PS, segments_PS, config, below=None):
    """The prompts through every layer: (final hidden ``[P, S, D]``, keys ``[L, P, K, H, S]``,
    values ``[L, P, K, S, H]``) in the compute dtype."""
    rope = rope_lookup(config, positions_PS, below)  # in the body: see hidden_states_and_router
    own = lambda k, v: (k, v, positions_PS, segments_PS, (k, v))

    def body(x, xs):
        p, _, _ = xs
        p = materialize(p, config.dtype)
        x, kv, _ = _block(x, p, config, rope(), positions_PS, segments_PS, own)
        return x, kv

    x, kv = embed(params, tokens_PS, config), []
    for stack, indices in layer_stacks(params, config):
        x, stack_kv = run_stack(body, x, stack, indices, None, config)
        kv.append(stack_kv)
    keys, values = (jnp.concatenate(parts) for parts in zip(*kv, strict=True))
    return x, keys, values


def shared_prefix_hidden(
    params: dict,
    prefix_PS: jax.Array,
    prefix_positions_PS: jax.Array,
    prefix_segments_PS: jax.Array,
    tokens_BT: jax.Array,
    positions_BT: jax.Array,
    segments_BT: jax.Array,
    config: ModelConfig,
    positions_below: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Final-norm hidden states of each prefix's last slot ``[P, D]`` and of the continuations
    ``[B, T, D]``: those of ``hidden_states`` over the rows ``prefix[b // G] + tokens[b]``.

    Positions and segment ids are the concatenated rows' (prefix padding is segment 0; a
    continuation's positions continue its prefix's), split at S; G = B / P.
    ``positions_below``: a bound every position is under, when the caller knows one (positions
    counted from the rows' masks are under S + T): RoPE is then gathered from a table
    (``rope_lookup``).
    """
    if config.mla is not None or config.moe is not None:
        raise ValueError("shared_prefix_hidden: dense grouped-query attention models only")
    (p, s), b = prefix_PS.shape, tokens_BT.shape[0]
    if b % p:
        raise ValueError(f"{b} continuation rows are not a multiple of {p} prefixes")
    dtype, repeat = config.dtype, functools.partial(jnp.repeat, repeats=b // p, axis=0)
    prefix_x, keys_L, values_L = _prefix_pass(
        params, prefix_PS, prefix_positions_PS, prefix_segments_PS, config, positions_below
    )
    k_pos = jnp.concatenate([repeat(prefix_positions_PS), positions_BT], axis=1)
    k_seg = jnp.concatenate([repeat(prefix_segments_PS), segments_BT], axis=1)
    rope = rope_lookup(config, positions_BT, positions_below)

    def body(x, xs):
        layer, _, (prefix_k, prefix_v) = xs
        layer = materialize(layer, dtype)
        kv_fn = lambda k, v: ((repeat(prefix_k), k), (repeat(prefix_v), v), k_pos, k_seg, None)
        x, _, _ = _block(x, layer, config, rope(), positions_BT, segments_BT, kv_fn, q_offset=s)
        return x, None

    x, first = embed(params, tokens_BT, config), 0
    for stack, indices in layer_stacks(params, config):
        size = len(indices)
        per_layer = (keys_L[first : first + size], values_L[first : first + size])
        x, _ = run_stack(body, x, stack, indices, per_layer, config)
        first += size
    norm = lambda h: layers.rms_norm(h, params["final_norm"].astype(dtype), config.rms_norm_eps)
    return norm(prefix_x[:, -1]), norm(x)


def grouped_next_token_hidden(
    params: dict,
    tokens_BN: jax.Array,
    positions_BN: jax.Array,
    segments_BN: jax.Array,
    prefix_len: int,
    group: int,
    config: ModelConfig,
    positions_below: int | None = None,
) -> jax.Array:
    """``hidden_states(rows)[:, prefix_len - 1 : -1]``, ``[B, N - prefix_len, D]`` (the states
    predicting tokens ``prefix_len ..``), for rows whose first ``prefix_len`` tokens, positions
    and segment ids repeat in runs of ``group`` consecutive rows: each run's prefix runs once.
    ``positions_below``: as ``shared_prefix_hidden``'s.
    """
    b, s = tokens_BN.shape[0], prefix_len
    if b % group:
        raise ValueError(f"{b} rows are not whole groups of {group}")
    first = lambda a: a[:, :s].reshape(b // group, group, s)[:, 0]
    last_PD, hidden_BTD = shared_prefix_hidden(
        params,
        *(first(tokens_BN), first(positions_BN), first(segments_BN)),
        *(tokens_BN[:, s:], positions_BN[:, s:], segments_BN[:, s:]),
        config,
        positions_below,
    )
    last_B1D = jnp.repeat(last_PD, group, axis=0)[:, None]
    return jnp.concatenate([last_B1D, hidden_BTD[:, :-1]], axis=1)
