"""Shared helpers for the training tests: a very small model, meshes, synthetic batches.

Imported as ``from train_common import ...`` (pytest puts this directory on sys.path); not a
conftest, so that no test imports a conftest module by package path.
"""

import jax
import numpy as np

from r1jax import sharding
from r1jax.model import ModelConfig

TINY = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    max_position_embeddings=128,
)


def mesh_of(shape=None, n=None):
    """(data, fsdp, tensor) mesh over the first n devices (default: all of ``shape``)."""
    if shape is None:
        shape = (n, 1, 1)
    n = int(np.prod(shape))
    cfg = sharding.MeshConfig(*shape)
    return sharding.make_mesh(cfg, devices=jax.devices()[:n])


def sft_batch(seed: int, batch: int, length: int, vocab: int = 64) -> dict:
    """Random packed-looking SFT batch: 2 segments per row, loss on the second half of each."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, vocab, (batch, length), dtype=np.int32)
    half = length // 2
    seg = np.concatenate([np.ones((batch, half)), 2 * np.ones((batch, length - half))], 1)
    pos = np.concatenate([np.arange(half), np.arange(length - half)])[None].repeat(batch, 0)
    loss_mask = ((pos >= 3) & (rng.random((batch, length)) < 0.9)).astype(np.int32)
    return {
        "tokens": tokens,
        "loss_mask": loss_mask,
        "segment_ids": seg.astype(np.int32),
        "positions": pos.astype(np.int32),
    }


def grpo_batch(seed: int, batch: int, prompt_len: int, length: int, vocab: int = 64) -> dict:
    """Random GRPO batch with left-padded prompts and ragged completions."""
    rng = np.random.default_rng(seed)
    plen = rng.integers(2, prompt_len + 1, batch)
    prompt_mask = (np.arange(prompt_len)[None] >= prompt_len - plen[:, None]).astype(np.int32)
    clen = rng.integers(1, length + 1, batch)
    completion_mask = (np.arange(length)[None] < clen[:, None]).astype(np.int32)
    return {
        "prompt_tokens": rng.integers(4, vocab, (batch, prompt_len), dtype=np.int32) * prompt_mask,
        "prompt_mask": prompt_mask,
        "completion_tokens": rng.integers(4, vocab, (batch, length), dtype=np.int32),
        "completion_mask": completion_mask,
        "old_logprobs": (-4.2 + 0.1 * rng.standard_normal((batch, length))).astype(np.float32),
        "advantages": rng.standard_normal(batch).astype(np.float32),
    }
