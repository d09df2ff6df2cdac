"""Multi-head latent attention (DeepSeek-V2/V3), in two equal forms.

Shape letters as in ``layers`` (B batch, T queries, S keys, D hidden, N heads), and R the KV
latent (``kv_lora_rank``), Hn / Hr / Hv the no-RoPE key, RoPE key and value head dims,
Hq = Hn + Hr. Per token: ``latent = RMSNorm((x @ kv_a)[:R])`` and one RoPE key shared by every
head, ``k_rope = RoPE((x @ kv_a)[R:])``; per head, ``k_nope, v = latent @ kv_b``.

``expanded`` (training, no cache): every head's keys ``[k_nope, k_rope]`` and values are
formed and attended as ordinary multi-head attention (values zero-padded to Hq so the shared
attention implementations apply; the padding's outputs are dropped).

``absorbed`` (the sampler's KV cache): the cache holds only ``[latent, k_rope]`` (R + Hr per
token and layer) as ONE key head, and ``kv_b``'s key half is folded into the queries
(``q_nope @ W_uk``: ``[B, T, N, R]``), so scores are ``q_lat . latent + q_rope . k_rope``;
the values are the same cached latent, and ``kv_b``'s value half maps the attended latent to
``Hv`` per head afterwards. The two forms are the same arithmetic reassociated.
"""

from __future__ import annotations

import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model import layers


def _queries(h_BTD, p, config: ModelConfig):
    """``(q_nope [B, T, N, Hn], q_rope [B, T, N, Hr])`` before RoPE."""
    m = config.mla
    if m.q_lora_rank:
        latent = layers.rms_norm(layers.dense(h_BTD, p["q_a"]), p["q_a_norm"], config.rms_norm_eps)
        q = layers.dense(latent, p["q_b"])
    else:
        q = layers.dense(h_BTD, p["q"])
    return q[..., : m.qk_nope_head_dim], q[..., m.qk_nope_head_dim :]


def _latent(h_BTD, p, config: ModelConfig, rope):
    """``(latent [B, T, R] normed, k_rope [B, T, Hr] with RoPE)``."""
    r = config.mla.kv_lora_rank
    kv = layers.dense(h_BTD, p["kv_a"])
    latent = layers.rms_norm(kv[..., :r], p["kv_a_norm"], config.rms_norm_eps)
    k_rope = layers.apply_rope(kv[..., None, r:], rope)[:, :, 0]
    return latent, k_rope


def _scaled(q, used: int, config: ModelConfig):
    """Queries scaled so the attention's ``used ** -0.5`` becomes MLA's ``Hq ** -0.5`` (times
    YaRN's ``mscale(factor, mscale_all_dim) ** 2``, as DeepSeek's attention scales it)."""
    scale = (used / config.mla.qk_head_dim) ** 0.5
    rope = config.rope_scaling
    if rope is not None and rope.rope_type == "yarn" and rope.mscale_all_dim:
        scale *= layers.yarn_mscale(rope.factor, rope.mscale_all_dim) ** 2
    # in float32: a bf16 scale (sqrt(3) -> 1.734) would scale every decode score by +0.13%
    # against the expanded form's (scale 1), the sampler's attention against the trainer's
    return (q.astype(jnp.float32) * scale).astype(q.dtype)


def mla_attention(h_BTD, p, config: ModelConfig, rope, q_pos, q_seg, kv_fn, q_offset):
    """Attention output ``[B, T, N, Hv]`` (before ``o``) and ``kv_fn``'s extra.

    ``kv_fn`` is ``transformer._block``'s: None means the expanded form over this call's own
    tokens; otherwise it takes the new ``[latent, k_rope]`` keys ``[B, 1, R + Hr, T]`` (and
    empty values ``[B, 1, T, 0]``), writes them to the cache and returns every cached key.
    """
    m = config.mla
    q_nope, q_rope = _queries(h_BTD, p, config)
    q_rope = layers.apply_rope(q_rope, rope)
    latent, k_rope = _latent(h_BTD, p, config, rope)
    w_uk, w_uv = p["kv_b"][..., : m.qk_nope_head_dim], p["kv_b"][..., m.qk_nope_head_dim :]
    if kv_fn is None:  # expanded
        k_nope = layers.dense(latent, w_uk)  # [B, T, N, Hn]
        v = layers.dense(latent, w_uv)  # [B, T, N, Hv]
        b, t, n, _ = k_nope.shape
        keys = jnp.concatenate(
            [k_nope, jnp.broadcast_to(k_rope[:, :, None], (b, t, n, m.qk_rope_head_dim))], -1
        )
        width = max(m.qk_head_dim, m.v_head_dim)
        pad = lambda x: jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, width - x.shape[-1])))
        q = _scaled(pad(jnp.concatenate([q_nope, q_rope], -1)), width, config)
        out = layers.attend(
            q, pad(keys).transpose(0, 2, 3, 1), pad(v).transpose(0, 2, 1, 3),
            q_pos, q_seg, q_pos, q_seg, config, q_offset=q_offset,
        )  # fmt: skip
        return out[..., : m.v_head_dim], None
    # absorbed: one cached key head [latent, k_rope]; queries [q_nope @ W_uk^T, q_rope]
    q_latent = jnp.einsum("btnh,rnh->btnr", q_nope, w_uk)
    q = _scaled(jnp.concatenate([q_latent, q_rope], -1), m.latent_dim, config)
    new_keys = jnp.concatenate([latent, k_rope], -1)[:, None].transpose(0, 1, 3, 2)
    empty = jnp.zeros((*new_keys.shape[:2], new_keys.shape[3], 0), new_keys.dtype)
    keys, _, k_pos, k_seg, extra = kv_fn(new_keys, empty)
    values = jnp.swapaxes(keys, 2, 3)  # the latent (and RoPE key, whose outputs are dropped)
    out = layers.attend(q, keys, values, q_pos, q_seg, k_pos, k_seg, config, q_offset=q_offset)
    attended = out[..., : m.kv_lora_rank]  # [B, T, N, R]
    return jnp.einsum("btnr,rnv->btnv", attended, w_uv), extra


def cache_dims(config: ModelConfig) -> tuple[int, int, int]:
    """(kv heads, key dim, value dim) of a layer's cache entry: MLA caches one latent head of
    R + Hr and no values; grouped-query attention K heads of H keys and values."""
    if config.mla is not None:
        return 1, config.mla.latent_dim, 0
    return config.num_kv_heads, config.head_dim, config.head_dim


def rope_dim(config: ModelConfig) -> int:
    """The dims RoPE rotates: MLA's RoPE key (Hr), else the head dim."""
    return config.mla.qk_rope_head_dim if config.mla is not None else config.head_dim
