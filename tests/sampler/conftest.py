"""Fixtures of the sampler tests: the tiny model's params and the shared Sampler."""

import jax
import pytest
from sampler_common import BUCKETS, CONFIG

from r1jax.model import init_params
from r1jax.sampling import get_sampler


@pytest.fixture(scope="session")
def params():
    # Sharper logits than the tiny init gives, and non-zero biases, so every param matters.
    perturb = lambda p: jax.tree.map(
        lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape), p
    )
    return jax.jit(perturb)(init_params(CONFIG, jax.random.key(0)))


@pytest.fixture(scope="session")
def sampler():
    return get_sampler(CONFIG, buckets=BUCKETS)  # the one ``generate`` uses too
