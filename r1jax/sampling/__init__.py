"""Sampler: jitted prefill + ``lax.while_loop`` decode over a KV cache, for rollouts and eval.

Public API::

    out = generate(params, config, prompts, rng=key, num_samples=G, max_new_tokens=N, ...)
    sampler = Sampler(config, mesh=mesh); out = sampler(params, prompts, rng=key, ...)
    Sampler(config, slots=C)  # continuous batching: C decode slots fed from the request queue
    Greedy(), Categorical(temperature, top_k, top_p)  # methods: (logits_BV, key) -> tokens, logp
"""

from r1jax.sampling.methods import Categorical, Greedy, SamplingMethod, make_method
from r1jax.sampling.sampler import SAMPLER_BUCKETS, SampleOutput, Sampler, generate, get_sampler
from r1jax.sampling.stop import stop_sequences, truncate_at_stop_strings

__all__ = [
    "SAMPLER_BUCKETS",
    "Categorical",
    "Greedy",
    "SampleOutput",
    "Sampler",
    "SamplingMethod",
    "generate",
    "get_sampler",
    "make_method",
    "stop_sequences",
    "truncate_at_stop_strings",
]
