"""``threefry.unrolled``: JAX's threefry bits and Gumbel draws, bit for bit, through the
unrolled hash; keys of other implementations untouched. (The tests' default keys are "rbg",
tests/conftest.py: threefry keys are made explicitly here.)"""

import jax
import numpy as np
import pytest

from r1jax.sampling import Categorical, threefry

THREEFRY = "threefry2x32"


@pytest.mark.parametrize("shape", [(64, 1024), (3, 5, 7), (1,), (2, 75968)], ids=str)
def test_unrolled_keys_draw_jaxs_bits_and_gumbels(shape):
    for seed in (0, 7, 2**31 + 5):
        key = jax.random.fold_in(jax.random.key(seed, impl=THREEFRY), 3)
        fast = threefry.unrolled(key)
        assert str(fast.dtype) == "key<fru>"  # threefry.UNROLLED
        np.testing.assert_array_equal(jax.random.bits(fast, shape), jax.random.bits(key, shape))
        np.testing.assert_array_equal(jax.random.gumbel(fast, shape), jax.random.gumbel(key, shape))
    np.testing.assert_array_equal(  # JAX's own path for other widths, split and fold-in
        jax.random.bits(fast, shape, jax.numpy.uint16), jax.random.bits(key, shape, "uint16")
    )
    np.testing.assert_array_equal(
        jax.random.key_data(jax.random.split(fast)), jax.random.key_data(jax.random.split(key))
    )


def test_other_keys_are_untouched_and_sampling_is_jaxs_gumbel_max():
    rbg = jax.random.key(0, impl="rbg")
    assert threefry.unrolled(rbg) is rbg
    logits = jax.random.normal(jax.random.key(1), (16, 50))
    key = jax.random.key(2, impl=THREEFRY)
    tokens, _ = jax.jit(Categorical(temperature=0.7))(logits, key)
    expected = np.argmax(logits / 0.7 + jax.random.gumbel(key, logits.shape), axis=-1)
    np.testing.assert_array_equal(tokens, expected)
