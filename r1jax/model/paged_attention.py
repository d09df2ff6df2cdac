"""Decode attention over the paged cache's store in place: JAX's Pallas paged-attention kernels.

TPU: ``jax.experimental.pallas.ops.tpu.paged_attention``; GPU: ``...ops.gpu.paged_attention``
(both maintained in JAX). Each takes queries ``[C, N, H]``, pages ``[K, pages, Z, H]``, a page
table ``[C, P]`` and lengths ``[C]``, and attends each row's keys ``[0, length)`` page by page,
reading only the pages a row's length reaches: the layout and masking of
``paged_cache.PagedKVCache`` (rows packed from token 0, positions equal to indices). The store
``[K, L, N, Z, H]`` is passed whole as ``[K, L * N, Z, H]`` with layer l's table offset by
``l * N``, so no layer is sliced out of it. The kernels scale nothing: the queries come scaled
by ``H ** -0.5`` in the compute dtype (the reference scales the fp32 scores; numbers agree
within that rounding, tested in interpret mode on CPU).

Served (``model.paged_attention``: "auto"; "gather" never; "kernel" or an error):
grouped-query attention without a sliding window (not MLA's absorbed latent head), on TPU with
a head dim that is a multiple of 128 and pages of a multiple of 8 tokens (Mosaic's tiling:
compiled for v5e from CPU, head dims 16 and 64 do not lower) and on GPU with power-of-two head
dims and pages of at least 16 tokens (Triton's tiles; checked in interpret mode only: no GPU
was at hand); elsewhere the cache gathers each row's keys (``paged_cache._gather_rows``).
Under a mesh the kernel runs per shard (``shard_map``: XLA cannot partition a Pallas call):
rows over the batch axes, KV heads (and their query groups) over theirs, the store's other
dims whole.
"""

from __future__ import annotations

import contextlib
import functools

import jax.numpy as jnp

from r1jax.config.model import ModelConfig
from r1jax.model.attention_kernels import _per_shard, target_platform

_BLOCK_TOKENS = 512  # keys per kernel block (TPU: pages_per_compute_block * Z)
_GPU_SPLITS = 16  # the GPU kernel's k_splits: partitions of a row's pages run in parallel


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, max(min(n, at_most), 1) + 1) if n % d == 0)


def paged_kernel(
    config: ModelConfig, page_size: int, *, platform: str | None = None, interpret: bool = False
):
    """``kernel(q [C, N, H], k_store, v_store, layer, table [C, P], lengths [C]) -> [C, N, H]``
    for ``paged_cache.paged_decode_states``, or None to gather: by ``config.paged_attention``
    ("auto": where a kernel lowers, see the module docstring; "kernel": a ValueError saying
    why where none does). ``platform``: the traced program's (default ``target_platform()``);
    ``interpret``: run the kernel in Pallas' interpreter (tests on CPU)."""
    if config.paged_attention == "gather":
        return None
    platform = platform or target_platform()
    why = _why_no_kernel(config, page_size, platform)
    if why and config.paged_attention == "kernel":
        raise ValueError(f"model.paged_attention='kernel': {why}")
    return (
        None if why else functools.partial(_paged_attention, platform=platform, interpret=interpret)
    )


def _why_no_kernel(config: ModelConfig, page_size: int, platform: str) -> str | None:
    h, z = config.head_dim, page_size
    if config.mla is not None or config.sliding_window is not None:
        return "the kernels serve grouped-query attention without a sliding window (not MLA)"
    if platform == "tpu" and not (h % 128 == 0 and z % 8 == 0):
        return f"the TPU kernel needs head_dim % 128 == 0 ({h}) and page size % 8 == 0 ({z})"
    if platform == "gpu" and not (h >= 16 and h & (h - 1) == 0 and z >= 16 and z & (z - 1) == 0):
        return f"the GPU kernel needs a power-of-two head_dim >= 16 ({h}) and page size ({z})"
    if platform not in ("tpu", "gpu"):
        return f"no Pallas paged-attention kernel on {platform}"
    return None


def _paged_attention(q_CNH, k_store, v_store, layer, table_CP, lengths_C, *, platform, interpret):
    c, heads, h = q_CNH.shape
    kh = k_store.shape[0]
    q_CKAH = q_CNH.reshape(c, kh, heads // kh, h)  # a KV head's query group stays together
    kernel = functools.partial(_per_device, platform=platform, interpret=interpret)
    store = ("act_kv_heads", None, None, None, None)
    axes = (("batch", "act_kv_heads", None, None), store, store, (), ("batch", None), ("batch",))
    args = (q_CKAH, k_store, v_store, layer, table_CP, lengths_C)
    return _per_shard(kernel, args, axes).reshape(c, heads, h)


def _per_device(q_CKAH, k_store, v_store, layer, table_CP, lengths_C, *, platform, interpret):
    """One device's rows and KV heads: the kernel on queries ``[C, K, A, H]``."""
    c, kh, a, h = q_CKAH.shape
    _, num_layers, n, z, _ = k_store.shape
    k_pages, v_pages = (store.reshape(kh, num_layers * n, z, h) for store in (k_store, v_store))
    q_CNH = (q_CKAH * jnp.asarray(h**-0.5, q_CKAH.dtype)).reshape(c, kh * a, h)
    table_CP = table_CP + layer * n
    per_block = _largest_divisor(table_CP.shape[1], max(_BLOCK_TOKENS // z, 1))
    if platform == "tpu":
        from jax.experimental.pallas import tpu as pltpu
        from jax.experimental.pallas.ops.tpu.paged_attention import paged_attention

        mode = pltpu.force_tpu_interpret_mode() if interpret else contextlib.nullcontext()
        with mode:
            out = paged_attention(
                q_CNH, k_pages, v_pages, lengths_C, table_CP, pages_per_compute_block=per_block
            )
    else:
        from jax.experimental.pallas.ops.gpu.paged_attention import paged_attention

        splits = _largest_divisor(table_CP.shape[1], _GPU_SPLITS)
        out = paged_attention(
            q_CNH, k_pages, v_pages, table_CP, lengths_C,
            pages_per_compute_block=_largest_divisor(table_CP.shape[1] // splits, per_block),
            k_splits=splits, interpret=interpret,
        )  # fmt: skip
    return out.reshape(c, kh, a, h)
