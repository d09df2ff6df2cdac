"""Logit distillation: forward KL, reverse KL and generalised JSD on full or top-k teachers.

Shapes: B = sequences, T = positions, V = vocab, K = teacher top-k entries.
p = teacher distribution, q = student distribution, both softmax(logits / temperature).

  forward_kl: KL(p || q) = sum p (log p - log q)            (mass-covering, what SFT approximates)
  reverse_kl: KL(q || p) = sum q (log q - log p)            (mode-seeking)
  jsd(beta):  beta * KL(p || m) + (1 - beta) * KL(q || m), m = beta p + (1 - beta) q, 0 < beta < 1
              (the generalised JSD of GKD / TRL; beta = 0.5 is the usual JSD)

The loss is not multiplied by temperature**2; scale it in the config if wanted.

Top-k teachers. A large teacher's outputs are stored as `(indices_BTK int32, logprobs_BTK f32)`
from `teacher_topk`: the K most likely tokens and their log-probs under the FULL-vocabulary
softmax at the distillation temperature (not renormalised). Both distributions are then coarsened
to K + 1 categories: the K teacher tokens, plus one "rest" bucket holding all other tokens.
  teacher: p_k = exp(logprobs_k), p_rest = 1 - sum_k p_k (set to 0 when below the fp32 rounding of
           that sum, K * 2**-23).
  student: q_k = softmax(student / temperature) at indices_k (full-vocabulary normalisation),
           q_rest = sum of the student's probabilities over the V - K other tokens (summed
           directly, not as 1 - sum, so it stays accurate when tiny).
Every kind is then the exact divergence between these two (K+1)-category distributions: it is 0
when the student equals the teacher, a lower bound of the full-vocabulary divergence, penalises
student mass outside the teacher's top-k through the rest bucket, and equals the full-logits
value when K = V. Where one side's rest mass is 0 and the other's is not, its log is floored at
log(1e-30) so the loss stays finite.
"""

from typing import Literal

import jax
import jax.numpy as jnp

from r1jax.losses.aggregation import aggregate, as_mask, masked_mean

Kind = Literal["forward_kl", "reverse_kl", "jsd"]
TopK = tuple[jax.Array, jax.Array]
_REST_FLOOR = 1e-30


def teacher_topk(logits_BTV: jax.Array, k: int, temperature: float = 1.0) -> TopK:
    """Top-k of softmax(logits / temperature): (indices int32 [B, T, K], logprobs f32 [B, T, K]).

    Sorted by decreasing probability; logprobs are full-vocabulary log-softmax values.
    """
    z = logits_BTV.astype(jnp.float32) / temperature
    values_BTK, indices_BTK = jax.lax.top_k(z, k)
    logprobs_BTK = values_BTK - jax.nn.logsumexp(z, axis=-1, keepdims=True)
    return indices_BTK.astype(jnp.int32), logprobs_BTK


def _xlogratio(a, log_a, log_b) -> jax.Array:
    """sum over the last axis of a * (log_a - log_b), with 0 * log 0 = 0.

    The logs are zeroed where a = 0 *before* the product: an outer `where` alone would still send
    0 * inf = NaN into the gradient (vocab entries masked with -inf logits, empty rest buckets).
    """
    pos = a > 0
    diff = jnp.where(pos, log_a, 0.0) - jnp.where(pos, log_b, 0.0)
    return jnp.sum(jnp.where(pos, a * diff, 0.0), axis=-1)


def _divergence(logp, logq, kind: str, beta: float) -> jax.Array:
    """Per-position divergence between categoricals given by log-probs ``[..., K + 1]`` (top-k
    teacher) or ``[..., V]`` -> ``[...]``."""
    p, q = jnp.exp(logp), jnp.exp(logq)
    if kind == "forward_kl":
        return _xlogratio(p, logp, logq)
    if kind == "reverse_kl":
        return _xlogratio(q, logq, logp)
    if kind == "jsd":
        # logaddexp(-inf, -inf) has a NaN gradient; such entries weigh 0 in both KL terms.
        both_zero = (p == 0) & (q == 0)
        logp_s, logq_s = jnp.where(both_zero, 0.0, logp), jnp.where(both_zero, 0.0, logq)
        logm = jnp.logaddexp(logp_s + jnp.log(beta), logq_s + jnp.log1p(-beta))
        return beta * _xlogratio(p, logp, logm) + (1.0 - beta) * _xlogratio(q, logq, logm)
    raise ValueError(f"kind={kind!r}: expected 'forward_kl', 'reverse_kl' or 'jsd'")


