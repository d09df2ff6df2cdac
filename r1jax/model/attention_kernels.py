"""Fused attention kernels behind ``ModelConfig.attention_impl``, and the choice among them.

"cudnn": cuDNN flash attention through ``jax.nn.dot_product_attention(implementation="cudnn")``
(GPU; bf16/fp16; head dim a multiple of 8, at most 128). Its public API masks only causally by
slot index plus per-row valid lengths (right padding), with no segment ids, so it serves rows
holding ONE sequence: left padding is rotated to the right before the call and back after.
"splash": Pallas splash attention (``jax.experimental.pallas.ops.tpu.splash_attention``, TPU;
interpret mode elsewhere) with a causal or local mask by slot index and segment ids, so packed
rows and left padding too; under an ambient mesh it runs per shard (``shard_map`` over the batch
and kv-head axes of the sharding rules).

Both mask by slot index, which equals the model's positional mask only when the positions are
laid out in order (``attention.index_ordered``; cuDNN also needs one sequence per row). That is
a property of the data: it is checked at run time and, when it fails, the call takes the
blockwise path instead (``lax.cond``; both are compiled). Both serve self-attention only (no KV
cache: T == S, the queries are the keys).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from r1jax.model.attention import _pad, blockwise_attention, index_ordered
from r1jax.sharding import current_rules


def cudnn_fits(head_dim: int, dtype) -> bool:
    """cuDNN flash attention's static constraints (``check_is_flash_attention`` in JAX)."""
    return jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim % 8 == 0 and head_dim <= 128


def target_platform() -> str:
    """The platform the traced program is for: the ambient mesh's devices' (so a TPU slice
    planned from a CPU host compiles what the slice runs: splash), else the default backend."""
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    return getattr(device, "platform", None) or jax.default_backend()


def choose_impl(impl: str, *, t: int, s: int, self_attention: bool, config, backend: str) -> str:
    """The implementation one call runs: ``impl`` = ``config.attention_impl``.

    "auto": the reference ("xla") while its scores are small (``t * s <= attention_block ** 2``:
    short sequences, decode steps, whose numbers then stay the reference's), else splash on TPU
    and cuDNN on GPU for self-attention, else blockwise. An explicit "cudnn" or "splash" call
    with a KV cache (not self-attention) runs blockwise: neither kernel takes positions.
    """
    block = config.attention_block
    if impl == "auto":
        if t * s <= block * block:
            return "xla"
        if self_attention and backend == "tpu":
            return "splash"
        if self_attention and backend == "gpu" and cudnn_fits(config.head_dim, config.dtype):
            return "cudnn"
        return "blockwise"
    if impl in ("cudnn", "splash") and not self_attention:
        return "blockwise"
    if impl == "cudnn" and (backend != "gpu" or not cudnn_fits(config.head_dim, config.dtype)):
        raise ValueError(
            f"model.attention_impl='cudnn' needs a GPU (backend is {backend!r}), "
            f"compute_dtype bfloat16/float16 (got {config.compute_dtype!r}) and head_dim a "
            f"multiple of 8 up to 128 (got {config.head_dim}); use 'auto' or 'blockwise'"
        )
    return impl


def single_sequence(segments_BT: jax.Array, positions_BT: jax.Array) -> jax.Array:
    """Scalar bool: ``index_ordered`` and every row holds exactly one run of nonzero segment."""
    seg = segments_BT
    starts = (seg != 0) & jnp.concatenate(
        [jnp.ones_like(seg[:, :1], bool), seg[:, 1:] != seg[:, :-1]], axis=1
    )
    return index_ordered(seg, positions_BT) & jnp.all(jnp.sum(starts, axis=1) == 1)


def cudnn_attention(
    q_BTNH, k_BKHS, v_BKSH, segments_BT, *, sliding_window=None, implementation="cudnn"
):
    """cuDNN attention of rows holding one sequence each (``single_sequence``). ``[B, T, N, H]``.

    Each row is rotated so its sequence starts at slot 0 (left padding moves to the right),
    masked causally with its length, and rotated back; padding rows get zeros.
    ``implementation="xla"`` runs JAX's reference of the same call (the CPU tests)."""
    b, t = segments_BT.shape
    valid_BT = segments_BT != 0
    start_B1 = jnp.argmax(valid_BT, axis=1)[:, None]
    length_B = jnp.sum(valid_BT, axis=1).astype(jnp.int32)
    rotate = lambda x, idx: jnp.take_along_axis(x, idx[:, :, None, None], axis=1)
    forward_BT = (jnp.arange(t)[None] + start_B1) % t
    out = jax.nn.dot_product_attention(
        rotate(q_BTNH, forward_BT),
        rotate(k_BKHS.transpose(0, 3, 1, 2), forward_BT),  # [B, S, K, H]
        rotate(v_BKSH.transpose(0, 2, 1, 3), forward_BT),
        is_causal=True,
        query_seq_lengths=length_B,
        key_value_seq_lengths=length_B,
        local_window_size=None if sliding_window is None else (sliding_window - 1, 0),
        implementation=implementation,
    )
    out = rotate(out, (jnp.arange(t)[None] - start_B1) % t)
    return jnp.where(valid_BT[:, :, None, None], out, 0).astype(q_BTNH.dtype)


