"""SFT and logit-distillation losses against naive NumPy loops over tokens and vocabulary."""

import math

import jax
import numpy as np
import pytest

from r1jax.losses import batch_normalizer, distill_loss, sft_loss, teacher_topk

B, T, V, K = 4, 5, 9, 4
KINDS = ["forward_kl", "reverse_kl", "jsd"]


def _log_softmax(row, temp):
    z = [float(x) / temp for x in row]
    m = max(z)
    lse = m + math.log(sum(math.exp(x - m) for x in z))
    return [x - lse for x in z]


def _div(p, q, kind, beta):
    """Divergence between two categoricals given as lists of probabilities."""
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b, strict=True) if x > 0)
    if kind == "forward_kl":
        return kl(p, q)
    if kind == "reverse_kl":
        return kl(q, p)
    m = [beta * x + (1 - beta) * y for x, y in zip(p, q, strict=True)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


def ref_distill(student, teacher, mask, kind, beta=0.5, temp=1.0, topk=None):
    """Token-mean divergence. topk=(indices, logprobs): K teacher tokens + one rest bucket."""
    total, n = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1]):
            if not mask[b, t]:
                continue
            q = [math.exp(x) for x in _log_softmax(student[b, t], temp)]
            if topk is None:
                p = [math.exp(x) for x in _log_softmax(teacher[b, t], temp)]
            else:
                idx, lp = topk[0][b, t].tolist(), topk[1][b, t].tolist()
                p = [math.exp(x) for x in lp] + [1 - sum(math.exp(x) for x in lp)]
                q = [q[i] for i in idx] + [sum(q[v] for v in range(len(q)) if v not in idx)]
            total += _div(p, q, kind, beta)
            n += 1
    return total / n


def make(seed=0):
    rng = np.random.default_rng(seed)
    student = rng.normal(0, 2, (B, T, V)).astype(np.float32)
    teacher = rng.normal(0, 2, (B, T, V)).astype(np.float32)
    mask = (rng.uniform(size=(B, T)) < 0.75).astype(np.float32)
    mask[1] = 0.0
    return student, teacher, mask


@pytest.mark.parametrize("topk", [False, True], ids=["full", "topk"])
@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5),
                                       ("jsd", 0.2)])  # fmt: skip
def test_distill_matches_reference(kind, beta, topk):
    student, teacher, mask = make()
    temp = 1.5
    pair = tuple(np.asarray(a) for a in teacher_topk(teacher, K, temp)) if topk else None
    loss, metrics = distill_loss(
        student, pair if topk else teacher, mask, kind=kind, beta=beta, temperature=temp
    )
    want = ref_distill(student, teacher, mask, kind, beta, temp, topk=pair)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)
    assert float(metrics["num_tokens"]) == mask.sum()


