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


CASES = [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.5), ("jsd", 0.2)]


def test_every_kind_on_full_and_topk_teachers_matches_reference():
    student, teacher, mask = make()
    temp = 1.5
    pair = teacher_topk(teacher, K, temp)

    @jax.jit  # one compile for all cases
    def losses(student, teacher, pair, mask):
        return [
            distill_loss(student, t, mask, kind=kind, beta=beta, temperature=temp)
            for kind, beta in CASES
            for t in (teacher, pair)
        ]

    got = iter(losses(student, teacher, pair, mask))
    pair = tuple(np.asarray(a) for a in pair)
    for kind, beta in CASES:
        for topk in (None, pair):
            loss, metrics = next(got)
            want = ref_distill(student, teacher, mask, kind, beta, temp, topk=topk)
            np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6, err_msg=kind)
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


@jax.jit
def _all_kinds(student, teacher, mask):
    """{kind: (vs itself full, vs itself top-k, vs teacher full, vs teacher top-k, top-k k=V)}."""
    out = {}
    for kind in KINDS:
        f = lambda t, kind=kind: distill_loss(student, t, mask, kind=kind, temperature=0.8)[0]
        out[kind] = (
            f(student), f(teacher_topk(student, K, 0.8)), f(teacher),
            f(teacher_topk(teacher, K, 0.8)), f(teacher_topk(teacher, V, 0.8)),
        )  # fmt: skip
    return out


def test_divergence_is_zero_for_identical_positive_otherwise_and_topk_v_equals_full():
    student, teacher, mask = make(1)
    for kind, (same, same_k, other, other_k, other_v) in _all_kinds(student, teacher, mask).items():
        np.testing.assert_allclose([float(same), float(same_k)], 0.0, atol=1e-6, err_msg=kind)
        assert float(other) > 1e-3 and float(other_k) > 1e-3, kind
        np.testing.assert_allclose(float(other_v), float(other), rtol=1e-5, atol=1e-7)


def test_distill_is_finite_with_padded_vocab_and_empty_rest_buckets():
    student, teacher, mask = make(2)
    student[..., -1] = teacher[..., -1] = -np.inf  # a padded vocab entry, masked in both models
    full_student, full_teacher = student.copy(), teacher.copy()
    teacher[0, :, K:] = -np.inf  # teacher's rest mass exactly 0 on row 0
    idx, lp = teacher_topk(teacher, K, 1.0)
    outside = np.ones((T, V), bool)
    np.put_along_axis(outside, np.asarray(idx[2]), False, axis=-1)
    student[2][outside] = -np.inf  # student's rest mass exactly 0 on row 2

    @jax.jit
    def values_and_grads(cases):
        vg = lambda s, t, k: jax.value_and_grad(lambda x: distill_loss(x, t, mask, kind=k)[0])(s)
        return [vg(s, t, k) for k in KINDS for s, t in cases]

    for loss, grad in values_and_grads([(full_student, full_teacher), (student, (idx, lp))]):
        assert np.isfinite(float(loss)) and float(loss) > 0
        assert np.all(np.isfinite(np.asarray(grad)))


def test_distill_four_micro_batches_with_full_normalizer_equal_the_full_batch():
    # The normaliser handling is shared by every kind and teacher format; one is checked.
    student, teacher, mask = make(2)
    vg = jax.jit(
        jax.value_and_grad(lambda s, t, m, n: distill_loss(s, t, m, kind="jsd", normalizer=n)[0])
    )
    full_loss, full_grad = vg(student, teacher, mask, None)
    norm = batch_normalizer(mask)
    parts = [vg(student[i : i + 1], teacher[i : i + 1], mask[i : i + 1], norm) for i in range(B)]
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
    vg = jax.jit(
        jax.value_and_grad(lambda x, y, w, n: sft_loss(x, y, w, normalizer=n), has_aux=True)
    )
    (loss, m), full_grad = vg(student, targets, mask, None)
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

    norm = batch_normalizer(mask)
    parts = [vg(student[i : i + 1], targets[i : i + 1], mask[i : i + 1], norm) for i in range(B)]
    np.testing.assert_allclose(sum(float(p[0][0]) for p in parts), float(loss), rtol=1e-5)
    grads = np.concatenate([np.asarray(p[1]) for p in parts])
    np.testing.assert_allclose(grads, np.asarray(full_grad), rtol=1e-5, atol=1e-8)
