"""Decode windows for continuous batching: each step attends over the smallest of a few static
cache prefixes that holds every busy slot's next write.

The static loop's rows grow together, so its phases attend over growing cache prefixes one
after another (``loop.decode_windows``). Slots do not: a refilled slot starts again at the
prompt's end. Here a step's window is the smallest of ``ends`` past every busy slot's write
index (its ``length``): an outer ``while_loop`` runs one inner ``while_loop`` per window in
turn, each stepping while its window is the smallest that fits (the others run no step). One
compiled step per window, the choice made between inner loops, never per layer. (Not a
``lax.switch`` of the inner loops: compiled for v5e, its branches held a second copy of the
state, the 1.5B paged sampler at 32k 4.61 -> 6.36 GiB per chip.) At 32,768 tokens per slot, a
step whose slots hold 4,000 tokens reads an eighth of the cache, not all of it.

A window sums the attention's terms over a shorter span: the same terms as the whole cache
(the rest are masked), in another order, so rows can differ from ``windows=1`` by rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from r1jax.sampling.loop import decode_windows


def window_ends(prompt_len: int, max_new: int, count: int, multiple: int = 1) -> tuple[int, ...]:
    """``loop.decode_windows``' prefixes, each rounded up to ``multiple`` (a page size) and
    capped at the cache's reach (``prompt_len + max_new`` rounded up alike)."""
    reach = -(-(prompt_len + max_new) // multiple) * multiple
    ends = decode_windows(prompt_len, max_new, max(count, 1))
    return tuple(sorted({min(reach, -(-end // multiple) * multiple) for end in ends}))


def live_end(length_C: jax.Array, busy_C: jax.Array) -> jax.Array:
    """The cache columns the busy slots' next writes need: their largest ``length`` + 1."""
    return jnp.max(jnp.where(busy_C, length_C, 0)) + 1


def windowed_while(
    keep_going: Callable, step: Callable, state, *, ends: tuple[int, ...], needed: Callable
):
    """``while keep_going(s): s = step(s, window)``, ``window`` the smallest of ``ends`` that
    is at least ``needed(s)`` (int32 scalar; the last end when none is). With one end: one
    plain ``while_loop``; with W: an outer loop around W inner loops, one per window."""
    if len(ends) == 1:
        return jax.lax.while_loop(keep_going, lambda s: step(s, ends[0]), state)
    ends_W = jnp.asarray(ends, jnp.int32)
    pick = lambda s: jnp.minimum(jnp.searchsorted(ends_W, needed(s)), len(ends) - 1)

    def phases(s):  # each window's loop in turn; one whose window is not the pick runs 0 steps
        for index, end in enumerate(ends):
            fits = lambda s, index=index: keep_going(s) & (pick(s) == index)
            s = jax.lax.while_loop(fits, lambda s, end=end: step(s, end), s)
        return s

    return jax.lax.while_loop(keep_going, phases, state)
