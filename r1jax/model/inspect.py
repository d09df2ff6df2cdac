"""Looking inside the decoder: the residual stream after every layer, every head's attention
probabilities, and the logit lens (each layer's residual read out by the final norm and the LM
head). For interpretability on small models: a plain Python loop over the layers (no scan, no
fused attention kernels), so every intermediate is materialised.

    trace = inspect.trace(params, tokens_BT, config)
    trace.residuals      f32 [L + 1, B, T, D]   the embeddings, then the output of each layer
    trace.attention      f32 [L, B, N, T, T]    query t's probabilities over keys s <= t
    lens = inspect.logit_lens(params, trace, config)   f32 [L + 1, B, T, V]

``lens[L]`` is the model's own logits (``forward``'s, up to float rounding). Rows are
unpadded sequences starting at position 0 (one segment).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model import layers
from r1jax.model.attention import MASK_VALUE, attention_mask
from r1jax.model.transformer import feed_forward, layer_params, logits_from_hidden


class Trace(NamedTuple):
    residuals: jax.Array  # [L + 1, B, T, D]
    attention: jax.Array  # [L, B, N, T, T]


def _attention_probs(q_BTNH, k_BTKH, mask_BTS) -> jax.Array:
    """Softmax attention probabilities ``[B, N, T, S]`` (grouped-query: head n reads kv head
    n // (N / K)), as ``layers.attention`` computes them."""
    n, k = q_BTNH.shape[2], k_BTKH.shape[2]
    k_BTNH = jnp.repeat(k_BTKH, n // k, axis=2)
    scores = jnp.einsum("btnh,bsnh->bnts", q_BTNH, k_BTNH, preferred_element_type=jnp.float32)
    scores = scores * q_BTNH.shape[-1] ** -0.5
    scores = jnp.where(mask_BTS[:, None], scores, MASK_VALUE)
    return jax.nn.softmax(scores, axis=-1)


def trace(params: dict, tokens_BT: jax.Array, config: ModelConfig) -> Trace:
    """Every layer's output and attention probabilities (module docstring)."""
    b, t = tokens_BT.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    segments = jnp.ones((b, t), jnp.int32)
    mask = attention_mask(positions, segments, positions, segments, config.sliding_window)
    freqs = layers.rope_inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)
    rope = layers.rope_table(positions, freqs, layers.rope_attention_factor(config.rope_scaling))
    x = jnp.take(params["embed"], tokens_BT, axis=0).astype(jnp.float32)
    residuals, probs = [x], []
    for i in range(config.num_layers):
        p = jax.tree.map(lambda a: a.astype(jnp.float32), layer_params(params, config, i))
        h = layers.rms_norm(x, p["attn_norm"], config.rms_norm_eps)
        q, k, v = layers.qkv_projection(h, p, config)
        q, k = layers.apply_rope(q, rope), layers.apply_rope(k, rope)
        a_BNTS = _attention_probs(q, k, mask)
        v_BTNH = jnp.repeat(v, config.num_heads // config.num_kv_heads, axis=2)
        out = jnp.einsum("bnts,bsnh->btnh", a_BNTS, v_BTNH)
        x = x + layers.attention_output(out, p, config)
        h = layers.rms_norm(x, p["mlp_norm"], config.rms_norm_eps)
        x = x + feed_forward(h, p, config)[0]
        residuals.append(x)
        probs.append(a_BNTS)
    return Trace(jnp.stack(residuals), jnp.stack(probs))


def logit_lens(params: dict, traced: Trace, config: ModelConfig) -> jax.Array:
    """Each layer's residual through the final norm and the LM head: f32 [L + 1, B, T, V]."""
    norm = params["final_norm"].astype(jnp.float32)
    f32 = config.replace(compute_dtype="float32")
    read = lambda x: logits_from_hidden(params, layers.rms_norm(x, norm, config.rms_norm_eps), f32)
    return jax.vmap(read)(traced.residuals)
