"""The decoder forward pass: embeddings, a ``lax.scan`` over stacked layers, the LM head.

Shape letters: B batch, T tokens in this call, S cache slots, D hidden, V vocab, L layers.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model import attention_kernels, layers, moe, split_cache
from r1jax.model.cache import KVCache, write_slots
from r1jax.model.mla import mla_attention, rope_dim
from r1jax.model.weights import materialize
from r1jax.sharding import constrain

RopeFn = Callable[[], tuple[jax.Array, jax.Array]]  # a layer's (cos, sin) [B, T, 1, H/2]

_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def _block(
    x_BTD, p, config: ModelConfig, rope, q_pos, q_seg, kv_fn, q_offset=0, replay=None,
    attend_fn=None,
):  # fmt: skip
    """One pre-norm transformer block: ``(x [B, T, D], extra, RouterStats or None)``.

    ``kv_fn(k, v) -> (keys, values, k_pos, k_seg, extra)`` writes this call's keys to a cache
    and returns the keys attended, in the layouts of ``layers.attention``: keys ``[B, K, H,
    S]``, values ``[B, K, S, H]``; None attends this call's own tokens (no cache).
    ``q_offset`` is the key slot of this call's first token (``layers.attend``); ``replay``:
    the experts ``[B, T, K]`` a MoE layer must use. ``attend_fn(q, k, v) -> (attention [B, T,
    N, H], extra)`` (grouped-query attention only: queries ``[B, T, N, H]``, keys and values
    ``[B, T, K, H]``) replaces ``kv_fn`` and the attention (a fused paged kernel)."""
    h = layers.rms_norm(x_BTD, p["attn_norm"], config.rms_norm_eps)
    if config.mla is not None:  # kv_fn None: attend over this call's tokens (no cache)
        attn, extra = mla_attention(h, p, config, rope, q_pos, q_seg, kv_fn, q_offset)
    else:
        q, k, v = layers.qkv_projection(h, p, config)
        q, k = layers.apply_rope(q, rope), layers.apply_rope(k, rope)
        if attend_fn is not None:
            attn, extra = attend_fn(q, k, v)
            return _block_tail(x_BTD, attn, p, config, q_seg, replay, extra)
        kv_fn = kv_fn or (lambda k, v: (k, v, q_pos, q_seg, None))
        keys, values, k_pos, k_seg, extra = kv_fn(k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3))
        attn = layers.attend(q, keys, values, q_pos, q_seg, k_pos, k_seg, config, q_offset=q_offset)
    return _block_tail(x_BTD, attn, p, config, q_seg, replay, extra)


def _block_tail(x_BTD, attn, p, config: ModelConfig, q_seg, replay, extra):
    """``_block`` after the attention: its output projection and residual, then the MLP."""
    x_BTD = x_BTD + layers.attention_output(attn, p, config)
    x_BTD = constrain(x_BTD, ("batch", "seq", "act_embed"))
    h = layers.rms_norm(x_BTD, p["mlp_norm"], config.rms_norm_eps)
    y, stats = feed_forward(h, p, config, q_seg != 0, replay)
    return constrain(x_BTD + y, ("batch", "seq", "act_embed")), extra, stats


def embed(params: dict, tokens_BT: jax.Array, config: ModelConfig) -> jax.Array:
    """The token embeddings ``[B, T, D]`` in the compute dtype, rows over the batch axes."""
    # The table's hidden dim is FSDP-sharded like every weight; gathered before the lookup
    # (the FSDP all-gather), or XLA cannot map it onto batch-sharded rows and replicates all.
    table_VD = constrain(params["embed"], ("vocab", None))
    x = jnp.take(table_VD, tokens_BT, axis=0).astype(config.dtype)
    return constrain(x, ("batch", "seq", "act_embed"))


def model_rope(config: ModelConfig, positions_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``layers.rope_table`` of the model's RoPE (its dims, theta and scaling) at
    ``positions``: what ``_block`` takes."""
    inv_freq = layers.rope_inv_freq(rope_dim(config), config.rope_theta, config.rope_scaling)
    factor = layers.rope_attention_factor(config.rope_scaling)
    return layers.rope_table(positions_BT, inv_freq, factor)


