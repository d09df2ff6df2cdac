"""Losses over chunks of positions (``losses.chunked_map``, wired in by the objectives) equal the
unchunked computation in value and gradient, also when the chunk does not divide T; and the
chunked log-probs + gradient compile to a fraction of the unchunked program's temp memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import losses
from r1jax.config import DistillConfig, GRPOConfig
from r1jax.model import ModelConfig, abstract_params, forward
from r1jax.train import objectives

STUDENT = ModelConfig(
    vocab_size=64,
    hidden_size=32,
    num_layers=1,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp_dim=64,
    max_position_embeddings=64,
)
TEACHER = STUDENT.replace(hidden_size=48, tie_embeddings=False)  # own width, an untied head
B, T, P = 3, 11, 4  # SFT predicts T - 1 = 10 positions: chunks of 4 leave a tail of 2
CHUNK = 4
# Compiles dominate on CPU: the default run keeps one objective of each kind (the per-position
# terms of every kind are checked without the transformer); the rest run with -m slow.
SLOW = pytest.mark.slow


def _sft_batch(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    seg = np.where(np.arange(T) < 6, 1, 2)[None].repeat(B, 0)
    seg[0, 9:] = 0  # padding
    pos = np.where(seg == 2, np.arange(T) - 6, np.arange(T))
    return {
        "tokens": rng.integers(0, 64, (B, T)).astype(np.int32),
        "loss_mask": (rng.random((B, T)) < 0.8).astype(np.int32),
        "segment_ids": seg.astype(np.int32),
        "positions": pos.astype(np.int32),
    }


def _grpo_batch(seed=0) -> dict:
    rng = np.random.default_rng(seed)
    prompt_mask = (np.arange(P)[None] >= np.array([[0], [2], [1]])).astype(np.int32)
    return {
        "prompt_tokens": rng.integers(0, 64, (B, P)).astype(np.int32) * prompt_mask,
        "prompt_mask": prompt_mask,
        "completion_tokens": rng.integers(0, 64, (B, T)).astype(np.int32),
        "completion_mask": (np.arange(T)[None] < np.array([[T], [7], [3]])).astype(np.int32),
        "old_logprobs": (-4.2 + 0.3 * rng.standard_normal((B, T))).astype(np.float32),
        "advantages": rng.standard_normal(B).astype(np.float32),
    }


def _random_params(config: ModelConfig, seed: int) -> dict:
    """Params of ``config`` drawn in NumPy (no init compile): norms ~1, the rest ~N(0, 0.1)."""
    rng = np.random.default_rng(seed)

    def leaf(path, spec):
        x = 0.1 * rng.standard_normal(spec.shape)
        return (x + ("norm" in jax.tree_util.keystr(path))).astype(np.float32)

    return jax.tree_util.tree_map_with_path(leaf, abstract_params(config))


@pytest.fixture(scope="module")
def params():
    return {
        "student": _random_params(STUDENT, 0),
        "student_untied": _random_params(STUDENT.replace(tie_embeddings=False), 2),
        "reference": _random_params(STUDENT, 1),
        "teacher": _random_params(TEACHER, 3),
    }


def _assert_close(got, want):
    """Every leaf within 1e-5 of the leaf's scale (its max |want|): fp32 reassociation across
    chunk shapes, not a different computation."""

    def close(g, w):
        w = np.asarray(w, np.float64)
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * np.abs(w).max() + 1e-12)

    jax.tree.map(close, got, want)


def _both_value_and_grad(make_objective, params, frozen, batch):
    """[(loss, metrics, grads) at logits_chunk=0, the same at CHUNK], from one compile."""

    @jax.jit
    def both(params, frozen, batch):
        out = []
        for chunk in (0, CHUNK):
            objective = make_objective(chunk)
            normalizer = objective.normalizer(batch)
            vg = jax.value_and_grad(objective.loss, has_aux=True)
            (loss, metrics), grads = vg(params, frozen, batch, normalizer)
            out.append((loss, metrics, grads))
        return out

    return both(params, frozen, batch)


def _assert_chunked_equals_unchunked(make_objective, params, frozen, batch):
    want, got = _both_value_and_grad(make_objective, params, frozen, batch)
    _assert_close(got, want)
    assert float(want[0]) != 0.0 and float(_norm(want[2])) > 0.0


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_chunked_map_matches_one_call_for_any_chunk_including_a_ragged_tail():
    rng = np.random.default_rng(0)
    xs = {"a": rng.standard_normal((2, 7, 3)), "b": rng.integers(0, 5, (2, 7))}
    fn = lambda c, x: {"s": jnp.sum(x["a"], -1) * c + x["b"], "k": x["a"] * c}
    want = fn(2.0, xs)
    for chunk in (0, 3, 7, 100):
        got = losses.chunked_map(fn, 2.0, xs, chunk=chunk)
        jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6), got, want)


def _all_terms(chunk, head, hidden_BTD, teacher, xs):
    """Every loss's per-position terms from the student's (``head``, ``hidden_BTD``) and the
    online ``teacher``'s (head, hidden) logits, made chunk by chunk: {name: f32 [B, T]}."""

    def fn(logits, xs):
        s, t = logits
        out = {"logp": losses.token_logprobs(s, xs["targets"], 0.7)}
        out["entropy"] = losses.token_entropy(s, 0.7)
        out["nll"], out["correct"] = losses.sft_positions(s, xs["targets"])
        for kind in ("forward_kl", "reverse_kl", "jsd"):
            kw = dict(kind=kind, beta=0.3, temperature=0.8)
            out[kind], _ = losses.distill_positions(s, t, **kw)
            out[f"topk_{kind}"], out["topk_agree"] = losses.distill_positions(s, xs["topk"], **kw)
        return out

    models = ((head, STUDENT, hidden_BTD), (teacher[0], TEACHER, teacher[1]))
    return objectives.over_chunks(fn, models, xs, chunk)


