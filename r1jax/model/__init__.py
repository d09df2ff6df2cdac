"""Llama/Qwen2/Qwen3(-MoE)-family decoder as pure functions over a param pytree.

Public API::

    config = ModelConfig(...)
    params = init_params(config, rng, mesh=None)
    logits, cache = forward(params, tokens, config, positions=..., segment_ids=..., cache=...)
    cache = init_cache(config, batch_size, max_length)
    config, params = hf.load(path, mesh=None); hf.save(path, config, params)
"""

from r1jax.config.model import ModelConfig, MoEConfig, RopeScaling
from r1jax.model import hf, moe
from r1jax.model.cache import KVCache, cache_shardings, init_cache
from r1jax.model.params import (
    abstract_params,
    init_params,
    logical_axes,
    param_shardings,
    param_specs,
)
from r1jax.model.transformer import forward, hidden_states, logits_from_hidden

__all__ = [
    "KVCache",
    "ModelConfig",
    "MoEConfig",
    "RopeScaling",
    "abstract_params",
    "cache_shardings",
    "forward",
    "hf",
    "hidden_states",
    "init_cache",
    "init_params",
    "logical_axes",
    "logits_from_hidden",
    "moe",
    "param_shardings",
    "param_specs",
]
