"""Decode windows for continuous batching (``windows.py``): each step attends over the smallest
cache prefix holding every busy slot's write, as slots grow and are refilled; the rows equal
the whole cache's to rounding (tokens exactly here), contiguous or paged, and the paged and
contiguous caches give the same rows bit for bit when they run the same schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG

from r1jax.sampling import Categorical, Greedy, Sampler
from r1jax.sampling import windows as windows_lib

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]
KW = dict(num_samples=3, max_new_tokens=24, stop_token_ids=(7, 11, 51))


def test_each_step_takes_the_smallest_window_holding_the_writes():
    """A toy loop: two slots grow by one column a step and are refilled after step 9 (at 2
    and 4 columns). Each step's window is the smallest end above both lengths: up as they
    grow, down after the refills; the loop stops when its condition does, mid-window."""
    ends = (8, 16, 24)

    def step(s, window):
        length, step_i, log = s
        log = log.at[step_i].set(window)
        length = length + 1
        length = jnp.where(step_i == 9, jnp.asarray([2, 4]), length)
        return length, step_i + 1, log

    state = (jnp.asarray([6, 3]), jnp.asarray(0), jnp.zeros((20,), jnp.int32))
    needed = lambda s: windows_lib.live_end(s[0], jnp.ones((2,), bool))
    run = jax.jit(
        lambda s: windows_lib.windowed_while(lambda s: s[1] < 20, step, s, ends=ends, needed=needed)
    )
    length, steps, log = run(state)
    assert int(steps) == 20
    want, lengths = [], np.asarray([6, 3])
    for i in range(20):
        want.append(min(e for e in ends if e > lengths.max()))
        lengths = lengths + 1
        if i == 9:
            lengths = np.asarray([2, 4])
    np.testing.assert_array_equal(log, want)
    assert want[:3] == [8, 8, 16] and want[9:11] == [16, 8] and want[-1] == 16


def test_window_ends_are_whole_pages_within_the_reach():
    assert windows_lib.window_ends(8, 24, 4) == (16, 24, 32)
    assert windows_lib.window_ends(8, 24, 4, multiple=5) == (20, 25, 35)
    assert windows_lib.window_ends(512, 32256, 4, multiple=512) == (8704, 16896, 25088, 32768)
    assert windows_lib.window_ends(8, 24, 1) == (32,)


def _sample(params, method, **kw):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4, **kw)
    return sampler(params, PROMPTS, rng=jax.random.key(5), method=method, **KW)


@pytest.mark.parametrize(
    "method",
    [Greedy(), pytest.param(Categorical(temperature=0.9, top_k=20), marks=pytest.mark.slow)],
    ids=["greedy", "sampled"],
)
def test_windowed_rows_equal_the_whole_caches(params, method):
    """Greedy and sampled, 4 slots refilled mid-run over 24 new tokens (windows of 16, 24 and
    32 columns): the same tokens as reading the whole cache, log-probs to rounding; (sampled)
    a paged cache with pages to spare runs the same schedule and gives the contiguous rows bit
    for bit."""
    whole = _sample(params, method, decode_windows=1)
    windowed = _sample(params, method, decode_windows=4)
    for field in ("tokens", "lengths", "finish_reason"):
        np.testing.assert_array_equal(getattr(windowed, field), getattr(whole, field))
    np.testing.assert_allclose(windowed.logprobs, whole.logprobs, atol=1e-5)
    assert 0 < (whole.finish_reason == "stop").sum() < len(whole.tokens)
    if isinstance(method, Greedy):
        return  # (the paged cache's check runs with the sampled case: CI's slow step)
    paged = _sample(params, method, decode_windows=4, page_size=4)
    for field in ("tokens", "lengths", "logprobs"):
        np.testing.assert_array_equal(getattr(paged, field), getattr(windowed, field))