def rope_lookup(config: ModelConfig, positions_BT: jax.Array, length: int | None) -> RopeFn:
    """``model_rope(config, positions)`` as a call for each layer's body. For positions in
    ``[0, length)`` (those counted from a row's mask or segments, or ``arange``), on CPU: cos
    and sin gathered from a ``[length, H/2]`` table computed once (the same values bit for
    bit); with ``length`` None (no bound known), or on other targets, computed in the layer.

    Computed from the positions in every layer, XLA:CPU fused the cos and sin into each q and
    k fusion of the forward and the backward and recomputed them per head there (a GRPO update
    at the benchmark's shape: 0.72 -> 0.68 s). A position outside the range reads the table's
    nearest end: callers pass only positions that cannot be. Other targets compute them in
    each layer as before: compiled for TPU, the lookups left the layer scan (loop-invariant)
    and their ``[B, T]`` results stayed live (1.5B GRPO update at 32k on v5e-8, ``r1jax
    plan``: 15.24 -> 15.62 GiB per chip of 15.75).
    """
    if length is None or attention_kernels.target_platform() != "cpu":
        return lambda: model_rope(config, positions_BT)
    cos_S, sin_S = (table[0] for table in model_rope(config, jnp.arange(length)[None]))
    take = lambda table_S: jnp.take(table_S, positions_BT, axis=0, mode="clip")
    return lambda: (take(cos_S), take(sin_S))


def feed_forward(h_BTD, p: dict, config: ModelConfig, valid_BT=None, replay_BTK=None):
    """A layer's MLP: ``(y [B, T, D], RouterStats)`` of the mixture of experts where ``p`` has
    a router, else ``(SwiGLU, None)``."""
    if "router" in p:
        return moe.moe_mlp(h_BTD, p, config.moe, valid_BT, replay_BTK)
    return layers.swiglu(h_BTD, p["gate"], p["up"], p["down"]), None


def layer_stacks(params: dict, config: ModelConfig) -> list[tuple[dict, jax.Array]]:
    """The stacked layer groups in order, each with its layers' indices ``[L_group]``: a
    mixture-of-experts model's dense first layers (``dense_layers``), then ``layers``."""
    groups = [params[name] for name in ("dense_layers", "layers") if name in params]
    stacks, first = [], 0
    for group in groups:
        if isinstance(group, tuple):  # split_layers: one dict per layer, indices Python ints
            stacks.append((group, tuple(range(first, first + len(group)))))
            first += len(group)
            continue
        size = jax.tree.leaves(group)[0].shape[0]
        stacks.append((group, first + jnp.arange(size)))
        first += size
    if first != config.num_layers:
        raise ValueError(f"params hold {first} layers; model.num_layers={config.num_layers}")
    return stacks


def layer_params(params: dict, config: ModelConfig, index: int) -> dict:
    """Layer ``index``'s params (one slice of its stack)."""
    for group, indices in layer_stacks(params, config):
        first = int(indices[0])
        if index < first + len(indices):
            return jax.tree.map(lambda a, i=index - first: a[i], group)
    raise IndexError(f"layer {index} of a {config.num_layers}-layer model")


def split_layers(params: dict) -> dict:
    """``params`` with each layer stack as a tuple of per-layer dicts (each weight its own
    buffer): the forward then runs the layers unrolled and reads every weight in place."""
    out = dict(params)
    for name in ("dense_layers", "layers"):
        if name in params and not isinstance(params[name], tuple):
            size = jax.tree.leaves(params[name])[0].shape[0]
            out[name] = tuple(jax.tree.map(lambda a, i=i: a[i], params[name]) for i in range(size))
    return out


def run_stack(body, carry, stack, indices, per_layer, config: ModelConfig):
    """``lax.scan`` of ``body(carry, (layer params, index, per_layer[i]))`` over a stacked
    group, or a Python loop over a split one; ``per_layer``: a pytree of ``[L_group, ...]``
    arrays (or None), e.g. routing replay's experts."""
    if not isinstance(stack, tuple):
        xs = (stack, indices, per_layer)
        return jax.lax.scan(_maybe_remat(body, config), carry, xs, unroll=config.scan_unroll)
    stats = []
    for i, (p, index) in enumerate(zip(stack, indices, strict=True)):
        layer_xs = jax.tree.map(lambda a, i=i: a[i], per_layer)
        carry, s = _maybe_remat(body, config)(carry, (p, index, layer_xs))
        stats.append(s)
    if stats[0] is None:
        return carry, None
    return carry, jax.tree.map(lambda *a: jnp.stack(a), *stats)


