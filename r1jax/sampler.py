"""The sampler's public names (implementation in ``r1jax.sampling``)."""

from r1jax.sampling import (
    DEFAULT_BUCKETS,
    Categorical,
    Greedy,
    SampleOutput,
    Sampler,
    SamplingMethod,
    generate,
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
    "make_method",
]
