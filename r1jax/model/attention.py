"""Attention whose memory is linear in sequence length: blockwise online softmax in plain JAX.

Shape letters as in ``layers`` (B batch, T queries, S keys, N query heads, K kv heads,
A = N // K, H head dim); here also Q query blocks of ``bq`` rows and J key blocks of ``bk``
slots. Queries are grouped per kv head (``[B, K, A, T, H]``); keys ``[B, K, H, S]`` and values
``[B, K, S, H]`` come in the KV cache's layouts.

Who attends whom is ``attention_mask``'s rule, the one the reference (``layers.attention``) uses:
query t attends key s iff they share a nonzero segment id, ``k_pos <= q_pos`` and, with a
sliding window w, ``q_pos - k_pos < w``. A query allowed no key (padding, segment 0) gets zeros
here; the reference returns the mean of all values there. Nothing downstream reads those rows.

``blockwise_attention`` keeps only ``[B, K, A, bq, bk]`` scores at a time: a running max, sum
and fp32 accumulator per query (FlashAttention-2, Dao 2023). Its custom VJP saves q, k, v, the
output and the log-sum-exp ``[B, K, A, T]`` and recomputes the scores block by block, so forward
and backward temporaries are O(T + S), never O(T * S).

Skipping blocks. Given ``q_offset`` (query t sits at key slot ``q_offset + t``: 0 for self-
attention, the write index with a KV cache), key blocks wholly after a query block (and, with a
window, wholly before its reach) are skipped, roughly halving causal work, and a decode step
reads the cache only up to its length. That is exact only when ``index_ordered`` holds (each
segment one run of slots, positions +1 per slot); it is checked on the data at run time, and
every block is visited when it fails.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# Large finite negative: a fully masked row (a padding query) softmaxes to uniform, not NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(
    q_positions_BT: jax.Array,
    q_segments_BT: jax.Array,
    k_positions_BS: jax.Array,
    k_segments_BS: jax.Array,
    sliding_window: int | None = None,
) -> jax.Array:
    """Boolean ``[B, T, S]``: query t may attend key s.

    Causal by position within the same segment; segment id 0 marks padding (and empty cache
    slots), which no query attends.
    """
    same_segment = q_segments_BT[:, :, None] == k_segments_BS[:, None, :]
    key_valid = (k_segments_BS != 0)[:, None, :]
    delta = q_positions_BT[:, :, None] - k_positions_BS[:, None, :]
    mask = same_segment & key_valid & (delta >= 0)
    if sliding_window is not None:
        mask &= delta < sliding_window
    return mask


def index_ordered(segments_BS: jax.Array, positions_BS: jax.Array) -> jax.Array:
    """Scalar bool: in every row each nonzero segment id occupies one run of adjacent slots,
    ids increase along the row, and positions step by exactly 1 within a run.

    Then a key after a query's slot is never attended and slot distance equals position
    distance inside a segment: causal (and window) masks by slot index equal the positional
    ones. Left padding, packed rows, GRPO prompt + completion rows and the sampler's cache all
    hold it. ``[B, S]`` int inputs; O(B * S) work.
    """
    seg, pos = segments_BS, positions_BS
    same_run = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] != 0)
    steps_ok = ~same_run | (pos[:, 1:] == pos[:, :-1] + 1)
    run_start = (seg[:, 1:] != 0) & (seg[:, 1:] != seg[:, :-1])
    max_before = jax.lax.cummax(seg, axis=1)[:, :-1]
    increasing = ~run_start | (seg[:, 1:] > max_before)
    return jnp.all(steps_ok) & jnp.all(increasing)


def _kv_blocks(i, offset, ordered, bq, bk, nk, window):
    """Key blocks ``[lo, hi)`` query block i can attend (all of them unless ``ordered``)."""
    hi = jnp.minimum(nk, (offset + (i + 1) * bq - 1) // bk + 1)
    lo = 0 if window is None else jnp.maximum(0, (offset + i * bq - (window - 1)) // bk)
    return jnp.where(ordered, lo, 0), jnp.where(ordered, hi, nk)


def _q_blocks(j, offset, ordered, bq, bk, nq, window):
    """Query blocks ``[lo, hi)`` that can attend key block j (the inverse of ``_kv_blocks``)."""
    lo = jnp.maximum(0, (j * bk - offset) // bq)
    hi = nq if window is None else jnp.minimum(nq, -((offset - (j + 1) * bk - window + 1) // bq))
    return jnp.where(ordered, lo, 0), jnp.where(ordered, hi, nq)


def _slice(x, start, size, axis):
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=axis)


def _flash_forward(q, k, v, q_pos, q_seg, k_pos, k_seg, offset, ordered, window, bq, bk):
    """Returns ``out [B, K, A, T, H]`` (q's dtype) and ``lse [B, K, A, T]`` (fp32; 0 for rows
    attending nothing). Inputs padded so that ``bq | T`` and ``bk | S``."""
    b, kh, a, t, h = q.shape
    nq, nk, scale = t // bq, k.shape[3] // bk, h**-0.5

    def query_block(i):
        q_i = _slice(q, i * bq, bq, 3).reshape(b, kh, a * bq, h)
        qp, qs = _slice(q_pos, i * bq, bq, 1), _slice(q_seg, i * bq, bq, 1)

        def step(j, carry):
            m, l, acc = carry  # [B, K, A, bq], [B, K, A, bq], [B, K, A, bq, H] fp32
            k_j, v_j = _slice(k, j * bk, bk, 3), _slice(v, j * bk, bk, 2)
            mask = attention_mask(
                qp, qs, _slice(k_pos, j * bk, bk, 1), _slice(k_seg, j * bk, bk, 1), window
            )
            mask = mask[:, None, None]  # [B, 1, 1, bq, bk]
            scores = jnp.matmul(q_i, k_j, preferred_element_type=jnp.float32) * scale
            scores = jnp.where(mask, scores.reshape(b, kh, a, bq, bk), MASK_VALUE)
            m_new = jnp.maximum(m, scores.max(-1))
            p = jnp.where(mask, jnp.exp(scores - m_new[..., None]), 0.0)
            rescale = jnp.exp(m - m_new)
            pv = jnp.matmul(
                p.astype(v.dtype).reshape(b, kh, a * bq, bk),
                v_j,
                preferred_element_type=jnp.float32,
            )
            acc = acc * rescale[..., None] + pv.reshape(b, kh, a, bq, h)
            return m_new, l * rescale + p.sum(-1), acc

        init = (
            jnp.full((b, kh, a, bq), MASK_VALUE, jnp.float32),
            jnp.zeros((b, kh, a, bq), jnp.float32),
            jnp.zeros((b, kh, a, bq, h), jnp.float32),
        )
        lo, hi = _kv_blocks(i, offset, ordered, bq, bk, nk, window)
        m, l, acc = jax.lax.fori_loop(lo, hi, step, init)
        seen = l > 0
        safe_l = jnp.where(seen, l, 1.0)
        return (acc / safe_l[..., None]).astype(q.dtype), jnp.where(seen, m + jnp.log(safe_l), 0.0)

    out_Q, lse_Q = jax.lax.map(query_block, jnp.arange(nq))  # [Q, B, K, A, bq, (H)]
    out = jnp.moveaxis(out_Q, 0, 3).reshape(b, kh, a, t, h)
    return out, jnp.moveaxis(lse_Q, 0, 3).reshape(b, kh, a, t)


def _flash_backward(window, bq, bk, residuals, d_out):
    """FlashAttention-2 backward: for each key block, recompute the probabilities of the query
    blocks that reach it from the saved log-sum-exp; dq accumulates (fp32) in the carry."""
    q, k, v, out, lse, q_pos, q_seg, k_pos, k_seg, offset, ordered = residuals
    b, kh, a, t, h = q.shape
    nq, nk, scale = t // bq, k.shape[3] // bk, h**-0.5
    delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1)  # [B, K, A, T]
    swap = lambda x: jnp.swapaxes(x, -1, -2)
    mm = functools.partial(jnp.matmul, preferred_element_type=jnp.float32)

    def key_block(dq, j):
        k_j, v_j = _slice(k, j * bk, bk, 3), _slice(v, j * bk, bk, 2)
        kp, ks = _slice(k_pos, j * bk, bk, 1), _slice(k_seg, j * bk, bk, 1)

        def step(i, carry):
            dq, dk, dv = carry
            q_i = _slice(q, i * bq, bq, 3).reshape(b, kh, a * bq, h)
            do_i = _slice(d_out, i * bq, bq, 3).reshape(b, kh, a * bq, h)
            lse_i = _slice(lse, i * bq, bq, 3).reshape(b, kh, a * bq, 1)
            delta_i = _slice(delta, i * bq, bq, 3).reshape(b, kh, a * bq, 1)
            mask = attention_mask(
                _slice(q_pos, i * bq, bq, 1), _slice(q_seg, i * bq, bq, 1), kp, ks, window
            )
            mask = jnp.broadcast_to(mask[:, None, None], (b, 1, a, bq, bk)).reshape(
                b, 1, a * bq, bk
            )
            scores = mm(q_i, k_j) * scale  # [B, K, A*bq, bk]
            p = jnp.where(mask, jnp.exp(scores - lse_i), 0.0)
            dv = dv + mm(swap(p.astype(v.dtype)), do_i.astype(v.dtype))  # [B, K, bk, H]
            ds = p * (mm(do_i, swap(v_j)) - delta_i) * scale  # [B, K, A*bq, bk]
            ds = ds.astype(q.dtype)
            dq_i = mm(ds, swap(k_j)).reshape(b, kh, a, bq, h)
            dq = jax.lax.dynamic_update_slice_in_dim(
                dq, _slice(dq, i * bq, bq, 3) + dq_i, i * bq, 3
            )
            return dq, dk + mm(swap(q_i), ds), dv  # dk [B, K, H, bk]

        init = (dq, jnp.zeros((b, kh, h, bk), jnp.float32), jnp.zeros((b, kh, bk, h), jnp.float32))
        lo, hi = _q_blocks(j, offset, ordered, bq, bk, nq, window)
        dq, dk, dv = jax.lax.fori_loop(lo, hi, step, init)
        return dq, (dk.astype(k.dtype), dv.astype(v.dtype))

    dq, (dk_J, dv_J) = jax.lax.scan(key_block, jnp.zeros(q.shape, jnp.float32), jnp.arange(nk))
    dk = jnp.moveaxis(dk_J, 0, 3).reshape(k.shape)  # [J, B, K, H, bk] -> [B, K, H, S]
    dv = jnp.moveaxis(dv_J, 0, 2).reshape(v.shape)  # [J, B, K, bk, H] -> [B, K, S, H]
    return dq.astype(q.dtype), dk, dv, None, None, None, None, None, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(9, 10, 11))
def _flash(q, k, v, q_pos, q_seg, k_pos, k_seg, offset, ordered, window, bq, bk):
    return _flash_forward(q, k, v, q_pos, q_seg, k_pos, k_seg, offset, ordered, window, bq, bk)[0]


def _flash_fwd(q, k, v, q_pos, q_seg, k_pos, k_seg, offset, ordered, window, bq, bk):
    out, lse = _flash_forward(q, k, v, q_pos, q_seg, k_pos, k_seg, offset, ordered, window, bq, bk)
    return out, (q, k, v, out, lse, q_pos, q_seg, k_pos, k_seg, offset, ordered)


_flash.defvjp(_flash_fwd, _flash_backward)


def _pad(x: jax.Array, axis: int, size: int) -> jax.Array:
    """Zero-pads ``axis`` up to ``size`` (padded slots get segment 0: attended by no one)."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, widths) if size > x.shape[axis] else x


