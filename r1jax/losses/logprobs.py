"""Per-token log-probabilities and entropies from logits (B = sequences, T = positions, V = vocab).

Both are computed in float32 from `logits / temperature`: the sampler's pi_old log-probs are taken
from the same temperature-scaled distribution before any top-k/top-p truncation, so the loss must
recompute exactly that distribution or the importance ratio is biased (SPEC section 11).
"""

import jax
import jax.numpy as jnp


def _scaled(logits_BTV: jax.Array, temperature: float) -> jax.Array:
    return logits_BTV.astype(jnp.float32) / temperature


def token_logprobs(
    logits_BTV: jax.Array, targets_BT: jax.Array, temperature: float = 1.0
) -> jax.Array:
    """log softmax(logits / temperature) at `targets`: float32 [B, T].

    Args:
      logits_BTV: [B, T, V], any float dtype; position t predicts targets_BT[:, t].
      targets_BT: [B, T] integer token ids in [0, V).
      temperature: > 0.

    Only a logsumexp over V and a gather are needed; the full [B, T, V] log-softmax is never
    formed as an output (XLA fuses the scale, the cast and the reduction).
    """
    z = _scaled(logits_BTV, temperature)
    lse_BT = jax.nn.logsumexp(z, axis=-1)
    picked_BT = jnp.take_along_axis(z, targets_BT[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked_BT - lse_BT


def token_entropy(logits_BTV: jax.Array, temperature: float = 1.0) -> jax.Array:
    """Entropy of softmax(logits / temperature) per position: float32 [B, T], in nats.

    Uses H = -sum_v p_v (z_v - logsumexp(z)): the elementwise terms fuse into the reduction,
    and subtracting the logsumexp per entry avoids the cancellation of logsumexp(z) - sum p z.
    """
    z = _scaled(logits_BTV, temperature)
    lse_BT = jax.nn.logsumexp(z, axis=-1)
    logp = z - lse_BT[..., None]
    # Vocabulary entries masked with -inf logits have p = 0; 0 * -inf would be NaN, in the value
    # and (through a discarded where branch) in the gradient, so the log is zeroed first.
    finite = jnp.where(logp > -jnp.inf, logp, 0.0)
    return -jnp.sum(jnp.exp(logp) * finite, axis=-1)
