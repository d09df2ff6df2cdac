"""Transformer building blocks as pure functions: RMSNorm, RoPE, GQA attention, SwiGLU.

Attention: ``attention`` is the reference ("xla": the ``[B, T, S]`` mask and fp32 scores);
``attend`` runs the implementation ``ModelConfig.attention_impl`` picks (``r1jax.model.attention``
for the memory-linear ones; ``attention_mask``, the mask rule, lives there too).

Shape letters (the key in ``r1jax/__init__.py``): B batch, T query positions, S key positions,
D hidden, N query heads, K kv heads, A = N // K query heads per kv head, H head dim, F mlp dim.
"""

from __future__ import annotations

import functools
import itertools
import math
import operator

import jax
import jax.numpy as jnp

from r1jax.config.model import ModelConfig, RopeScaling
from r1jax.model import attention_kernels
from r1jax.model.attention import MASK_VALUE, attention_mask, blockwise_attention
from r1jax.sharding import constrain


def dense(x: jax.Array, w: jax.Array, *, in_dims: int = 1, preferred_element_type=None):
    """Contracts the last ``in_dims`` dims of ``x`` with the first ``in_dims`` of ``w``.

    ``x [..., *w.shape[:in_dims]]`` -> ``[..., *w.shape[in_dims:]]``, computed as ONE 2-D matmul
    (leading dims folded into rows, trailing weight dims into columns). Same math as the
    equivalent ``einsum``; XLA:CPU runs the folded 2-D form faster (SwiGLU forward + backward
    on 64 x 80 tokens, hidden 256, 2 cores: 278 -> 218 ms); TPU/GPU compile both alike.
    """
    lead, contract = x.shape[: x.ndim - in_dims], w.shape[:in_dims]
    if x.shape[x.ndim - in_dims :] != contract:
        raise ValueError(f"dense: x {x.shape} does not end with w's input dims {contract}")
    rows = x.reshape(-1, math.prod(contract))
    y = jnp.matmul(
        rows, w.reshape(math.prod(contract), -1), preferred_element_type=preferred_element_type
    )
    return y.reshape(*lead, *w.shape[in_dims:])


def rms_norm(x_BTD: jax.Array, weight_D: jax.Array, eps: float) -> jax.Array:
    """RMSNorm computed in fp32, returned in ``x``'s dtype (as Hugging Face Llama/Qwen2)."""
    x = x_BTD.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    return weight_D.astype(x_BTD.dtype) * x.astype(x_BTD.dtype)


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None) -> jax.Array:
    """Inverse frequencies ``[H/2]`` (fp32), scaled as ``scaling`` says (Llama-3 or YaRN)."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    if scaling is None:
        return inv_freq
    if scaling.rope_type == "yarn":
        return _yarn_inv_freq(inv_freq, head_dim, theta, scaling)
    old_len = scaling.original_max_position_embeddings
    low_wavelen = old_len / scaling.low_freq_factor
    high_wavelen = old_len / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_len / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(is_medium, smoothed, scaled)


def _yarn_inv_freq(inv_freq, head_dim: int, theta: float, scaling: RopeScaling) -> jax.Array:
    """YaRN: dims turning fewer than ``beta_slow`` times over the original context are
    interpolated (divided by ``factor``), those turning more than ``beta_fast`` times kept,
    a linear ramp between (the dims found by inverting the rotation count)."""
    length = scaling.original_max_position_embeddings

    def dim_of(rotations):  # the dim that turns ``rotations`` times over ``length`` positions
        return head_dim * math.log(length / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_of(scaling.beta_fast), dim_of(scaling.beta_slow)
    if scaling.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    high = high + 0.001 if low == high else high
    ramp = jnp.clip((jnp.arange(head_dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    return inv_freq / scaling.factor * ramp + inv_freq * (1 - ramp)


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's ``0.1 * mscale * ln(factor) + 1`` (1 when not extending)."""
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_attention_factor(scaling: RopeScaling | None) -> float:
    """What YaRN multiplies cos and sin by (1 without YaRN)."""
    if scaling is None or scaling.rope_type != "yarn":
        return 1.0
    if scaling.attention_factor:
        return scaling.attention_factor
    if scaling.mscale and scaling.mscale_all_dim:
        f = scaling.factor
        return yarn_mscale(f, scaling.mscale) / yarn_mscale(f, scaling.mscale_all_dim)
    return yarn_mscale(scaling.factor)


