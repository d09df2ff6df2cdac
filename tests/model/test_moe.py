"""The mixture-of-experts layer: grouped matmuls equal the per-expert loop (values and gradients),
DeepSeek-V3 routing equals transformers' module, sharded (data x fsdp x expert x tensor) equals
unsharded for forward and gradients, and the sampler decodes a MoE model as a full forward."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import sharding
from r1jax.config.model import ModelConfig, MoEConfig
from r1jax.model import forward, init_params, moe

SOFTMAX = MoEConfig(num_experts=6, experts_per_token=3, expert_mlp_dim=16)
DEEPSEEK = MoEConfig(
    num_experts=8, experts_per_token=3, expert_mlp_dim=16, router="sigmoid", expert_groups=4,
    groups_per_token=2, routed_scaling=2.5, shared_experts=2,
)  # fmt: skip


def _layer(moe_config, seed=0, d=32):
    config = ModelConfig(hidden_size=d, num_layers=1, qk_norm=True, moe=moe_config)
    params = init_params(config.replace(init_std=0.15), jax.random.key(seed))["layers"]
    p = jax.tree.map(lambda a: a[0], params)
    p["router"] = 0.2 * jax.random.normal(jax.random.key(seed + 3), p["router"].shape)
    if "router_bias" in p:
        p["router_bias"] = 0.1 * jax.random.normal(
            jax.random.key(seed + 1), (p["router"].shape[1],)
        )
    x = jax.random.normal(jax.random.key(seed + 2), (4, 7, d))
    return p, x


@pytest.mark.parametrize("moe_config", [SOFTMAX, DEEPSEEK], ids=["softmax", "sigmoid_groups"])
def test_grouped_matmuls_equal_the_per_expert_loop_values_and_gradients(moe_config):
    p, x = _layer(moe_config)
    x_ND = x.reshape(-1, x.shape[-1])
    weights, experts, _, _ = moe.route(x_ND, p["router"], p.get("router_bias"), moe_config)
    assert len(np.unique(np.asarray(experts))) == moe_config.num_experts  # every expert used
    names = ("expert_gate", "expert_up", "expert_down")

    def run(fn, x_ND, w):
        return jnp.sum(jnp.sin(fn(x_ND, weights, experts, *w)))

    ws = tuple(p[n] for n in names)
    np.testing.assert_allclose(
        moe.experts_grouped(x_ND, weights, experts, *ws),
        moe.experts_loop(x_ND, weights, experts, *ws),
        atol=1e-5,
    )
    grads = jax.grad(run, argnums=(1, 2))
    g_grouped, g_loop = grads(moe.experts_grouped, x_ND, ws), grads(moe.experts_loop, x_ND, ws)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    jax.tree.map(close, g_grouped, g_loop)


def test_experts_under_vmap_give_each_elements_rows():
    """What ``moe.merged_under_vmap`` runs (the paged sampler's shards): ``vmap`` over tokens
    runs them as one batch, over expert weights too one element at a time; each equals
    ``experts_grouped`` of that element alone."""
    moe_config = DEEPSEEK
    p, x = _layer(moe_config)
    x_ND = x.reshape(-1, x.shape[-1])
    weights, experts, _, _ = moe.route(x_ND, p["router"], p.get("router_bias"), moe_config)
    ws = tuple(p[n] for n in ("expert_gate", "expert_up", "expert_down"))
    halves = lambda a: a.reshape(2, -1, *a.shape[1:])  # two mapped elements of N / 2 tokens
    tokens = (halves(x_ND), halves(weights), halves(experts))
    scaled = tuple(jnp.stack([w, 2 * w]) for w in ws)  # two elements' expert weights
    alone = lambda i, w: moe.experts_grouped(*(a[i] for a in tokens), *w)
    shared = jax.vmap(moe._experts_grouped_merging, (0, 0, 0, None, None, None))(*tokens, *ws)
    own = jax.vmap(moe._experts_grouped_merging)(*tokens, *scaled)
    for i in range(2):
        np.testing.assert_allclose(shared[i], alone(i, ws), atol=1e-6)
        np.testing.assert_allclose(own[i], alone(i, [w[i] for w in scaled]), atol=1e-6)


def _group_limited_reference(scores, bias, moe_config):
    """DeepSeek-V3's routing in numpy, one token at a time."""
    per_group = moe_config.num_experts // moe_config.expert_groups
    out_w, out_e = [], []
    for s, c in zip(scores, scores + bias, strict=True):
        groups = c.reshape(moe_config.expert_groups, per_group)
        group_score = np.sort(groups, axis=-1)[:, -2:].sum(-1)
        keep = np.argsort(-group_score)[: moe_config.groups_per_token]
        allowed = np.concatenate([np.arange(g * per_group, (g + 1) * per_group) for g in keep])
        chosen = allowed[np.argsort(-c[allowed])[: moe_config.experts_per_token]]
        w = s[chosen] / s[chosen].sum() * moe_config.routed_scaling
        order = np.argsort(chosen)
        out_w.append(w[order])
        out_e.append(chosen[order])
    return np.array(out_w), np.array(out_e)


def test_group_limited_sigmoid_routing_matches_a_per_token_reference():
    p, x = _layer(DEEPSEEK)
    x_ND = np.asarray(x.reshape(-1, x.shape[-1]))
    weights, experts, _, _ = moe.route(x_ND, p["router"], p["router_bias"], DEEPSEEK)
    scores = 1 / (1 + np.exp(-(x_ND @ np.asarray(p["router"]))))
    ref_w, ref_e = _group_limited_reference(scores, np.asarray(p["router_bias"]), DEEPSEEK)
    order = np.argsort(np.asarray(experts), axis=-1)
    got_e = np.take_along_axis(np.asarray(experts), order, -1)
    got_w = np.take_along_axis(np.asarray(weights), order, -1)
    np.testing.assert_array_equal(got_e, ref_e)
    np.testing.assert_allclose(got_w, ref_w, rtol=1e-5)


def test_deepseek_v3_moe_block_matches_transformers():
    """Routing with correction bias, group limit, routed scaling and shared experts against
    ``DeepseekV3MoE`` (the module alone: the model's attention is MLA, not implemented yet)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3 import modeling_deepseek_v3 as ds

    d = 32
    hf_cfg = transformers.DeepseekV3Config(
        hidden_size=d, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=3,
        n_group=4, topk_group=2, routed_scaling_factor=2.5, n_shared_experts=2,
        norm_topk_prob=True,
    )  # fmt: skip
    torch.manual_seed(0)
    block = ds.DeepseekV3MoE(hf_cfg).eval()
    with torch.no_grad():
        for param in block.parameters():
            param.normal_(0.0, 0.3)
        block.gate.e_score_correction_bias.normal_(0.0, 0.1)
    t = lambda w: np.asarray(w.detach().float().numpy())
    f = hf_cfg.moe_intermediate_size
    gate_up = t(block.experts.gate_up_proj)  # [E, 2F, D]
    p = {
        "router": t(block.gate.weight).T,
        "router_bias": t(block.gate.e_score_correction_bias),
        "expert_gate": gate_up[:, :f].transpose(0, 2, 1),
        "expert_up": gate_up[:, f:].transpose(0, 2, 1),
        "expert_down": t(block.experts.down_proj).transpose(0, 2, 1),
        "shared_gate": t(block.shared_experts.gate_proj.weight).T,
        "shared_up": t(block.shared_experts.up_proj.weight).T,
        "shared_down": t(block.shared_experts.down_proj.weight).T,
    }
    x = np.random.default_rng(0).normal(size=(3, 5, d)).astype(np.float32)
    with torch.no_grad():
        expected = block(torch.tensor(x)).numpy()
    got, _ = moe.moe_mlp(jnp.asarray(x), jax.tree.map(jnp.asarray, p), DEEPSEEK)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4, rtol=0)


MOE_MODEL = ModelConfig(
    vocab_size=128, hidden_size=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=8,
    mlp_dim=48, qk_norm=True, tie_embeddings=False,
    moe=dataclasses.replace(DEEPSEEK, dense_layers=1),
)  # fmt: skip


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param((2, 1, 2, 2), marks=pytest.mark.slow),
        pytest.param((1, 2, 4, 1), marks=pytest.mark.slow),
        pytest.param((1, 1, 8, 1), marks=pytest.mark.slow),
    ],
    ids=str,
)
def test_sharded_moe_model_equals_unsharded_forward_and_gradients(shape):
    """Mesh (data, fsdp, expert, tensor): experts split over ``expert``, the batch over data,
    fsdp and expert, the expert width over tensor."""
    params = init_params(MOE_MODEL, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 12), 0, MOE_MODEL.vocab_size)

    def loss(params, tokens):
        logits, _ = forward(params, tokens, MOE_MODEL)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - logits[..., 0])

    ref_loss, ref_grads = jax.jit(jax.value_and_grad(loss))(params, tokens)
    data, fsdp, expert, tensor = shape
    mesh = sharding.make_mesh(
        sharding.MeshConfig(data=data, fsdp=fsdp, expert=expert, tensor=tensor)
    )
    sharded = init_params(MOE_MODEL, jax.random.key(0), mesh=mesh)
    assert sharded["layers"]["expert_gate"].sharding.spec[1] == ("expert" if expert > 1 else None)
    tokens = jax.device_put(tokens, sharding.named_sharding(mesh, ("batch", "seq"), tokens.shape))
    with jax.set_mesh(mesh):
        got_loss, got_grads = jax.jit(jax.value_and_grad(loss))(sharded, tokens)
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), got_grads, ref_grads)


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_routing_replay_uses_exactly_the_given_experts_and_rows_of_minus_one_choose():
    """Record the experts of one forward, change the params (a policy update): the replayed
    forward uses the recorded experts, not its own choice; a -1 row makes its own choice."""
    from r1jax.model.transformer import hidden_states_and_router

    params = init_params(MOE_MODEL.replace(init_std=0.2), jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (4, 9), 0, MOE_MODEL.vocab_size)
    run = jax.jit(hidden_states_and_router, static_argnums=2)
    _, _, recorded = run(params, tokens, MOE_MODEL)
    assert recorded.experts.shape == (2, 4, 9, 3)  # [L', B, T, K]: layers 1 and 2 are MoE
    updated = jax.tree.map(
        lambda a: a + 0.2 * jax.random.normal(jax.random.key(5), a.shape), params
    )
    _, _, own = run(updated, tokens, MOE_MODEL)
    assert np.mean(np.asarray(own.experts) != np.asarray(recorded.experts)) > 0.1
    hidden, _, replayed = run(updated, tokens, MOE_MODEL, routing=recorded.experts)
    np.testing.assert_array_equal(replayed.experts, recorded.experts)
    partial = recorded.experts.at[:, :, -1].set(-1)  # the last token was not recorded
    hidden_partial, _, mixed = run(updated, tokens, MOE_MODEL, routing=partial)
    np.testing.assert_array_equal(mixed.experts[:, :, :-1], recorded.experts[:, :, :-1])
    np.testing.assert_array_equal(mixed.experts[:, :, -1], own.experts[:, :, -1])
    # Causal: the last token's routing changes only the last position's hidden state.
    np.testing.assert_array_equal(hidden_partial[:, :-1], hidden[:, :-1])


@pytest.mark.slow  # the default suite stays under 10 minutes; CI runs -m slow
def test_balance_and_z_losses_are_added_with_their_weights_and_loads_are_logged():
    from r1jax.train import objectives

    config = MOE_MODEL.replace(
        moe=dataclasses.replace(MOE_MODEL.moe, balance_loss_weight=0.01, z_loss_weight=0.001)
    )
    params = init_params(config, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (4, 9), 0, config.vocab_size)
    batch = {
        "tokens": tokens,
        "loss_mask": jnp.ones_like(tokens),
        "segment_ids": jnp.ones_like(tokens).at[0, :3].set(0),
        "positions": jnp.broadcast_to(jnp.arange(9), (4, 9)),
    }
    norm = objectives.sft_normalizer(batch)
    loss, metrics = objectives.sft_objective(params, None, batch, config, norm)
    plain, _ = objectives.sft_objective(params, None, batch, MOE_MODEL, norm)
    expected = plain + 0.01 * metrics["moe/balance_loss"] + 0.001 * metrics["moe/z_loss"]
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(metrics["moe/balance_loss"]) > 0 and float(metrics["moe/z_loss"]) > 0
    assert set(k for k in metrics if k.startswith("moe/max_load/")) == {
        "moe/max_load/1", "moe/max_load/2"
    }  # fmt: skip
    grad = jax.grad(lambda p: objectives.sft_objective(p, None, batch, config, norm)[0])(params)
    grad_plain = jax.grad(lambda p: objectives.sft_objective(p, None, batch, MOE_MODEL, norm)[0])(
        params
    )
    assert not np.allclose(grad["layers"]["router"], grad_plain["layers"]["router"])


@pytest.mark.slow  # 13 s of compiles; the default suite stays under 10 minutes
def test_router_losses_of_micro_batches_sum_to_one_batchs():
    """Each micro-batch adds its router losses weighted by its share of the batch, so two
    halves with the full batch's normaliser give one batch's z-loss and gradient (it was
    added whole per micro-batch: M times too large), and the balance loss of two halves is
    their mean."""
    from r1jax.train import objectives

    moe = dataclasses.replace(MOE_MODEL.moe, balance_loss_weight=0.0, z_loss_weight=0.1)
    config = MOE_MODEL.replace(num_layers=2, moe=moe)
    params = init_params(config, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (4, 9), 0, config.vocab_size)
    ones = jnp.ones_like(tokens)
    batch = {"tokens": tokens, "loss_mask": ones, "segment_ids": ones,
             "positions": jnp.broadcast_to(jnp.arange(9), (4, 9))}  # fmt: skip
    halves = [jax.tree.map(lambda x, i=i: x[2 * i : 2 * i + 2], batch) for i in range(2)]
    norm = objectives.sft_normalizer(batch)

    @functools.partial(jax.jit, static_argnums=2)
    def value_and_grad(params, batch, config):
        fn = lambda p: objectives.sft_objective(p, None, batch, config, norm)
        return jax.value_and_grad(fn, has_aux=True)(params)

    (whole, _), grad = value_and_grad(params, batch, config)
    parts = [value_and_grad(params, h, config) for h in halves]
    np.testing.assert_allclose(parts[0][0][0] + parts[1][0][0], whole, rtol=1e-6)
    summed = jax.tree.map(jnp.add, parts[0][1], parts[1][1])
    for got, want in zip(jax.tree.leaves(summed), jax.tree.leaves(grad), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    plain = config.replace(moe=dataclasses.replace(moe, z_loss_weight=0.0))
    balance = plain.replace(moe=dataclasses.replace(plain.moe, balance_loss_weight=1.0))
    with_balance = [value_and_grad(params, h, balance)[0] for h in halves]
    without = [value_and_grad(params, h, plain)[0][0] for h in halves]
    got = sum(w[0] for w in with_balance) - sum(without)
    want = np.mean([w[1]["moe/balance_loss"] for w in with_balance])
    np.testing.assert_allclose(got, want, rtol=1e-5)
