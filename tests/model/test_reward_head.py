"""The reward model's scalar head: scores against a naive per-row forward, padding, params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, abstract_params, init_params
from r1jax.model.reward import sequence_scores, with_score_head
from r1jax.model.transformer import hidden_states

CONFIG = ModelConfig(
    vocab_size=64, hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
    mlp_dim=64, qkv_bias=True, tie_embeddings=False, score_head=True,
)  # fmt: skip


def _params(seed=0):
    params = init_params(CONFIG, jax.random.key(seed))
    rng = np.random.default_rng(seed)  # random biases and norms: a missing term shows
    for name in ("q_bias", "k_bias", "v_bias", "attn_norm", "mlp_norm"):
        leaf = params["layers"][name]
        params["layers"][name] = leaf + jnp.asarray(rng.normal(0, 0.3, leaf.shape), leaf.dtype)
    return params


def test_score_head_replaces_the_lm_head():
    tree = abstract_params(CONFIG)
    assert tree["score"].shape == (32,) and "lm_head" not in tree
    assert "lm_head" in abstract_params(CONFIG.replace(score_head=False))
    n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
    assert n == CONFIG.num_params


def test_scores_equal_a_naive_forward_of_each_row_alone():
    params = _params()
    rng = np.random.default_rng(1)
    lengths = [5, 12, 1, 16]
    tokens = rng.integers(1, 64, (4, 16)).astype(np.int32)
    for i, n in enumerate(lengths):
        tokens[i, n:] = 0  # padding
    scores = sequence_scores(params, jnp.asarray(tokens), jnp.asarray(lengths) - 1, CONFIG)
    for i, n in enumerate(lengths):
        hidden, _ = hidden_states(params, jnp.asarray(tokens[i : i + 1, :n]), CONFIG)
        want = float(hidden[0, -1] @ params["score"])
        assert abs(float(scores[i]) - want) < 1e-5, (i, float(scores[i]), want)


def test_scores_do_not_depend_on_padding_width_or_pad_ids():
    params = _params(2)
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, 64, (3, 10)).astype(np.int32)
    last = jnp.asarray([9, 4, 6])
    a = sequence_scores(params, jnp.asarray(tokens), last, CONFIG)
    wide = np.concatenate([tokens, rng.integers(1, 64, (3, 22)).astype(np.int32)], axis=1)
    b = sequence_scores(params, jnp.asarray(wide), last, CONFIG)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_needs_a_score_head():
    plain = CONFIG.replace(score_head=False)
    params = init_params(plain, jax.random.key(0))
    with pytest.raises(ValueError, match="score_head"):
        sequence_scores(params, jnp.zeros((1, 4), jnp.int32), jnp.zeros(1, jnp.int32), plain)


def test_with_score_head_keeps_the_trunk_of_a_policy():
    policy = init_params(CONFIG.replace(score_head=False), jax.random.key(4))
    params = with_score_head(policy, CONFIG, jax.random.key(5))
    assert "lm_head" not in params and params["score"].shape == (32,)
    assert jax.tree.structure(params) == jax.tree.structure(abstract_params(CONFIG))
    np.testing.assert_array_equal(params["layers"]["q"], policy["layers"]["q"])
    assert float(jnp.std(params["score"])) > 0