def rope_table(
    positions_BT: jax.Array, inv_freq: jax.Array, factor: float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """RoPE's cos and sin ``[B, T, 1, H/2]`` at ``positions`` (fp32), times ``factor`` (YaRN's
    ``rope_attention_factor``): what ``apply_rope`` rotates by. The forward computes them in
    each layer's body; the decode loop gathers them per step from a table of every slot's."""
    angles = positions_BT.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
    return jnp.cos(angles)[:, :, None, :] * factor, jnp.sin(angles)[:, :, None, :] * factor


def apply_rope(x_BTNH: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotates the two halves of each head (the Hugging Face ``rotate_half`` layout) by the
    angles of ``rope`` = ``rope_table(...)``."""
    cos, sin = rope
    x1, x2 = jnp.split(x_BTNH.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTNH.dtype)


def attention(
    q_BTNH: jax.Array, k_BKHS: jax.Array, v_BKSH: jax.Array, mask_BTS: jax.Array
) -> jax.Array:
    """Grouped-query softmax attention; scores and softmax in fp32. Returns ``[B, T, N, H]``.

    Keys come heads-first and transposed (``[B, K, H, S]``), values heads-first (``[B, K, S,
    H]``): the KV cache's layouts; or each as a tuple of chunks along S (``split_cache``:
    scores per chunk, one softmax across them, the chunks' products summed). Queries are
    grouped per kv head (``[B, K, A*T, H]``), so both products are plain batched matmuls with
    the batch dims leading and nothing to transpose: the same math as the ``einsum`` form,
    which XLA:CPU lowered with extra transposes (alone, 64 rows x 80 tokens, 4/2 heads of 64:
    forward 23 -> 16 ms, gradient 73 -> 45 ms on 2 cores; scores against ``[B, K, S, H]`` keys
    cost 4x the plain product at decode shapes).
    """
    b, t, n, h = q_BTNH.shape
    k_chunks, v_chunks = _chunks(k_BKHS), _chunks(v_BKSH)
    k, a = k_chunks[0].shape[1], n // k_chunks[0].shape[1]
    sizes = [chunk.shape[3] for chunk in k_chunks]
    grouped_q = q_BTNH.reshape(b, t, k, a, h).transpose(0, 2, 3, 1, 4).reshape(b, k, a * t, h)
    scores = [jnp.matmul(grouped_q, c, preferred_element_type=jnp.float32) for c in k_chunks]
    scores = jnp.concatenate(scores, axis=-1) * (h**-0.5)
    scores_BKATS = jnp.where(
        mask_BTS[:, None, None], scores.reshape(b, k, a, t, sum(sizes)), MASK_VALUE
    )
    probs = jax.nn.softmax(scores_BKATS, axis=-1).astype(v_chunks[0].dtype)
    probs = probs.reshape(b, k, a * t, sum(sizes))
    splits = jnp.split(probs, list(itertools.accumulate(sizes))[:-1], axis=-1)
    outs = [jnp.matmul(p, c) for p, c in zip(splits, v_chunks, strict=True)]
    grouped_out = functools.reduce(operator.add, outs)  # [B, K, A*T, H]
    return grouped_out.reshape(b, k, a, t, h).transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)


def _chunks(x) -> tuple[jax.Array, ...]:
    """A cache array as a tuple of chunks along its slots (``split_cache``: already one)."""
    return x if isinstance(x, tuple) else (x,)


def attend(
    q_BTNH: jax.Array,
    k_BKHS: jax.Array,
    v_BKSH: jax.Array,
    q_pos_BT: jax.Array,
    q_seg_BT: jax.Array,
    k_pos_BS: jax.Array,
    k_seg_BS: jax.Array,
    config: ModelConfig,
    *,
    q_offset: int | jax.Array | None = 0,
) -> jax.Array:
    """Attention by ``config.attention_impl`` (chosen per call at trace time). ``[B, T, N, H]``.

    The mask is ``attention_mask``'s, given by positions and segment ids (``[B, T]`` queries,
    ``[B, S]`` keys). ``q_offset``: the key slot of query 0; the Python int 0 with T == S means
    self-attention without a cache (the keys are the queries' own tokens), a traced write index
    means a KV cache (an upper bound of the rows' write indices; None: unknown, no block is
    skipped). "xla" is ``attention`` over the ``[B, T, S]`` mask (memory O(T * S));
    "blockwise", "cudnn" and "splash" are O(T + S) (``r1jax.model.attention``,
    ``attention_kernels``, where "auto" is resolved).
    """
    t, s = q_BTNH.shape[1], sum(chunk.shape[3] for chunk in _chunks(k_BKHS))
    self_attention = isinstance(q_offset, int) and q_offset == 0 and t == s
    impl = attention_kernels.choose_impl(
        config.attention_impl,
        t=t,
        s=s,
        self_attention=self_attention,
        config=config,
        backend=attention_kernels.target_platform(),
    )
    if impl == "xla":
        mask = attention_mask(q_pos_BT, q_seg_BT, k_pos_BS, k_seg_BS, config.sliding_window)
        return attention(q_BTNH, k_BKHS, v_BKSH, mask)
    if isinstance(k_BKHS, tuple):  # split_cache chunks: the kernels take one array
        k_BKHS = jnp.concatenate(k_BKHS, axis=3)
        v_BKSH = jnp.concatenate(v_BKSH, axis=2)
    if impl == "blockwise":
        return blockwise_attention(
            q_BTNH,
            k_BKHS,
            v_BKSH,
            q_pos_BT,
            q_seg_BT,
            k_pos_BS,
            k_seg_BS,
            q_offset=q_offset,
            sliding_window=config.sliding_window,
            block=config.attention_block,
        )
    return attention_kernels.fused_attention(
        impl, q_BTNH, k_BKHS, v_BKSH, q_pos_BT, q_seg_BT, config
    )


def swiglu(x_BTD: jax.Array, gate_DF, up_DF, down_FD) -> jax.Array:
    gate, up = dense(x_BTD, gate_DF), dense(x_BTD, up_DF)
    hidden = constrain(jax.nn.silu(gate) * up, ("batch", "seq", "act_mlp"))
    return dense(hidden, down_FD)


def attention_output(attn_BTNH: jax.Array, p: dict, config: ModelConfig) -> jax.Array:
    """The heads' outputs projected back to ``[B, T, D]`` (plus Qwen3's / Llama's optional
    bias)."""
    out = dense(attn_BTNH, p["o"], in_dims=2)
    return out + p["o_bias"].astype(out.dtype) if config.o_bias else out


def qkv_projection(x_BTD: jax.Array, p: dict, config: ModelConfig):
    """Returns ``q [B,T,N,H]``, ``k, v [B,T,K,H]`` (with the optional Qwen2 biases and Qwen3's
    per-head RMSNorm of queries and keys)."""
    q, k, v = dense(x_BTD, p["q"]), dense(x_BTD, p["k"]), dense(x_BTD, p["v"])
    if config.qkv_bias:
        q, k, v = q + p["q_bias"], k + p["k_bias"], v + p["v_bias"]
    if config.qk_norm:
        q = rms_norm(q, p["q_norm"], config.rms_norm_eps)
        k = rms_norm(k, p["k_norm"], config.rms_norm_eps)
    q = constrain(q, ("batch", "seq", "act_heads", "head_dim"))
    k = constrain(k, ("batch", "seq", "act_kv_heads", "head_dim"))
    v = constrain(v, ("batch", "seq", "act_kv_heads", "head_dim"))
    return q, k, v