def _splash_kernel(length: int, heads: int, window: int | None, block: int, interpret: bool):
    """An MQA splash kernel: q ``[A, T, H]``, k and v ``[T, H]``, segment ids ``[T]``. Built
    per trace (not cached): it holds its block tables as arrays of the trace it is made in."""
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    shape = (length, length)
    head_mask = sa.CausalMask(shape) if window is None else sa.LocalMask(shape, (window - 1, 0), 0)
    sizes = dict.fromkeys(
        ("block_q", "block_kv", "block_kv_compute", "block_q_dkv", "block_kv_dkv"), block
    )
    sizes.update(block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
    return sa.make_splash_mqa_single_device(
        mask=sa.MultiHeadMask([head_mask] * heads),
        block_sizes=sa.BlockSizes(**sizes),
        interpret=interpret,
    )


def _per_shard(fn, args, logical_axes):
    """``fn(*args)`` per shard (``shard_map``) under an ambient mesh: a Pallas call has no
    partitioning rule, GSPMD would gather its operands. All outputs are laid out as args[0]."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return fn(*args)
    rules, sizes = current_rules(), dict(mesh.shape)
    specs = tuple(rules.spec(ax, x.shape, sizes) for x, ax in zip(args, logical_axes, strict=True))
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=specs[0], check_vma=False)(*args)


def splash_attention(
    q_BTNH, k_BKHS, v_BKSH, segments_BT, *, sliding_window=None, block=512, interpret=None
):
    """Splash attention, causal by slot within segments (``index_ordered`` data). ``[B, T, N, H]``;
    padding rows get zeros. T is padded to a multiple of the block (a multiple of 128)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import SegmentIds

    b, t, n, h = q_BTNH.shape
    kh = k_BKHS.shape[1]
    a = n // kh
    blk = max(128, min(block, -(-t // 128) * 128) // 128 * 128)
    tp = -(-t // blk) * blk
    if interpret is None:
        interpret = jax.default_backend() != "tpu"
    kernel = _splash_kernel(tp, a, sliding_window, blk, interpret)
    scaled = (q_BTNH * jnp.asarray(h**-0.5, q_BTNH.dtype)).reshape(b, t, kh, a, h)
    q = _pad(scaled.transpose(0, 2, 3, 1, 4), 3, tp)  # [B, K, A, T, H]
    k, v = _pad(k_BKHS.transpose(0, 1, 3, 2), 2, tp), _pad(v_BKSH, 2, tp)  # [B, K, T, H]
    seg = _pad(segments_BT.astype(jnp.int32), 1, tp)

    def per_device(q, k, v, seg):
        one = lambda q, k, v, seg: kernel(q, k, v, segment_ids=SegmentIds(seg, seg))
        return jax.vmap(jax.vmap(one, in_axes=(0, 0, 0, None)))(q, k, v, seg)

    heads = ("batch", "act_kv_heads", None, None)
    axes = ((*heads, None), heads, heads, ("batch", None))
    out = _per_shard(per_device, (q, k, v, seg), axes)[:, :, :, :t]
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
    return jnp.where((segments_BT != 0)[:, :, None, None], out, 0).astype(q_BTNH.dtype)


def fused_attention(impl, q_BTNH, k_BKHS, v_BKSH, positions_BT, segments_BT, config):
    """Self-attention by "cudnn" or "splash" where the data allow it (checked at run time),
    else by ``blockwise_attention``. ``[B, T, N, H]``."""
    window, block = config.sliding_window, config.attention_block
    if impl == "cudnn":
        fits = single_sequence(segments_BT, positions_BT)
        kernel = functools.partial(cudnn_attention, sliding_window=window)
    else:
        fits = index_ordered(segments_BT, positions_BT)
        kernel = functools.partial(splash_attention, sliding_window=window, block=block)
    pos, seg = positions_BT, segments_BT

    def fallback(q, k, v):
        return blockwise_attention(
            q, k, v, pos, seg, pos, seg, q_offset=0, sliding_window=window, block=block
        )

    return jax.lax.cond(
        fits, lambda q, k, v: kernel(q, k, v, seg), fallback, q_BTNH, k_BKHS, v_BKSH
    )
