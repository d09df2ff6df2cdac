"""Sampling methods on a fixed logits vector: chi-square against the truncated, renormalised
distribution computed independently in NumPy; pre-truncation log-probs; greedy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from r1jax.sampling import Categorical, Greedy, make_method
from r1jax.sampling.methods import argmax, request_keys

LOGITS_V = np.array([2.0, 1.6, 1.1, 0.7, 0.2, -0.1, -0.6, -1.0, -1.7, -2.5], np.float32)
DRAWS = 40_000


def reference_probs(logits, temperature=1.0, top_k=0, top_p=1.0):
    """Temperature -> top-k -> top-p (smallest sorted prefix with mass >= top_p), renormalised."""
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p)
    keep = np.zeros(len(p), bool)
    kept = order[:top_k] if top_k else order
    q = p[kept] / p[kept].sum()
    n = np.searchsorted(np.cumsum(q), top_p - 1e-12) + 1 if top_p < 1.0 else len(kept)
    keep[kept[:n]] = True
    out = np.where(keep, p, 0.0)
    return out / out.sum()


def _per_row(method):
    """The per-request scheme: each row its own key (``sample_rows``)."""

    def fn(logits_BV, key):
        rows_B = jnp.arange(logits_BV.shape[0])
        return method.sample_rows(logits_BV, request_keys(key, rows_B, jnp.zeros_like(rows_B)))

    return fn


def draw(method, seed=0, scheme="step"):
    fn = (
        jax.jit(lambda logits, key: method(logits, key))
        if scheme == "step"
        else jax.jit(_per_row(method))
    )
    logits_BV = jnp.broadcast_to(jnp.asarray(LOGITS_V), (DRAWS, LOGITS_V.size))
    tokens, logprobs = fn(logits_BV, jax.random.key(seed))
    return np.asarray(tokens), np.asarray(logprobs)


def chi2_pvalue(tokens, probs):
    counts = np.bincount(tokens, minlength=probs.size)
    support = probs > 0
    return stats.chisquare(counts[support], DRAWS * probs[support]).pvalue, counts


CASES = [
    dict(),  # plain categorical
    dict(temperature=0.5),
    dict(temperature=1.7, top_k=4),
    dict(top_p=0.8),
    dict(temperature=0.7, top_k=6, top_p=0.9),
    dict(temperature=1.3, top_k=1),
]


@pytest.mark.parametrize("scheme", ["step", "request"])
@pytest.mark.parametrize("flags", CASES, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
def test_frequencies_match_truncated_renormalised_distribution(flags, scheme):
    """Both schemes: a Gumbel draw per step (``method(logits, key)``), an inverse CDF per row
    (``sample_rows``, per-request keys)."""
    probs = reference_probs(LOGITS_V, **flags)
    tokens, logprobs = draw(make_method(**flags), scheme=scheme)
    pvalue, counts = chi2_pvalue(tokens, probs)
    assert np.all(counts[probs == 0] == 0), (counts, probs)  # truncated tokens never drawn
    if (probs > 0).sum() > 1:
        assert pvalue > 1e-3, (pvalue, counts, DRAWS * probs)
    # Log-probs are those of the temperature-scaled distribution *before* truncation.
    full = jax.nn.log_softmax(LOGITS_V / flags.get("temperature", 1.0))
    np.testing.assert_allclose(logprobs, np.asarray(full)[tokens], atol=1e-6)


@pytest.mark.parametrize("scheme", ["step", "request"])
def test_chi_square_has_power_against_the_untruncated_distribution(scheme):
    """Negative control: nucleus samples are clearly not from the full distribution."""
    tokens, _ = draw(Categorical(top_p=0.8), scheme=scheme)
    wrong = reference_probs(LOGITS_V)
    pvalue, _ = chi2_pvalue(tokens, wrong)
    assert pvalue < 1e-6


def test_different_keys_give_different_draws_same_key_same_draws():
    a, _ = draw(Categorical(), seed=0)
    b, _ = draw(Categorical(), seed=1)
    c, _ = draw(Categorical(), seed=0)
    assert np.mean(a != b) > 0.5
    np.testing.assert_array_equal(a, c)


def test_greedy_is_argmax_with_temperature_one_logprob():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 50)).astype(np.float32)
    tokens, logprobs = jax.jit(lambda x: Greedy()(x, None))(logits)
    np.testing.assert_array_equal(tokens, logits.argmax(-1))
    full = np.asarray(jax.nn.log_softmax(logits))
    np.testing.assert_allclose(logprobs, full[np.arange(16), logits.argmax(-1)], atol=1e-6)


def test_bad_flags_are_rejected():
    with pytest.raises(ValueError, match="temperature"):
        Categorical(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        Categorical(top_p=0.0)
    with pytest.raises(ValueError, match="top_k"):
        Categorical(top_k=-1)
    assert make_method(greedy=True, temperature=0.3) == Greedy()


def _numpy_nucleus_keep(z, top_p):
    """Keep-mask of top-p by sorting (float64), and the margin of its decision."""
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-z, kind="stable")
    before = np.cumsum(p[order]) - p[order]
    count = int(np.sum(before < top_p))
    cut = z[order][count - 1]
    return z >= cut, np.min(np.abs(before - top_p))


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.95, 0.999])
def test_nucleus_threshold_keeps_what_a_sort_keeps(top_p):
    """The bisection's cut equals the sort-and-cumsum cut on rows of many shapes: wide and
    narrow spreads, ties, negative zero, -inf entries (already-masked tokens)."""
    rng = np.random.default_rng(int(top_p * 1000))
    rows = [rng.normal(size=300) * scale for scale in (0.1, 1.0, 4.0, 30.0) for _ in range(20)]
    rows.append(np.repeat(rng.normal(size=30), 10))  # ties
    rows.append(np.concatenate([[-0.0, 0.0, 0.0], rng.normal(size=297)]))
    rows.append(np.where(rng.random(300) < 0.5, -np.inf, rng.normal(size=300) * 3))
    logits = np.stack(rows).astype(np.float32)
    masked = np.asarray(jax.jit(Categorical(top_p=top_p).truncated_logits)(logits))
    checked = 0
    for z, out in zip(logits, masked, strict=True):
        keep, margin = _numpy_nucleus_keep(z.astype(np.float64), top_p)
        if margin < 1e-6:  # float32 sums may decide a boundary token either way
            continue
        np.testing.assert_array_equal(np.isfinite(out), keep & np.isfinite(z))
        np.testing.assert_array_equal(out[keep], z[keep])
        checked += 1
    assert checked >= 0.75 * len(rows)


def test_argmax_is_numpys_first_maximum_with_ties_nans_and_masked_rows():
    """``methods.argmax`` (two plain reductions) picks what ``np.argmax`` picks: the first of
    tied maxima, the first NaN of a row holding one, index 0 of an all -inf row."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        x = rng.integers(-3, 3, (8, 40)).astype(np.float32)  # many ties
        if trial % 3 == 0:
            x[rng.random(x.shape) < 0.05] = np.nan
        if trial % 5 == 0:
            x[rng.integers(0, 8)] = -np.inf
        got = np.asarray(jax.jit(argmax)(x))
        np.testing.assert_array_equal(got, np.argmax(x, axis=-1))
        assert got.dtype == np.int32
