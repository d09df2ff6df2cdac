"""GRPO loss variants, log-probs and entropy against naive NumPy loops over rows and tokens.

Forward-only checks run eagerly (op-by-op executables are shared across variants); gradient
checks are jitted (one compile instead of one per primitive and shape).
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.losses import (
    batch_normalizer,
    batch_share,
    grpo_loss,
    token_entropy,
    token_logprobs,
    truncated_is_weights,
)

B, T, MAX_TOKENS = 8, 7, 9


def ref_grpo(logp, old, adv, mask, *, ref=None, beta=0.0, eps_low=0.2, eps_high=None,
             aggregation="seq_mean", max_tokens=None, importance="token", tis=None, ent=None,
             entropy_coef=0.0):  # fmt: skip
    """Returns (loss, clip_frac, kl_mean) computed token by token."""
    eps_high = eps_low if eps_high is None else eps_high
    total, n_tokens, n_rows, n_clip, kl_sum = 0.0, 0, 0, 0, 0.0
    for i in range(logp.shape[0]):
        valid = [t for t in range(logp.shape[1]) if mask[i, t] > 0]
        if not valid:
            continue
        seq_ratio = math.exp(sum(logp[i, t] - old[i, t] for t in valid) / len(valid))
        row = 0.0
        for t in valid:
            r = seq_ratio if importance == "sequence" else math.exp(logp[i, t] - old[i, t])
            clipped = min(max(r, 1 - eps_low), 1 + eps_high)
            obj = min(r * adv[i], clipped * adv[i])
            n_clip += (r < 1 - eps_low and adv[i] < 0) or (r > 1 + eps_high and adv[i] > 0)
            if tis is not None:
                obj *= tis[i, t]
            term = -obj
            if ref is not None:
                d = ref[i, t] - logp[i, t]
                kl = math.exp(d) - d - 1
                kl_sum += kl
                term += beta * kl
            if ent is not None:
                term -= entropy_coef * ent[i, t]
            row += term
        total += row / len(valid) if aggregation == "seq_mean" else row
        n_tokens += len(valid)
        n_rows += 1
    if aggregation == "seq_mean":
        denom = max(n_rows, 1)
    elif aggregation == "token_mean":
        denom = max(n_tokens, 1)
    else:
        denom = logp.shape[0] * max_tokens
    return total / denom, n_clip / n_tokens, kl_sum / n_tokens


def make_batch(seed=0):
    rng = np.random.default_rng(seed)
    logp = np.log(rng.uniform(0.05, 1.0, (B, T))).astype(np.float32)
    old = (logp + rng.normal(0, 0.3, (B, T))).astype(np.float32)  # ratios across both clip edges
    ref = (logp + rng.normal(0, 0.5, (B, T))).astype(np.float32)
    adv = rng.normal(size=B).astype(np.float32)
    mask = (rng.uniform(size=(B, T)) < 0.8).astype(np.float32)
    mask[2] = 0.0  # a fully masked row (truncated completion masked out)
    mask[5] = 0.0
    mask[5, 0] = 1.0  # a one-token row
    ent = rng.uniform(0, 3, (B, T)).astype(np.float32)
    tis = rng.uniform(0.5, 2.0, (B, T)).astype(np.float32)
    return dict(logp=logp, old=old, ref=ref, adv=adv, mask=mask, ent=ent, tis=tis)


def call(d, **kw):
    """grpo_loss on batch dict d; tensor options by flag so kw stays static under jit."""
    use_ref, use_tis, use_ent = (
        kw.pop("use_ref", False),
        kw.pop("use_tis", False),
        kw.pop("use_ent", False),
    )
    fn = functools.partial(grpo_loss, **kw)
    return fn(
        d["logp"], d["old"], d["adv"], d["mask"],
        ref_logp_BT=d["ref"] if use_ref else None,
        tis_weights_BT=d["tis"] if use_tis else None,
        entropy_BT=d["ent"] if use_ent else None,
    )  # fmt: skip


VARIANTS = {
    "seq_mean": dict(aggregation="seq_mean"),
    "token_mean": dict(aggregation="token_mean"),
    "constant": dict(aggregation="constant", max_tokens=MAX_TOKENS),
    "asymmetric_clip": dict(aggregation="token_mean", eps_low=0.1, eps_high=0.28),
    "kl_on": dict(aggregation="seq_mean", beta=0.04, use_ref=True),
    "kl_metric_only": dict(aggregation="seq_mean", beta=0.0, use_ref=True),
    "gspo_seq_mean": dict(aggregation="seq_mean", importance="sequence", eps_low=0.05),
    "gspo_token_mean": dict(aggregation="token_mean", importance="sequence", eps_low=0.05),
    "tis": dict(aggregation="token_mean", use_tis=True),
    "entropy_bonus": dict(aggregation="seq_mean", entropy_coef=0.01, use_ent=True),
    "everything": dict(aggregation="constant", max_tokens=MAX_TOKENS, eps_low=0.1, eps_high=0.3,
                       beta=0.1, use_ref=True, use_tis=True, entropy_coef=0.02, use_ent=True),
}  # fmt: skip


@pytest.mark.parametrize("name", list(VARIANTS))
def test_grpo_loss_matches_reference(name):
    kw = dict(VARIANTS[name])
    d = make_batch()
    loss, metrics = call(d, **kw)
    ref_kw = {k: v for k, v in kw.items() if not k.startswith("use_")}
    want, clip_frac, kl_mean = ref_grpo(
        d["logp"], d["old"], d["adv"], d["mask"],
        ref=d["ref"] if kw.get("use_ref") else None,
        tis=d["tis"] if kw.get("use_tis") else None,
        ent=d["ent"] if kw.get("use_ent") else None,
        **ref_kw,
    )  # fmt: skip
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["clip_frac"]), clip_frac, atol=1e-6)
    if kw.get("use_ref"):
        np.testing.assert_allclose(float(metrics["kl"]), kl_mean, rtol=1e-5)
    assert float(metrics["num_tokens"]) == d["mask"].sum()


def test_ratio_and_entropy_metrics_are_masked():
    d = make_batch()
    d["old"][d["mask"] == 0] = -50.0  # huge ratios at masked positions must not show up
    _, m = call(d, aggregation="token_mean", use_ent=True)
    valid = d["mask"] > 0
    ratio = np.exp(d["logp"] - d["old"])[valid]
    np.testing.assert_allclose(float(m["ratio_mean"]), ratio.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(m["ratio_min"]), ratio.min(), rtol=1e-5)
    np.testing.assert_allclose(float(m["ratio_max"]), ratio.max(), rtol=1e-5)
    np.testing.assert_allclose(float(m["entropy"]), d["ent"][valid].mean(), rtol=1e-5)
    low = float(m["clip_frac_low"]) + float(m["clip_frac_high"])
    np.testing.assert_allclose(low, float(m["clip_frac"]), atol=1e-7)


def _analytic_grad_at_ratio_one(adv, mask, aggregation):
    """-A_i * d(aggregation)/d(token): per-token weights of each aggregation, by loops."""
    g = np.zeros_like(mask)
    counts = mask.sum(axis=1)
    for i in range(mask.shape[0]):
        for t in range(mask.shape[1]):
            if mask[i, t] > 0:
                w = {
                    "seq_mean": 1.0 / (counts[i] * (counts > 0).sum()),
                    "token_mean": 1.0 / mask.sum(),
                    "constant": 1.0 / (mask.shape[0] * MAX_TOKENS),
                }[aggregation]
                g[i, t] = -adv[i] * w
    return g


GRAD_CASES = [("seq_mean", "token"), ("token_mean", "token"), ("constant", "token"),
              ("seq_mean", "sequence")]  # fmt: skip


def test_gradient_at_ratio_one_is_minus_advantage_times_grad_logp_for_each_aggregation():
    # GSPO at ratio 1 spreads each row's gradient evenly, which is seq_mean's analytic form.
    d = make_batch()

    @jax.jit
    def grads(logp, adv, mask):
        return [
            jax.grad(lambda lp, a=a, i=i: grpo_loss(lp, logp, adv, mask, aggregation=a,
                                                    max_tokens=MAX_TOKENS, importance=i)[0])(logp)
            for a, i in GRAD_CASES
        ]  # fmt: skip

    for (aggregation, _), grad in zip(
        GRAD_CASES, grads(d["logp"], d["adv"], d["mask"]), strict=True
    ):
        want = _analytic_grad_at_ratio_one(d["adv"], d["mask"], aggregation)
        np.testing.assert_allclose(np.asarray(grad), want, rtol=1e-5, atol=1e-8)


def test_clip_inactive_at_ratio_one_and_zero_advantage_gives_zero_gradient():
    d = make_batch()
    _, m = call(dict(d, old=d["logp"]), aggregation="token_mean")
    assert float(m["clip_frac"]) == 0.0 and float(m["ratio_mean"]) == 1.0
    zero_adv = np.zeros(B, np.float32)
    grad = jax.jit(jax.grad(lambda lp: grpo_loss(lp, d["old"], zero_adv, d["mask"])[0]))(d["logp"])
    assert np.all(np.asarray(grad) == 0.0)


AGGS = ("seq_mean", "token_mean", "constant")


def test_four_micro_batches_with_full_normalizer_equal_the_full_batch_for_each_aggregation():
    d = make_batch(1)
    keys = ("logp", "old", "adv", "mask", "ref", "ent")

    @jax.jit
    def losses_and_grads(logp, old, adv, mask, ref, ent, normalizers):
        out = []
        for agg, norm in zip(AGGS, normalizers, strict=True):
            kw = dict(aggregation=agg, max_tokens=MAX_TOKENS, beta=0.05, entropy_coef=0.01)
            f = lambda lp, kw=kw, norm=norm: grpo_loss(
                lp, old, adv, mask, ref_logp_BT=ref, entropy_BT=ent, normalizer=norm, **kw
            )[0]
            out.append(jax.value_and_grad(f)(logp))
        return out

    full = losses_and_grads(*(d[k] for k in keys), (None,) * 3)
    norms = tuple(batch_normalizer(d["mask"], a, max_tokens=MAX_TOKENS) for a in AGGS)
    parts = [losses_and_grads(*(d[k][s : s + 2] for k in keys), norms) for s in range(0, B, 2)]
    for j, (full_loss, full_grad) in enumerate(full):
        np.testing.assert_allclose(sum(float(p[j][0]) for p in parts), float(full_loss), rtol=1e-5)
        grads = np.concatenate([np.asarray(p[j][1]) for p in parts])
        np.testing.assert_allclose(grads, np.asarray(full_grad), rtol=1e-5, atol=1e-8)


def test_fully_masked_rows_with_garbage_give_finite_loss_and_gradient():
    d = make_batch()
    for k in ("logp", "old", "ref", "ent"):
        d[k][d["mask"] == 0] = np.nan
    d["logp"][2] = -np.inf
    f = lambda lp: grpo_loss(lp, d["old"], d["adv"], d["mask"], ref_logp_BT=d["ref"], beta=0.1,
                             entropy_BT=d["ent"], entropy_coef=0.01)  # fmt: skip
    (loss, metrics), grad = jax.jit(jax.value_and_grad(f, has_aux=True))(d["logp"])
    assert np.isfinite(float(loss)) and np.all(np.isfinite(np.asarray(grad)))
    assert all(np.isfinite(float(v)) for v in metrics.values())
    nothing = np.zeros_like(d["mask"])
    loss, metrics = grpo_loss(d["logp"], d["old"], d["adv"], nothing)
    assert float(loss) == 0.0 and all(np.isfinite(float(v)) for v in metrics.values())


def test_bad_options_raise_clear_errors():
    d = make_batch()
    with pytest.raises(ValueError, match="ref_logp_BT"):
        grpo_loss(d["logp"], d["old"], d["adv"], d["mask"], beta=0.1)
    with pytest.raises(ValueError, match="max_tokens"):
        grpo_loss(d["logp"], d["old"], d["adv"], d["mask"], aggregation="constant")
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(d["logp"], d["old"], d["adv"], d["mask"], aggregation="sum")


def test_truncated_is_weights_are_capped_masked_and_constant():
    rng = np.random.default_rng(3)
    trainer, sampler = rng.normal(-2, 1, (2, (3))), rng.normal(-2, 1, (2, 3))
    mask = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    w = np.asarray(
        jax.jit(truncated_is_weights, static_argnames="cap")(trainer, sampler, mask, cap=1.5)
    )
    for i in range(2):
        for t in range(3):
            want = min(math.exp(trainer[i, t] - sampler[i, t]), 1.5) if mask[i, t] else 0.0
            np.testing.assert_allclose(w[i, t], want, rtol=1e-5)
    g = jax.jit(jax.grad(lambda x: truncated_is_weights(x, sampler, mask).sum()))(trainer)
    assert np.all(np.asarray(g) == 0.0)


def test_token_logprobs_and_entropy_match_reference_and_are_f32():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 3, (2, 3, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 3))
    temp = 0.7
    both = jax.jit(lambda x, y: (token_logprobs(x, y, temp), token_entropy(x, temp)))
    lp, ent = (np.asarray(a) for a in both(logits, targets))
    for b in range(2):
        for t in range(3):
            z = [float(x) / temp for x in logits[b, t]]
            lse = math.log(sum(math.exp(x) for x in z))
            np.testing.assert_allclose(lp[b, t], z[targets[b, t]] - lse, rtol=1e-5)
            h = -sum(math.exp(x - lse) * (x - lse) for x in z)
            np.testing.assert_allclose(ent[b, t], h, rtol=1e-5, atol=1e-6)
    bf16 = jax.eval_shape(both, jnp.asarray(logits, jnp.bfloat16), targets)
    assert bf16[0].dtype == bf16[1].dtype == jnp.float32
    logits[..., 0] = -np.inf  # a masked vocab entry
    assert np.all(np.isfinite(np.asarray(both(logits, targets)[1])))


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean", "constant"])
def test_micro_batch_shares_sum_to_one(aggregation):
    mask = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]], np.float32)
    kw = {"max_tokens": 3} if aggregation == "constant" else {}
    full = batch_normalizer(mask, aggregation, **kw)
    share = lambda m: batch_share(batch_normalizer(m, aggregation, **kw), full, m, aggregation)
    shares = [share(mask[i : i + 2]) for i in (0, 2)]
    np.testing.assert_allclose(sum(shares), 1.0, rtol=1e-6)
    np.testing.assert_allclose(share(mask), 1.0)
    empty = share(mask[1:2])
    assert float(empty) == (0.25 if aggregation == "constant" else 0.0)


def test_masked_vocabulary_entries_give_a_finite_entropy_gradient():
    logits = jnp.array([[[1.0, 2.0, -jnp.inf, 0.5]]])
    value, grad = jax.value_and_grad(lambda x: token_entropy(x).sum())(logits)
    p = jax.nn.softmax(jnp.array([1.0, 2.0, 0.5]))
    np.testing.assert_allclose(value, -jnp.sum(p * jnp.log(p)), rtol=1e-6)
    assert np.all(np.isfinite(grad))  # was NaN everywhere: 0 * -inf in a discarded branch


@pytest.mark.parametrize("adv", [[0.0, 1.0], [1.0, 1.0], [-1.0, 1.0]])
def test_one_extreme_log_ratio_leaves_the_loss_and_gradient_finite(adv):
    """A token the old policy gave e^-95 (or the reference, for k3) overflowed exp(): the loss
    and gradient went inf/NaN and the step skipped the whole update."""
    logp = jnp.full((2, 3), -1.0)
    old = logp.at[0, 1].set(-95.0)
    ref = logp.at[1, 2].set(99.0)
    mask = jnp.ones((2, 3))
    fn = lambda lp: grpo_loss(lp, old, jnp.array(adv), mask, ref_logp_BT=ref, beta=0.04)[0]
    value, grad = jax.value_and_grad(fn)(logp)
    assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_old_logprobs_advantages_and_reference_are_constants_of_the_loss():
    """grpo_loss(logp, old=logp) is the policy gradient (ratio 1, d ratio / d logp = 1): pi_old
    must not be differentiated even when the caller passes the same array."""
    logp = jnp.array([[-1.0, -2.0], [-0.5, -1.5]])
    adv, mask = jnp.array([1.0, -2.0]), jnp.ones((2, 2))
    fn = lambda lp: grpo_loss(lp, lp, adv, mask, ref_logp_BT=lp, beta=0.1)[0]
    want = -(adv[:, None] * mask) / (2 * 2)  # seq_mean: per-row mean, then mean over 2 rows
    np.testing.assert_allclose(jax.grad(fn)(logp), want, rtol=1e-6)