def test_teacher_topk_is_sorted_full_vocab_logprobs():
    _, teacher, _ = make()
    idx, lp = (np.asarray(a) for a in teacher_topk(teacher, K, 2.0))
    assert idx.dtype == np.int32 and lp.dtype == np.float32
    for b in range(B):
        for t in range(T):
            full = _log_softmax(teacher[b, t], 2.0)
            order = sorted(range(V), key=lambda v: -full[v])[:K]
            assert idx[b, t].tolist() == order
            np.testing.assert_allclose(lp[b, t], [full[v] for v in order], rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_divergence_is_zero_for_identical_and_positive_otherwise(kind):
    student, teacher, mask = make()
    for t in (student, teacher_topk(student, K, 1.0)):
        same, _ = distill_loss(student, t, mask, kind=kind)
        np.testing.assert_allclose(float(same), 0.0, atol=1e-6)
    for t in (teacher, teacher_topk(teacher, K, 1.0)):
        assert float(distill_loss(student, t, mask, kind=kind)[0]) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_topk_with_k_equal_vocab_equals_full_logits(kind):
    student, teacher, mask = make(1)
    full, _ = distill_loss(student, teacher, mask, kind=kind, temperature=0.8)
    topk, _ = distill_loss(student, teacher_topk(teacher, V, 0.8), mask, kind=kind, temperature=0.8)
    np.testing.assert_allclose(float(topk), float(full), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_distill_is_finite_with_padded_vocab_and_empty_rest_buckets(kind):
    student, teacher, mask = make(2)
    student[..., -1] = teacher[..., -1] = -np.inf  # a padded vocab entry, masked in both models
    cases = [(student.copy(), teacher.copy())]  # full logits: only the padded entry
    teacher[0, :, K:] = -np.inf  # teacher's rest mass exactly 0 on row 0
    idx, lp = teacher_topk(teacher, K, 1.0)
    outside = np.ones((T, V), bool)
    np.put_along_axis(outside, np.asarray(idx[2]), False, axis=-1)
    student[2][outside] = -np.inf  # student's rest mass exactly 0 on row 2
    for s, t in cases + [(student, (idx, lp))]:
        f = lambda x, t=t: distill_loss(x, t, mask, kind=kind)[0]
        loss, grad = jax.value_and_grad(f)(s)
        assert np.isfinite(float(loss)) and float(loss) > 0
        assert np.all(np.isfinite(np.asarray(grad)))


def test_distill_four_micro_batches_with_full_normalizer_equal_the_full_batch():
    student, teacher, mask = make(2)
    idx, lp = teacher_topk(teacher, K, 1.0)

    def loss_and_grad(s, i, l, m, norm):
        f = lambda x: distill_loss(x, (i, l), m, kind="jsd", normalizer=norm)[0]
        return jax.value_and_grad(f)(s)

    full_loss, full_grad = loss_and_grad(student, idx, lp, mask, None)
    norm = batch_normalizer(mask)
    rows = [slice(i, i + 1) for i in range(B)]
    parts = [loss_and_grad(student[r], idx[r], lp[r], mask[r], norm) for r in rows]
    np.testing.assert_allclose(sum(float(p[0]) for p in parts), float(full_loss), rtol=1e-5)
    grads = np.concatenate([np.asarray(p[1]) for p in parts])
    np.testing.assert_allclose(grads, np.asarray(full_grad), rtol=1e-5, atol=1e-8)


def test_jsd_beta_outside_open_interval_raises():
    student, teacher, mask = make()
    with pytest.raises(ValueError, match="beta"):
        distill_loss(student, teacher, mask, kind="jsd", beta=1.0)


def test_sft_loss_matches_reference_and_accumulates():
    student, _, mask = make(3)
    rng = np.random.default_rng(3)
    targets = rng.integers(0, V, (B, T))
    targets[0, :2] = student[0, :2].argmax(-1)  # some correct argmax predictions
    loss, m = sft_loss(student, targets, mask)
    nll, correct, n = 0.0, 0, 0
    for b in range(B):
        for t in range(T):
            if mask[b, t]:
                nll -= _log_softmax(student[b, t], 1.0)[targets[b, t]]
                correct += int(np.argmax(student[b, t]) == targets[b, t])
                n += 1
    np.testing.assert_allclose(float(loss), nll / n, rtol=1e-5)
    np.testing.assert_allclose(float(m["token_accuracy"]), correct / n, rtol=1e-6)
    assert float(m["num_tokens"]) == n

    f = lambda x, y, w, norm: sft_loss(x, y, w, normalizer=norm)[0]
    full_grad = jax.grad(f)(student, targets, mask, None)
    norm = batch_normalizer(mask)
    rows = [slice(i, i + 1) for i in range(B)]
    total = sum(float(f(student[r], targets[r], mask[r], norm)) for r in rows)
    grads = np.concatenate([np.asarray(jax.grad(f)(student[r], targets[r], mask[r], norm))
                            for r in rows])  # fmt: skip
    np.testing.assert_allclose(total, float(loss), rtol=1e-5)
    np.testing.assert_allclose(grads, np.asarray(full_grad), rtol=1e-5, atol=1e-8)
