"""The sampler on a mixture-of-experts model (Qwen3 attention, sigmoid group-limited routing,
shared experts, a dense first layer): greedy tokens equal argmax decoding by full forwards and
sampled log-probs equal a full-forward recompute. Routing is per token and dropless, so a
token's experts are the same whether it is decoded from the cache or recomputed."""

import jax
import numpy as np
import pytest

from r1jax.config.model import ModelConfig, MoEConfig
from r1jax.model import forward, init_params
from r1jax.sampling import Sampler, get_sampler

CONFIG = ModelConfig(
    vocab_size=64, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
    mlp_dim=48, qk_norm=True, tie_embeddings=False,
    moe=MoEConfig(
        num_experts=8, experts_per_token=2, expert_mlp_dim=16, router="sigmoid", expert_groups=4,
        groups_per_token=2, routed_scaling=2.0, shared_experts=1, dense_layers=1,
    ),
)  # fmt: skip
PROMPTS = [[5, 9, 13, 2, 7], [33, 4], [1, 2, 3, 4, 5, 6, 7]]
MAX_NEW = 8


def _rows(prompts, completions):
    width_p = max(len(p) for p in prompts)
    tokens = np.zeros((len(prompts), width_p + MAX_NEW), np.int32)
    mask = np.zeros_like(tokens)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        tokens[i, width_p - len(p) : width_p + len(c)] = list(p) + list(c)
        mask[i, width_p - len(p) : width_p + len(c)] = 1
    return tokens, mask, width_p


@jax.jit
def _full_logits(params, tokens, mask):
    positions = jax.numpy.maximum(jax.numpy.cumsum(mask, axis=1) - 1, 0)
    return forward(params, tokens, CONFIG, positions=positions, segment_ids=mask)[0]


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_moe_sampler_equals_full_forward_decoding():
    noise = lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape)
    params = jax.jit(lambda p: jax.tree.map(noise, p))(init_params(CONFIG, jax.random.key(0)))
    sampler = get_sampler(CONFIG, buckets=(8,))
    greedy = sampler(params, PROMPTS, rng=jax.random.key(0), max_new_tokens=MAX_NEW, greedy=True)
    expected = [[] for _ in PROMPTS]
    for _ in range(MAX_NEW):
        tokens, mask, start = _rows(PROMPTS, expected)
        logits = np.asarray(_full_logits(params, tokens, mask))
        for i, c in enumerate(expected):
            c.append(int(logits[i, start + len(c) - 1].argmax()))
    np.testing.assert_array_equal(greedy.tokens, np.array(expected))

    sampled = sampler(params, PROMPTS, rng=jax.random.key(3), max_new_tokens=MAX_NEW)
    tokens, mask, start = _rows(PROMPTS, sampled.completions())
    logits = np.asarray(_full_logits(params, tokens, mask))[:, start - 1 : start - 1 + MAX_NEW]
    logp = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    picked = np.take_along_axis(logp, sampled.tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(sampled.logprobs, picked, atol=1e-5)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_recorded_routing_is_each_fed_tokens_experts_and_the_train_step_replays_it():
    """``record_routing``: the sampler's experts per input token equal a full forward's over
    prompt + completion; after a param change (the policy update between sampling and the
    recompute) the GRPO objective's forward with the batch's ``routing`` uses exactly them,
    where its own choice would differ."""
    from r1jax.model.transformer import hidden_states_and_router
    from r1jax.train import objectives

    noise = lambda a: a + 0.3 * jax.random.normal(jax.random.key(1), a.shape)
    params = jax.jit(lambda p: jax.tree.map(noise, p))(init_params(CONFIG, jax.random.key(0)))
    sampler = Sampler(CONFIG, buckets=(8,), record_routing=True)
    out = sampler(params, PROMPTS, rng=jax.random.key(3), num_samples=2, max_new_tokens=MAX_NEW)
    b, p = out.prompt_tokens.shape
    assert out.routing.shape == (b, p + MAX_NEW, 2, 2) and out.routing.dtype == np.int16
    assert np.all(out.routing[:, -1] == -1)  # the last token is never fed back
    batch = {
        "prompt_tokens": out.prompt_tokens, "prompt_mask": out.prompt_mask,
        "completion_tokens": out.tokens, "routing": out.routing,
    }  # fmt: skip
    tokens, positions, seg = objectives.grpo_inputs(batch)
    _, _, full = jax.jit(hidden_states_and_router, static_argnums=2)(
        params, tokens, CONFIG, positions=positions, segment_ids=seg
    )
    recorded = np.moveaxis(out.routing, 2, 0)[:, :, :-1]  # [L', B, S - 1, K]
    own = np.asarray(full.experts)[:, :, :-1]
    real = np.concatenate([out.prompt_mask, np.ones_like(out.tokens)], 1)[:, :-1] > 0
    np.testing.assert_array_equal(recorded[:, real], own[:, real])

    updated = jax.tree.map(lambda a: a * 1.3, params)
    _, router = jax.jit(objectives.completion_hidden, static_argnums=2)(updated, batch, CONFIG)
    np.testing.assert_array_equal(np.asarray(router.experts)[:, :, :-1], recorded)
    _, own_router = jax.jit(objectives.completion_hidden, static_argnums=2)(
        updated, {k: v for k, v in batch.items() if k != "routing"}, CONFIG
    )
    assert np.any(np.asarray(own_router.experts)[:, :, :-1][:, real] != recorded[:, real])
    assert float(np.mean(router.replay_mismatch)) > 0