def test_every_per_position_term_and_its_gradient_chunked_equals_unchunked():
    """Log-prob, entropy, SFT and every distillation divergence (online and top-k) over chunks
    of 3 of T = 10 positions vs one call, with the VJP w.r.t. the head and the hidden states."""
    rng = np.random.default_rng(0)
    t, v = 10, STUDENT.vocab_size
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    head, hidden = {"embed": 0.3 * normal(v, 32)}, normal(B, t, 32)
    teacher = ({"lm_head": 0.3 * normal(48, v)}, normal(B, t, 48))
    indices, logprobs = losses.teacher_topk(2 * normal(B, t, v), 5, temperature=0.8)
    xs = {"targets": rng.integers(0, v, (B, t)), "topk": (indices, logprobs)}

    @jax.jit
    def terms_and_vjp(cotangents):
        both = []
        for chunk in (0, 3):
            f = lambda h, x, chunk=chunk: _all_terms(chunk, h, x, teacher, xs)
            terms, vjp = jax.vjp(f, head, hidden)
            both.append((terms, vjp(cotangents)))
        return both

    shapes = jax.eval_shape(lambda: _all_terms(0, head, hidden, teacher, xs))
    cotangents = jax.tree.map(lambda s: normal(*s.shape), shapes)
    want, got = terms_and_vjp(cotangents)
    _assert_close(got, want)
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(want))


@pytest.mark.slow  # its student side is the online distillation test's
@pytest.mark.parametrize("key", ["student", "student_untied"])
def test_sft_chunked_equals_unchunked(params, key):
    config = STUDENT.replace(tie_embeddings=key == "student")
    make = lambda chunk: objectives.sft(config.replace(logits_chunk=chunk))
    _assert_chunked_equals_unchunked(make, params[key], None, _sft_batch())


@pytest.mark.parametrize(
    "kind", [pytest.param("forward_kl", marks=SLOW), pytest.param("reverse_kl", marks=SLOW), "jsd"]
)
def test_online_distillation_chunked_equals_unchunked(params, kind):
    options = DistillConfig(kind=kind, beta=0.3, temperature=0.8, teacher="online")
    make = lambda chunk: objectives.distill(STUDENT.replace(logits_chunk=chunk), options, TEACHER)
    _assert_chunked_equals_unchunked(make, params["student"], params["teacher"], _sft_batch(1))


