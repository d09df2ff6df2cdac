"""The interpretability trace: its last logit-lens read-out is the model's logits, attention
probabilities are causal distributions, and each layer's output is the scan's."""

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model import ModelConfig, forward, init_params
from r1jax.model.inspect import logit_lens, trace

CONFIG = ModelConfig(
    vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
    mlp_dim=64, qkv_bias=True, tie_embeddings=False,
)  # fmt: skip


def test_trace_reproduces_the_forward_pass():
    params = init_params(CONFIG, jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 64, (2, 9)), jnp.int32)
    traced = trace(params, tokens, CONFIG)
    assert traced.residuals.shape == (4, 2, 9, 32)
    assert traced.attention.shape == (3, 2, 4, 9, 9)
    lens = logit_lens(params, traced, CONFIG)
    logits, _ = forward(params, tokens, CONFIG)
    np.testing.assert_allclose(np.asarray(lens[-1]), np.asarray(logits), atol=1e-5)
    probs = np.asarray(traced.attention)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(probs, k=1) < 1e-6)  # no query attends a later key
    # One layer fewer: the trace's residual after layer 2 is that model's last hidden state.
    two = CONFIG.replace(num_layers=2)
    cut = dict(params, layers=jax.tree.map(lambda a: a[:2], params["layers"]))
    logits_two, _ = forward(cut, tokens, two)
    np.testing.assert_allclose(np.asarray(lens[2]), np.asarray(logits_two), atol=1e-5)