def _write_kv(k_cache, v_cache, k_BKHT, v_BKTH, index, slot):
    """Writes layer ``index``'s new keys/values at cache slot ``slot`` (a scalar: all rows at
    ``[slot, slot + T)``; ``[B]``: row b's one token at ``slot[b]``)."""
    k_new, v_new = k_BKHT.astype(k_cache.dtype), v_BKTH.astype(v_cache.dtype)
    if slot.ndim == 0:
        k_all = jax.lax.dynamic_update_slice(k_cache, k_new[None], (index, 0, 0, 0, slot))
        v_all = jax.lax.dynamic_update_slice(v_cache, v_new[None], (index, 0, 0, slot, 0))
        return k_all, v_all
    rows_B = jnp.arange(slot.shape[0])
    k_all = k_cache.at[index, rows_B, :, :, slot].set(k_new[..., 0])
    v_all = v_cache.at[index, rows_B, :, slot, :].set(v_new[:, :, 0, :])
    return k_all, v_all


def _maybe_remat(fn, config: ModelConfig):
    if config.remat_policy == "none":
        return fn
    return jax.checkpoint(fn, policy=_REMAT_POLICIES[config.remat_policy])


def hidden_states(
    params: dict,
    tokens_BT: jax.Array,
    config: ModelConfig,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    cache: KVCache | None = None,
    cache_window: int | None = None,
    routing: jax.Array | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Final-norm hidden states ``[B, T, D]`` (compute dtype) and the updated cache.

    See ``forward`` for the arguments; ``cache_window``: attention reads only the cache's first
    this many slots (the caller keeps every written slot below it; decode at long lengths
    then reads the live part of the cache, not all of it). ``hidden_states_and_router`` also
    returns what the routers did.
    """
    hidden, cache, _ = hidden_states_and_router(
        params,
        tokens_BT,
        config,
        positions=positions,
        segment_ids=segment_ids,
        cache=cache,
        cache_window=cache_window,
        routing=routing,
    )
    return hidden, cache


def hidden_states_and_router(
    params: dict,
    tokens_BT: jax.Array,
    config: ModelConfig,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    cache: KVCache | None = None,
    cache_window: int | None = None,
    routing: jax.Array | None = None,
    rope: tuple[jax.Array, jax.Array] | RopeFn | None = None,
) -> tuple[jax.Array, KVCache | None, moe.RouterStats | None]:
    """``hidden_states`` and the MoE layers' ``RouterStats`` stacked ``[L', ...]`` (None for
    a dense model). ``routing``: int ``[L', B, T, K]`` experts the MoE layers use instead of
    choosing (routing replay: e.g. the sampler's ``RouterStats.experts``). ``rope``: the
    ``model_rope`` of ``positions`` when the caller has it (e.g. gathered from a table), or a
    call that gives it in each layer (``rope_lookup``).

    Long because the decoder's scan over layers (with and without a KV cache, remat) is one
    piece a reader follows from embedding to final norm.
    """
    b, t = tokens_BT.shape
    rope_bound = t if positions is None and cache is None else None  # positions 0 ... T-1
    if positions is None:
        start = 0 if cache is None else cache.length
        start = jnp.reshape(start, (-1, 1))  # [1, 1], or [B, 1] for per-row cache lengths
        positions = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
    if segment_ids is None:
        segment_ids = jnp.ones((b, t), jnp.int32)
    dtype = config.dtype
    x = embed(params, tokens_BT, config)
    cast = lambda tree: materialize(tree, dtype)  # one layer's weights, in the compute dtype
    # Computed (or looked up) in each layer's body: outside the scan, the [B, T, 1, H/2] tables
    # would stay live through the forward and backward (268 MB at 16 rows x 32,768 tokens).
    if rope is None:
        layer_rope = rope_lookup(config, positions, rope_bound)
    else:
        layer_rope = rope if callable(rope) else lambda: rope
    blocks = functools.partial(_block, config=config, q_pos=positions)

    if cache is None:

        def body(x, xs):
            p, _, replay = xs
            x, _, stats = blocks(
                x, cast(p), rope=layer_rope(), q_seg=segment_ids, kv_fn=None, replay=replay
            )
            return x, stats

        carry = x
    else:
        cache = write_slots(cache, positions, segment_ids)
        slot = cache.length - t  # scalar, or [B]: each row's own write index
        q_offset = slot if slot.ndim == 0 else jnp.max(slot)  # no key after it is attended
        if slot.ndim and config.sliding_window:
            q_offset = None  # a window's reach differs per row: visit every key block

        def body(carry, xs):
            x, k_cache, v_cache = carry
            p, index, replay = xs

            def cached_keys(k, v):
                w = cache_window or cache.max_length
                slots = (cache.positions[:, :w], cache.segment_ids[:, :w])
                if isinstance(k_cache, tuple):  # split_cache: this layer's chunks, in place
                    keys, values, k_l, v_l = split_cache.write_and_read(
                        k_cache[index], v_cache[index], k, v, slot, w
                    )
                    k_all = (*k_cache[:index], k_l, *k_cache[index + 1 :])
                    v_all = (*v_cache[:index], v_l, *v_cache[index + 1 :])
                    cast_all = lambda chunks: tuple(c.astype(dtype) for c in chunks)
                    return cast_all(keys), cast_all(values), *slots, (k_all, v_all)
                k_all, v_all = _write_kv(k_cache, v_cache, k, v, index, slot)
                keys = k_all[index, :, :, :, :w].astype(dtype)
                values = v_all[index, :, :, :w].astype(dtype)
                return keys, values, *slots, (k_all, v_all)

            x, (k_cache, v_cache), stats = blocks(
                x,
                cast(p),
                rope=layer_rope(),
                q_seg=segment_ids,
                kv_fn=cached_keys,
                q_offset=q_offset,
                replay=replay,
            )
            return (x, k_cache, v_cache), stats

        carry = (x, cache.k, cache.v)
    router = None
    for stack, indices in layer_stacks(params, config):
        moe_stack = "router" in (stack[0] if isinstance(stack, tuple) else stack)
        replay = routing if moe_stack else None
        carry, stats = run_stack(body, carry, stack, indices, replay, config)
        router = stats if stats is not None else router
    if cache is None:
        x = carry
    else:
        x, k_new, v_new = carry
        cache = dataclasses.replace(cache, k=k_new, v=v_new)
    x = layers.rms_norm(x, params["final_norm"].astype(dtype), config.rms_norm_eps)
    return x, cache, router


def logits_from_hidden(params: dict, hidden_BTD: jax.Array, config: ModelConfig) -> jax.Array:
    """LM head: ``[B, T, D]`` -> fp32 logits ``[B, T, V]`` (tied embeddings reuse ``embed``)."""
    if config.tie_embeddings:
        w_DV = params["embed"].astype(config.dtype).T
    else:
        w_DV = params["lm_head"].astype(config.dtype)
    logits = layers.dense(hidden_BTD, w_DV, preferred_element_type=jnp.float32)
    return constrain(logits, ("batch", "seq", "act_vocab"))


def forward(
    params: dict,
    tokens: jax.Array,
    config: ModelConfig,
    *,
    positions: jax.Array | None = None,
    segment_ids: jax.Array | None = None,
    cache: KVCache | None = None,
) -> tuple[jax.Array, KVCache | None]:
    """Runs the decoder. Pure and jittable (``config`` is static).

    Args:
      params: the param tree of ``r1jax.model.init_params`` (any float dtype; cast to the
        compute dtype per layer).
      tokens: int ``[B, T]``.
      config: ``ModelConfig``.
      positions: int ``[B, T]`` RoPE positions; default ``cache.length + arange(T)`` (or
        ``arange(T)`` without cache). For left padding pass ``cumsum(mask) - 1``; for packed
        sequences restart at 0 in each segment.
      segment_ids: int ``[B, T]``; tokens attend only within their segment; 0 marks padding.
        Default: all ones.
      cache: optional ``KVCache``; the T tokens are written at slots ``[length, length + T)``
        (the caller keeps ``length + T <= max_length``) and attend to everything cached.

    Returns:
      ``(logits [B, T, V] fp32, updated cache or None)``.
    """
    hidden, cache = hidden_states(
        params, tokens, config, positions=positions, segment_ids=segment_ids, cache=cache
    )
    return logits_from_hidden(params, hidden, config), cache
