"""Training objectives: SFT, logit distillation and GRPO, each chosen once at setup.

An ``Objective`` bundles two pure functions the train step calls:

  normalizer(batch) -> f32 []       the loss denominator over the FULL batch (computed before
                                    micro-batching, so accumulated gradients equal one big batch)
  loss(params, frozen, batch, normalizer) -> (loss f32 [], metrics {str: f32 []})

They are ``functools.partial``s of the module-level functions
``*_objective(params, frozen, batch, model_config, normalizer, options)`` and ``*_normalizer``.

Batches (B rows, T positions, P prompt positions, K teacher top-k), all int32 unless noted:
  SFT / distill: tokens, loss_mask, segment_ids, positions [B, T]; loss_mask[t] = 1 means token t
    is a target, predicted by the logits at t - 1 (the ``r1jax.data`` convention).
    Distill with a precomputed teacher adds teacher_topk_indices int32 / teacher_topk_logprobs f32
    [B, T, K], aligned with the LOGITS: entry t is the teacher's distribution at position t, i.e.
    ``teacher_topk(forward(teacher, tokens))``, predicting token t + 1.
  GRPO: prompt_tokens, prompt_mask [B, P] (left-padded), completion_tokens, completion_mask
    [B, T], old_logprobs f32 [B, T], advantages f32 [B], and optionally sampler_logprobs f32 [B, T]
    (needed when ``GRPOConfig.tis_cap`` is set).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1jax import losses
from r1jax.config import DistillConfig, GRPOConfig
from r1jax.model import ModelConfig, forward, hidden_states, logits_from_hidden


class Objective(NamedTuple):
    """What the train step needs from a loss (see the module docstring)."""

    name: str
    loss: Callable
    normalizer: Callable


# ----------------------------------------------------------------------------- SFT


def shifted_targets(batch: dict) -> tuple[jax.Array, jax.Array]:
    """(targets [B, T-1], mask [B, T-1] f32): token t+1 and whether the logits at t predict it.

    A target counts only inside the segment of the position predicting it (packing).
    """
    seg = batch["segment_ids"]
    same_segment = (seg[:, 1:] == seg[:, :-1]) & (seg[:, 1:] > 0)
    mask = (batch["loss_mask"][:, 1:] > 0) & same_segment
    return batch["tokens"][:, 1:], mask.astype(jnp.float32)


def sft_normalizer(batch: dict) -> jax.Array:
    return losses.batch_normalizer(shifted_targets(batch)[1], "token_mean")


def _student_logits(params, batch, model_config) -> jax.Array:
    logits_BTV, _ = forward(
        params,
        batch["tokens"],
        model_config,
        positions=batch["positions"],
        segment_ids=batch["segment_ids"],
    )
    return logits_BTV[:, :-1]


def sft_objective(params, frozen, batch, model_config, normalizer, options=None):
    """Masked next-token cross-entropy via ``losses.sft_loss``; ``frozen`` is unused."""
    del frozen, options
    targets, mask = shifted_targets(batch)
    logits = _student_logits(params, batch, model_config)
    return losses.sft_loss(logits, targets, mask, normalizer=normalizer)


# ---------------------------------------------------------------------------- distill


def distill_objective(
    params, frozen, batch, model_config, normalizer, options: DistillConfig, teacher_config=None
):
    """Student-vs-teacher divergence on the target positions via ``losses.distill_loss``;
    ``teacher == "online"`` runs ``frozen`` with ``teacher_config``, "topk" reads the batch."""
    _, mask = shifted_targets(batch)
    logits = _student_logits(params, batch, model_config)
    if options.teacher == "topk":
        teacher = (batch["teacher_topk_indices"][:, :-1], batch["teacher_topk_logprobs"][:, :-1])
    else:
        teacher = jax.lax.stop_gradient(_student_logits(frozen, batch, teacher_config))
    return losses.distill_loss(
        logits,
        teacher,
        mask,
        kind=options.kind,
        beta=options.beta,
        temperature=options.temperature,
        normalizer=normalizer,
    )


# ------------------------------------------------------------------------------ GRPO


def grpo_inputs(batch: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Prompt + completion as one sequence: (tokens, positions, segment_ids) int32 [B, P+T].

    Left padding of the prompt is segment 0; positions count only real tokens. Completion
    positions after an EOS are attended causally only by later (masked) positions.
    """
    tokens = jnp.concatenate([batch["prompt_tokens"], batch["completion_tokens"]], axis=1)
    prompt_seg = (batch["prompt_mask"] > 0).astype(jnp.int32)
    seg = jnp.concatenate([prompt_seg, jnp.ones_like(batch["completion_tokens"])], axis=1)
    positions = jnp.maximum(jnp.cumsum(seg, axis=1) - 1, 0).astype(jnp.int32)
    return tokens.astype(jnp.int32), positions, seg


