"""Continuous batching (``Sampler(slots=C)``) returns the static loop's rows for per-request
keys, whatever the number of slots; its log-probs equal a full-forward recompute; it compiles
once per shape; sharded equals unsharded; with long-tailed lengths it computes fewer slot-steps.
"""

import jax
import numpy as np
import pytest
from sampler_common import BUCKETS, CONFIG, full_logits, layout

from r1jax.model import param_shardings
from r1jax.sampling import Categorical, Greedy, Sampler, continuous
from r1jax.sharding import MeshConfig, make_mesh

PROMPTS = [[3, 1, 4, 1, 5], [9, 2, 6], [5, 3, 5, 8, 9, 7], [9]]  # 4 prompts x G=3 = 12 rows
METHODS = {"sampled": Categorical(temperature=0.9, top_k=20), "greedy": Greedy()}
KW = dict(num_samples=3, max_new_tokens=10, stop_token_ids=(7, 11, 51))


def _sample(sampler, params, method, rng=11, prompts=PROMPTS, **kw):
    return sampler(params, prompts, rng=jax.random.key(rng), method=METHODS[method], **KW, **kw)


@pytest.fixture(scope="module")
def static_rows(params):
    """The static loop with per-request keys, reading its whole cache: the reference rows."""
    sampler = Sampler(CONFIG, buckets=BUCKETS, keys="request", decode_windows=1)
    return {m: _sample(sampler, params, m) for m in METHODS}


def _assert_same_rows(out, ref, atol=0.0):
    np.testing.assert_array_equal(out.tokens, ref.tokens)
    np.testing.assert_array_equal(out.lengths, ref.lengths)
    np.testing.assert_array_equal(out.finish_reason, ref.finish_reason)
    np.testing.assert_array_equal(out.prompt_tokens, ref.prompt_tokens)
    np.testing.assert_allclose(out.logprobs, ref.logprobs, rtol=0, atol=atol)


SLOW = pytest.mark.slow
# The whole cache every step, as the reference reads it: rows then match bit for bit whatever
# the schedule (decode windows sum over prefixes chosen by it: ``test_windows.py``).
WHOLE = dict(decode_windows=1)


@pytest.mark.parametrize(
    "slots, method",
    [(1, "sampled"), (4, "greedy"), (7, "sampled")]
    + [pytest.param(*case, marks=SLOW) for case in [(1, "greedy"), (4, "sampled"), (7, "greedy")]]
    + [pytest.param(n, m, marks=SLOW) for n in (12, 16) for m in METHODS],
)
def test_continuous_rows_equal_the_static_loop(params, static_rows, method, slots):
    """1 slot runs the requests one after another, 4 and 7 refill slots mid-run (some rows stop
    at a stop token, so refills happen at different steps), 12 and 16 never refill. Log-probs
    are bit-identical, except with one slot: XLA:CPU multiplies a single row by a
    matrix-vector path (differences of 2e-6 seen)."""
    out = _sample(Sampler(CONFIG, buckets=BUCKETS, slots=slots, **WHOLE), params, method)
    ref = static_rows[method]
    assert 0 < (ref.finish_reason == "stop").sum() < len(ref.tokens)  # rows end at mixed times
    _assert_same_rows(out, ref, atol=0.0 if slots > 1 else 1e-5)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_long_tailed_budgets_fill_the_slots(params):
    """Rows limited to 2 new tokens but two to 20: the static batch computes every row until
    the longest ends, continuous batching refills the short rows' slots; same rows."""
    budget = [2] * 14 + [20, 20]
    prompts = [[3, 1, 4], [1, 5], [9, 2, 6, 5], [3, 5], [8], [9, 7, 9], [3, 2], [3, 8]]
    kw = dict(num_samples=2, max_new_tokens=20, row_budget=budget, method=METHODS["sampled"])
    static = Sampler(CONFIG, buckets=BUCKETS, keys="request", decode_windows=1)(
        params, prompts, rng=jax.random.key(4), **kw
    )
    out = Sampler(CONFIG, buckets=BUCKETS, slots=4, **WHOLE)(
        params, prompts, rng=jax.random.key(4), **kw
    )
    _assert_same_rows(out, static)
    np.testing.assert_array_equal(out.lengths, budget)
    assert list(out.finish_reason) == ["length"] * 16
    utilisation = lambda o: o.work()["useful_tokens"] / o.work()["slot_steps"]
    assert utilisation(static) == 68 / 320
    assert utilisation(out) == 68 / (16 + 4 * out.num_steps) > 0.6 > 2 * utilisation(static)
    # Requests 0-3 start at once; 4 slots of 2-token rows free one slot per step after that.
    assert list(out.queue_wait[:4]) == [0] * 4 and list(static.queue_wait or []) == []
    assert np.all(np.diff(out.queue_wait) >= 0) and out.queue_wait[-1] > 0
    # Shrinking to 2 then 1 slot once the queue is empty: the tail's 2 rows in a smaller batch.
    shrunk = Sampler(CONFIG, buckets=BUCKETS, slots=4, min_slots=1, **WHOLE)
    out = shrunk(params, prompts, rng=jax.random.key(4), **kw)
    _assert_same_rows(out, static, atol=1e-5)  # one row alone: XLA:CPU's matrix-vector path
    assert utilisation(out) > 0.9
    assert out.decode_slot_steps < 4 * out.num_steps