def blockwise_attention(
    q_BTNH: jax.Array,
    k_BKHS: jax.Array,
    v_BKSH: jax.Array,
    q_pos_BT: jax.Array,
    q_seg_BT: jax.Array,
    k_pos_BS: jax.Array,
    k_seg_BS: jax.Array,
    *,
    q_offset: int | jax.Array | None = None,
    sliding_window: int | None = None,
    block: int = 512,
) -> jax.Array:
    """Grouped-query attention with O(T + S) memory (forward and gradient). ``[B, T, N, H]``.

    Same inputs as ``layers.attention`` with the mask given by positions and segment ids
    (``[B, T]`` for queries, ``[B, S]`` for keys) instead of ``[B, T, S]``. ``q_offset``: the
    key slot of query 0 when the queries are also keys (0 without a cache, the write index
    with one), which lets whole blocks be skipped (see the module docstring); None visits all.
    T and S need not be multiples of ``block``: they are padded with segment-0 slots.
    """
    b, t, n, h = q_BTNH.shape
    kh, s = k_BKHS.shape[1], k_BKHS.shape[3]
    a = n // kh
    bq, bk = min(block, t), min(block, s)
    tp, sp = -(-t // bq) * bq, -(-s // bk) * bk
    q = _pad(q_BTNH.reshape(b, t, kh, a, h).transpose(0, 2, 3, 1, 4), 3, tp)
    if q_offset is None:
        offset, ordered = jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    else:
        offset, ordered = jnp.asarray(q_offset, jnp.int32), index_ordered(k_seg_BS, k_pos_BS)
    out = _flash(
        q,
        _pad(k_BKHS, 3, sp),
        _pad(v_BKSH, 2, sp),
        _pad(q_pos_BT.astype(jnp.int32), 1, tp),
        _pad(q_seg_BT.astype(jnp.int32), 1, tp),
        _pad(k_pos_BS.astype(jnp.int32), 1, sp),
        _pad(k_seg_BS.astype(jnp.int32), 1, sp),
        offset,
        ordered,
        sliding_window,
        bq,
        bk,
    )
    return out[:, :, :, :t].transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