def _topk_categories(logq_BTV, indices_BTK, logprobs_BTK) -> tuple[jax.Array, jax.Array]:
    """Coarsen teacher and student to K + 1 categories: (logp [B,T,K+1], logq [B,T,K+1])."""
    k, v = indices_BTK.shape[-1], logq_BTV.shape[-1]
    logp_K = logprobs_BTK.astype(jnp.float32)
    logq_K = jnp.take_along_axis(logq_BTV, indices_BTK, axis=-1)
    if k == v:  # No rest bucket: the K categories are the whole vocabulary.
        return logp_K, logq_K
    p_rest = 1.0 - jnp.sum(jnp.exp(logp_K), axis=-1, keepdims=True)
    p_rest = jnp.where(p_rest > k * 2.0**-23, p_rest, 0.0)
    # Membership of each vocab entry in the teacher's top-k: a scatter, not a [B,T,K,V] one-hot.
    in_topk = jnp.put_along_axis(
        jnp.zeros(logq_BTV.shape, bool), indices_BTK, True, axis=-1, inplace=False
    )
    q_rest = jnp.sum(jnp.where(in_topk, 0.0, jnp.exp(logq_BTV)), axis=-1, keepdims=True)
    # Floor the rest masses (a zero on one side only would give an infinite KL); a floored
    # category weighs 1e-30 in the sums, i.e. nothing.
    logp_rest = jnp.log(jnp.maximum(p_rest, _REST_FLOOR))
    logq_rest = jnp.log(jnp.maximum(q_rest, _REST_FLOOR))
    return (
        jnp.concatenate([logp_K, logp_rest], axis=-1),
        jnp.concatenate([logq_K, logq_rest], axis=-1),
    )


def distill_positions(
    student_logits_BTV: jax.Array,
    teacher: jax.Array | TopK,
    *,
    kind: Kind = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> tuple[jax.Array, jax.Array]:
    """Per-position terms of ``distill_loss`` (same arguments): (divergence f32 [B, T],
    top1_agreement f32 [B, T] = student argmax == teacher argmax).

    Needs only the logits (or top-k) of the positions it returns, so ``r1jax.losses.chunked``
    can run it over chunks of positions.
    """
    if kind == "jsd" and not 0.0 < beta < 1.0:
        raise ValueError(f"distill_loss: jsd needs 0 < beta < 1, got beta={beta}")
    logq_BTV = jax.nn.log_softmax(student_logits_BTV.astype(jnp.float32) / temperature, axis=-1)
    if isinstance(teacher, tuple | list):
        indices_BTK, logprobs_BTK = jax.lax.stop_gradient(tuple(teacher))
        logp, logq = _topk_categories(logq_BTV, indices_BTK.astype(jnp.int32), logprobs_BTK)
        teacher_top1_BT = jnp.take_along_axis(
            indices_BTK, jnp.argmax(logprobs_BTK, axis=-1)[..., None], axis=-1
        )[..., 0]
    else:
        t = jax.lax.stop_gradient(teacher).astype(jnp.float32) / temperature
        logp, logq = jax.nn.log_softmax(t, axis=-1), logq_BTV
        teacher_top1_BT = jnp.argmax(t, axis=-1)
    div_BT = _divergence(logp, logq, kind, beta)
    agree_BT = (jnp.argmax(logq_BTV, axis=-1) == teacher_top1_BT).astype(jnp.float32)
    return div_BT, agree_BT


def distill_reduce(
    div_BT: jax.Array,
    agree_BT: jax.Array,
    mask_BT: jax.Array,
    *,
    normalizer: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """``distill_loss`` from its per-position terms (``distill_positions``), all [B, T]."""
    m = as_mask(mask_BT)
    loss = aggregate(div_BT, m, "token_mean", normalizer=normalizer)
    metrics = {
        "loss": loss,
        "divergence": masked_mean(div_BT, m),
        "top1_agreement": masked_mean(agree_BT, m),
        "num_tokens": jnp.sum(m),
    }
    return loss, jax.lax.stop_gradient(metrics)


def distill_loss(
    student_logits_BTV: jax.Array,
    teacher: jax.Array | TopK,
    mask_BT: jax.Array,
    *,
    kind: Kind = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    normalizer: jax.Array | float | None = None,
) -> tuple[jax.Array, dict]:
    """Token-mean divergence between teacher and student: (f32 scalar, metrics).

    Args:
      student_logits_BTV: [B, T, V] student logits (differentiated).
      teacher: full teacher logits [B, T, V], or the top-k pair `(indices_BTK, logprobs_BTK)` from
        `teacher_topk(teacher_logits, k, temperature)` at the SAME temperature (see the module
        docstring for the exact top-k approximation). Treated as a constant.
      mask_BT: [B, T] bool/float, 1 where the loss applies.
      kind: "forward_kl" KL(teacher||student), "reverse_kl" KL(student||teacher), or "jsd".
      beta: generalised-JSD mixing weight of the teacher, 0 < beta < 1 (only for "jsd").
      temperature: divides student (and full teacher) logits.
      normalizer: None = this batch's valid-token count; for gradient accumulation pass
        `batch_normalizer(full_mask_BT)` to every micro-batch and sum the losses.

    Returns: (loss, {"loss", "divergence" (local token mean), "top1_agreement", "num_tokens"}).
    """
    div_BT, agree_BT = distill_positions(
        student_logits_BTV, teacher, kind=kind, beta=beta, temperature=temperature
    )
    return distill_reduce(div_BT, agree_BT, mask_BT, normalizer=normalizer)