def test_slot_phases():
    assert continuous.slot_phases(64, 0) == (64,)
    assert continuous.slot_phases(64, 8) == (64, 32, 16, 8)
    assert continuous.slot_phases(6, 1) == (6, 3, 1)
    with pytest.raises(ValueError, match="min_slots=9"):
        Sampler(CONFIG, slots=8, min_slots=9)


def test_continuous_logprobs_equal_full_forward_recompute(params, static_rows):
    out = _sample(Sampler(CONFIG, buckets=BUCKETS, slots=5), params, "sampled")
    tokens, mask, start = layout(PROMPTS, out.completions(), 3, new_width=KW["max_new_tokens"])
    logits = np.asarray(full_logits(params, tokens, mask))[:, start - 1 : -1]
    logp = np.asarray(jax.nn.log_softmax(logits / 0.9, axis=-1))
    picked = np.take_along_axis(logp, out.tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(out.logprobs, np.where(out.mask == 1, picked, 0.0), atol=1e-5)


def test_per_request_keys_do_not_depend_on_the_batch(params, static_rows):
    """A request's tokens are the same when its prompt is sampled alone."""
    alone = _sample(
        Sampler(CONFIG, buckets=BUCKETS, slots=2, **WHOLE), params, "sampled", prompts=PROMPTS[:1]
    )
    np.testing.assert_array_equal(alone.tokens, static_rows["sampled"].tokens[:3])


def test_one_compile_across_calls_and_refill_patterns(params):
    sampler = Sampler(CONFIG, buckets=BUCKETS, slots=4)
    first = _sample(sampler, params, "sampled")
    counts = sampler.compile_counts()
    for rng in (1, 2, 3):  # other draws: other lengths, other refill steps
        out = _sample(sampler, params, "sampled", rng=rng)
        assert not np.array_equal(out.lengths, first.lengths)
    _sample(sampler, params, "sampled", prompts=[p[::-1] for p in PROMPTS])
    assert sampler.compile_counts() == counts == (1, 1)


@pytest.mark.parametrize("shape", [pytest.param((8, 1, 1), marks=SLOW), (2, 2, 2)], ids=str)
def test_sharded_continuous_equals_unsharded(params, static_rows, shape):
    mesh = make_mesh(MeshConfig(*shape))
    sharded_params = jax.device_put(params, param_shardings(CONFIG, mesh))
    sampler = Sampler(CONFIG, mesh=mesh, buckets=BUCKETS, slots=8, **WHOLE)
    out = _sample(sampler, sharded_params, "sampled")
    _assert_same_rows(out, static_rows["sampled"], atol=1e-5)


def test_continuous_needs_request_keys():
    with pytest.raises(ValueError, match="keys='request'"):
        Sampler(CONFIG, slots=4, keys="step")
    with pytest.raises(ValueError, match="slots=-1"):
        Sampler(CONFIG, slots=-1)