@pytest.mark.slow
def test_topk_distillation_chunked_equals_unchunked(params):
    batch = _sft_batch(2)
    teacher_logits, _ = forward(
        params["teacher"], batch["tokens"], TEACHER, positions=batch["positions"]
    )
    indices, logprobs = losses.teacher_topk(teacher_logits, 5, temperature=0.8)
    batch |= {"teacher_topk_indices": indices, "teacher_topk_logprobs": logprobs}
    options = DistillConfig(kind="jsd", temperature=0.8, teacher="topk")
    make = lambda chunk: objectives.distill(STUDENT.replace(logits_chunk=chunk), options)
    _assert_chunked_equals_unchunked(make, params["student"], None, batch)


@pytest.mark.parametrize("entropy_coef", [pytest.param(0.0, marks=SLOW), 0.01])
def test_grpo_with_reference_and_entropy_chunked_equals_unchunked(params, entropy_coef):
    options = GRPOConfig(beta=0.04, temperature=0.7, entropy_coef=entropy_coef, log_entropy=True)
    make = lambda chunk: objectives.grpo(STUDENT.replace(logits_chunk=chunk), options)
    batch = _grpo_batch()
    _assert_chunked_equals_unchunked(make, params["student"], params["reference"], batch)


@pytest.mark.slow
def test_completion_terms_equal_the_full_logits_terms(params):
    """Chunked log-probs and entropy == ``token_logprobs`` / ``token_entropy`` of [B, T, V]."""
    batch = _grpo_batch(1)
    tokens, positions, seg = objectives.grpo_inputs(batch)
    logits, _ = forward(params["student"], tokens, STUDENT, positions=positions, segment_ids=seg)
    logits = logits[:, P - 1 : -1]
    config = STUDENT.replace(logits_chunk=CHUNK)
    terms = objectives.completion_terms(params["student"], batch, config, 0.7, entropy="grad")
    want = {
        "logp": losses.token_logprobs(logits, batch["completion_tokens"], 0.7),
        "entropy": losses.token_entropy(logits, 0.7),
    }
    _assert_close(terms, want)


def _logprob_temp_bytes(chunk: int, b=4, t=4096, v=151936, d=896) -> int:
    """Compiled (not run) temp bytes of value_and_grad(sum of target log-probs) from hidden
    states f32 [b, t, d] through a tied LM head [v, d] at ``logits_chunk=chunk``."""
    config = ModelConfig(vocab_size=v, hidden_size=d, logits_chunk=chunk)

    def f(head, hidden_BTD, targets_BT):
        fn = lambda logits, xs: losses.token_logprobs(logits[0], xs["targets"])
        models = ((head, config, hidden_BTD),)
        return jnp.sum(objectives.over_chunks(fn, models, {"targets": targets_BT}, chunk))

    args = (
        {"embed": jax.ShapeDtypeStruct((v, d), jnp.float32)},
        jax.ShapeDtypeStruct((b, t, d), jnp.float32),
        jax.ShapeDtypeStruct((b, t), jnp.int32),
    )
    compiled = jax.jit(jax.value_and_grad(f, argnums=(0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_logprobs_and_gradient_compile_to_a_quarter_of_the_unchunked_memory():
    """B=4, T=4096, V=151,936, D=896 (Qwen2.5-0.5B's head). Unchunked: two f32 [B, T, V]
    buffers (logits, their exp/gradient), 18.5 GiB. Chunked: two [B, C, V] buffers plus a few
    [B, T, D] copies of the hidden states and their gradient, whatever T is."""
    b, t, v, d = 4, 4096, 151936, 896
    unchunked = _logprob_temp_bytes(0)
    assert unchunked >= 2 * b * t * v * 4
    assert _logprob_temp_bytes(512) <= unchunked / 4
    default = ModelConfig().logits_chunk
    assert _logprob_temp_bytes(default) <= 2 * b * default * v * 4 + 4 * b * t * d * 4
