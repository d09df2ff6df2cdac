"""The sampler's public names (implementation in ``r1jax.sampling``)."""

from r1jax.sampling import (
    DEFAULT_BUCKETS,
    Categorical,
    Greedy,
    SampleOutput,
    Sampler,
    SamplingMethod,
    generate,
    get_sampler,
    make_method,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "Categorical",
    "Greedy",
    "SampleOutput",
    "Sampler",
    "SamplingMethod",
    "generate",
    "get_sampler",
    "make_method",
]
