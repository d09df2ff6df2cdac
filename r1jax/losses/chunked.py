"""Per-position loss terms over chunks of positions, so ``[B, T, V]`` logits never exist at once.

Shapes: B = sequences, T = positions, C = chunk length, D = hidden, V = vocab.

Every loss here needs, per position, a few numbers computed from that position's logits alone:
the log-prob of the target, the entropy, a divergence to a teacher, an argmax. ``chunked_map``
computes them from the final hidden states ``[B, T, D]``: a ``lax.scan`` over ``ceil(T / C)``
chunks runs the LM head and the per-position function on ``[B, C, D]`` at a time, and the body
is rematerialised (``jax.checkpoint``), so the backward pass recomputes one chunk's logits at a
time too. Memory for the logits is then ``O(B * C * V)`` in both passes instead of
``O(B * T * V)``: at Qwen's V = 151,936 and T = 8,192 that is 4.6 GiB of fp32 per sequence (and
as much again for its softmax / gradient) against 0.6 GiB for C = 1024. (Compiled on CPU for
B = 4, T = 4096, D = 896, log-probs + gradient take 18.5 GiB of temp memory unchunked, 4.7 GiB
at C = 1024, 2.4 GiB at C = 512: ``tests/losses/test_chunked.py``.)

The per-position outputs (``[B, T]``) then feed the reductions of ``aggregation.py``, ``sft.py``
(``sft_reduce``), ``distill.py`` (``distill_reduce``) and ``grpo.py`` (``grpo_loss``) unchanged.
The chunk length is ``ModelConfig.logits_chunk`` (static); ``r1jax.train.objectives`` wires the
model's LM head into ``fn``.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def _split(x: jax.Array, n: int, chunk: int) -> jax.Array:
    """[B, T, ...] -> [n, B, C, ...], the tail zero-padded to n * C positions."""
    pad = n * chunk - x.shape[1]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return jnp.moveaxis(x.reshape(x.shape[0], n, chunk, *x.shape[2:]), 1, 0)


def _merge(y: jax.Array, length: int) -> jax.Array:
    """[n, B, C, ...] -> [B, T, ...]: the padded tail is dropped."""
    y = jnp.moveaxis(y, 0, 1)
    return y.reshape(y.shape[0], -1, *y.shape[3:])[:, :length]


def chunked_map(fn: Callable[[Any, Any], Any], consts: Any, xs: Any, *, chunk: int) -> Any:
    """``fn(consts, xs)`` computed over chunks of ``chunk`` positions, with remat per chunk.

    Args:
      fn: ``fn(consts, xs_chunk) -> outputs``: a pytree of per-position arrays ``[B, C, ...]``
        computed position by position (no mixing across positions), e.g. the LM head then
        ``token_logprobs``. Padded tail positions (zero inputs) must give finite values; they
        are dropped.
      consts: pytree used by every chunk (the LM-head weights ``[D, V]`` / ``[V, D]``);
        differentiable, their gradient is accumulated over chunks.
      xs: pytree of per-position inputs ``[B, T, ...]`` (hidden states ``[B, T, D]``, targets
        ``[B, T]``, top-k teacher entries ``[B, T, K]``), all with the same B and T.
      chunk: positions per chunk (static). 0, or ``chunk >= T``, calls ``fn(consts, xs)`` once
        on all T positions (the unchunked computation). T need not divide by ``chunk``: the
        tail is zero-padded and its outputs are dropped.

    Returns: ``fn``'s outputs for all T positions, ``[B, T, ...]``; equal (values and
    gradients, up to float reassociation) to ``fn(consts, xs)``.
    """
    length = jax.tree.leaves(xs)[0].shape[1]
    if chunk <= 0 or length <= chunk:
        return fn(consts, xs)
    n = -(-length // chunk)
    # prevent_cse=False: inside a scan the recomputation cannot be CSE'd away anyway.
    remat_fn = jax.checkpoint(fn, prevent_cse=False)

    def body(carry, xs_chunk):
        return carry, remat_fn(consts, xs_chunk)

    _, ys = jax.lax.scan(body, None, jax.tree.map(lambda x: _split(x, n, chunk), xs))
    return jax.tree.map(lambda y: _merge(y, length), ys)
