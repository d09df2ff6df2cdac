"""``bucket_length``: the one prompt-length bucketing rule of the RL batches and the sampler."""

import pytest

from r1jax.data import PROMPT_BUCKETS, bucket_length
from r1jax.sampling import SAMPLER_BUCKETS


@pytest.mark.parametrize(
    "n, buckets, extend, want",
    [
        (1, (64, 128), False, 64),
        (64, (64, 128), False, 64),
        (65, (64, 128), False, 128),
        (65, (128, 64), False, 128),  # any order
        (129, (64, 128), True, 256),  # beyond the largest: the next multiple of it
        (300, (64, 128), True, 384),
        (33, SAMPLER_BUCKETS, True, 64),
        (512, PROMPT_BUCKETS, False, 512),
    ],
)
def test_smallest_bucket_that_fits(n, buckets, extend, want):
    assert bucket_length(n, buckets, extend=extend) == want


def test_beyond_the_largest_bucket_raises_without_extend():
    with pytest.raises(ValueError, match="exceeds the largest bucket 128"):
        bucket_length(129, (64, 128))
