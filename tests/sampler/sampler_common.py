"""The sampler tests' tiny model, prompts, and an independent no-cache reference decoder.

(A plain module, not conftest.py: test files import from it by a unique name.)
"""

import jax
import numpy as np

from r1jax.model import ModelConfig, forward

CONFIG = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    qkv_bias=True,
    tie_embeddings=False,
)
PROMPTS = [[5, 9, 13, 2, 7], [33, 4], [1, 2, 3, 4, 5, 6, 7]]  # P = 3, different lengths
MAX_NEW = 8
BUCKETS = (8, 16)


@jax.jit
def full_logits(params, tokens_BW, mask_BW):
    """Logits ``[B, W, V]`` of a full (no cache) forward over left-padded rows."""
    positions = jax.numpy.maximum(jax.numpy.cumsum(mask_BW, axis=1) - 1, 0)
    return forward(params, tokens_BW, CONFIG, positions=positions, segment_ids=mask_BW)[0]


def layout(prompts, completions, num_samples=1, new_width=MAX_NEW):
    """Rows ``prompt (left-padded to the longest) + completion`` for a full forward; returns
    tokens, mask ``[B, W]`` and the column of each row's first completion token."""
    rows = [p for p in prompts for _ in range(num_samples)]
    width_p = max(len(p) for p in prompts)
    width = width_p + new_width  # fixed, so the reference forward compiles once
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for i, (p, c) in enumerate(zip(rows, completions, strict=True)):
        tokens[i, width_p - len(p) : width_p + len(c)] = list(p) + list(c)
        mask[i, width_p - len(p) : width_p + len(c)] = 1
    return tokens, mask, width_p


def reference_greedy(params, prompts, max_new):
    """Argmax decoding by repeated full forwards, no cache: ``[P, max_new]`` ids."""
    out = [[] for _ in prompts]
    for _ in range(max_new):
        tokens, mask, start = layout(prompts, out, new_width=max_new)
        logits = np.asarray(full_logits(params, tokens, mask))
        for i, c in enumerate(out):
            c.append(int(logits[i, start + len(c) - 1].argmax()))
    return np.array(out)


class CharTokenizer:
    """Id i <-> one character ``chr(65 + i)``; enough of the Tokenizer protocol for stops."""

    pad_id, eos_id, bos_id = 0, None, None

    def encode(self, text, add_bos=False):
        return [ord(ch) - 65 for ch in text]

    def decode(self, ids, skip_special=True):
        return "".join(chr(65 + int(i)) for i in ids)

    def token_to_id(self, token):
        return ord(token) - 65 if len(token) == 1 else None