def completion_logits(params, batch, model_config: ModelConfig) -> jax.Array:
    """Logits predicting each completion token: f32 [B, T, V] (the LM head runs on T only)."""
    tokens, positions, seg = grpo_inputs(batch)
    p = batch["prompt_tokens"].shape[1]
    hidden, _ = hidden_states(params, tokens, model_config, positions=positions, segment_ids=seg)
    return logits_from_hidden(params, hidden[:, p - 1 : -1], model_config)


def completion_logprobs(params, batch, model_config: ModelConfig, temperature: float = 1.0):
    """log pi(completion token | prefix) at ``temperature``: f32 [B, T] (no masking applied)."""
    logits = completion_logits(params, batch, model_config)
    return losses.token_logprobs(logits, batch["completion_tokens"], temperature)


def grpo_normalizer(batch: dict, options: GRPOConfig) -> jax.Array:
    return losses.batch_normalizer(
        batch["completion_mask"], options.aggregation, max_tokens=options.max_tokens
    )


def grpo_objective(params, frozen, batch, model_config, normalizer, options: GRPOConfig):
    """Clipped-surrogate GRPO loss (``losses.grpo_loss``) of the current policy ``params``.

    ``frozen``: reference params, used (stop-gradient) when ``options.beta > 0``.
    """
    mask = batch["completion_mask"]
    logits = completion_logits(params, batch, model_config)
    logp = losses.token_logprobs(logits, batch["completion_tokens"], options.temperature)
    ref_logp = None
    if options.beta > 0:
        ref_logp = jax.lax.stop_gradient(
            completion_logprobs(frozen, batch, model_config, options.temperature)
        )
    entropy = None
    if options.entropy_coef != 0 or options.log_entropy:
        entropy = losses.token_entropy(logits, options.temperature)
        if options.entropy_coef == 0:
            entropy = jax.lax.stop_gradient(entropy)
    tis = None
    if options.tis_cap is not None:
        tis = losses.truncated_is_weights(
            batch["old_logprobs"], batch["sampler_logprobs"], mask, options.tis_cap
        )
    return losses.grpo_loss(
        logp,
        batch["old_logprobs"],
        batch["advantages"],
        mask,
        ref_logp_BT=ref_logp,
        beta=float(options.beta),
        eps_low=options.eps_low,
        eps_high=options.eps_high,
        aggregation=options.aggregation,
        max_tokens=options.max_tokens,
        importance=options.importance,
        tis_weights_BT=tis,
        entropy_BT=entropy,
        entropy_coef=float(options.entropy_coef),
        normalizer=normalizer,
    )


# ---------------------------------------------------------------------------- setup


def sft(model_config: ModelConfig) -> Objective:
    """The SFT objective for ``model_config`` (also distillation on teacher traces)."""
    loss = functools.partial(_bind, sft_objective, model_config=model_config, options=None)
    return Objective("sft", loss, sft_normalizer)


def distill(
    model_config: ModelConfig, options: DistillConfig, teacher_config: ModelConfig | None = None
) -> Objective:
    """Logit distillation of the student ``model_config`` towards ``frozen`` (the online
    teacher, of ``teacher_config``) or top-k targets in the batch."""
    if options.teacher not in ("online", "topk"):
        raise ValueError(f"config.distill.teacher={options.teacher!r}; 'online' or 'topk'")
    if options.teacher == "online" and teacher_config is None:
        raise ValueError("distill teacher='online' needs the teacher's ModelConfig")
    fn = functools.partial(distill_objective, teacher_config=teacher_config)
    loss = functools.partial(_bind, fn, model_config=model_config, options=options)
    return Objective("distill", loss, sft_normalizer)


def grpo(model_config: ModelConfig, options: GRPOConfig) -> Objective:
    """The GRPO objective; the state needs ``frozen`` (the reference) iff ``options.beta > 0``."""
    loss = functools.partial(_bind, grpo_objective, model_config=model_config, options=options)
    return Objective("grpo", loss, functools.partial(grpo_normalizer, options=options))


def _bind(fn, params, frozen, batch, normalizer, *, model_config, options):
    return fn(params, frozen, batch, model_config, normalizer, options)
