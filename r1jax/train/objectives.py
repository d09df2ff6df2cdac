"""Training objectives: SFT, logit distillation and GRPO, each chosen once (the reward model's:
``reward_objective``).

An ``Objective`` bundles two pure functions the train step calls:

  normalizer(batch) -> f32 []       the loss denominator over the FULL batch (computed before
                                    micro-batching, so accumulated gradients equal one big batch)
  loss(params, frozen, batch, normalizer) -> (loss f32 [], metrics {str: f32 []})
  empty(batch) -> bool []           optional: the (micro-)batch adds nothing (the step skips it)

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
  Reward model (``ModelConfig.score_head``): chosen_tokens, rejected_tokens [B, T] right-padded
    (template(prompt) + response + EOS), chosen_last, rejected_last [B] (each row's last real
    token), pair_mask [B] (0 on filler pairs).
  GRPO packed (``GRPOConfig.pack_length`` = T > 0; ``r1jax.train.grpo_packing``): tokens,
    segment_ids, positions, completion_mask [B, T], old_logprobs, advantages (per token) and
    optionally sampler_logprobs f32 [B, T], all target-aligned like SFT's; num_sequences [B].

Memory linear in T: no objective forms ``[B, T, V]`` logits. Each takes the final hidden states
``[B, T, D]`` and runs the LM head with the loss's per-position terms over chunks of
``ModelConfig.logits_chunk`` positions under remat (``over_chunks``, ``losses.chunked_map``);
the ``[B, T]`` terms then go to the losses' reductions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from r1jax import losses
from r1jax.config import DistillConfig, GRPOConfig
from r1jax.model import ModelConfig, logits_from_hidden
from r1jax.model.moe import RouterStats
from r1jax.model.shared_prefix import grouped_next_token_hidden
from r1jax.model.transformer import hidden_states_and_router, rope_lookup


class Objective(NamedTuple):
    """What the train step needs from a loss (see the module docstring); ``row_group``: rows
    a micro-batch must keep together (GRPO's prompt groups when the update shares prompts)."""

    name: str
    loss: Callable
    normalizer: Callable
    empty: Callable | None = None
    row_group: int = 1


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


def head_params(params: dict, config: ModelConfig) -> dict:
    """The one weight ``logits_from_hidden`` reads: ``{"embed": [V, D]}`` when tied, else
    ``{"lm_head": [D, V]}`` (only it enters the chunk scan, so only it gets a gradient there)."""
    key = "embed" if config.tie_embeddings else "lm_head"
    return {key: params[key]}


def over_chunks(fn: Callable, models: tuple, xs: dict, chunk: int):
    """``fn(logits, xs_chunk)`` for all positions, over chunks of ``chunk`` positions under remat
    (``losses.chunked_map``), so only ``[B, chunk, V]`` logits exist at a time.

    ``models``: ``(params, config, hidden [B, T, D])`` triples; ``logits`` is the tuple of their
    f32 ``[B, C, V]`` logits for the chunk. ``xs``: further ``[B, T, ...]`` inputs (targets,
    top-k teacher), sliced alike. ``fn`` returns per-position outputs ``[B, C]``.
    """
    configs = tuple(config for _, config, _ in models)
    heads = tuple(head_params(params, config) for params, config, _ in models)

    def chunk_fn(heads, xs_chunk):
        hidden = xs_chunk["hidden"]
        logits = tuple(map(logits_from_hidden, heads, hidden, configs))
        return fn(logits, xs_chunk)

    xs = {**xs, "hidden": tuple(hidden for _, _, hidden in models)}
    return losses.chunked_map(chunk_fn, heads, xs, chunk=chunk)


def _routing(batch: dict) -> jax.Array | None:
    """The batch's replayed experts ``routing`` int32 [B, T, L', K] (rows first, as every
    batch field) in the model's ``[L', B, T, K]`` layout; None without routing replay."""
    routing = batch.get("routing")
    return None if routing is None else jnp.moveaxis(routing, 2, 0)


def _sequence_hidden(params, batch, model_config) -> tuple[jax.Array, RouterStats | None]:
    """Final hidden states at the positions predicting tokens 1..T-1 ``[B, T-1, D]``, and the
    routers' stats of a mixture of experts."""
    hidden_BTD, _, router = hidden_states_and_router(
        params,
        batch["tokens"],
        model_config,
        positions=batch["positions"],
        segment_ids=batch["segment_ids"],
        routing=_routing(batch),
    )
    return hidden_BTD[:, :-1], router


def sft_objective(params, frozen, batch, model_config, normalizer, options=None):
    """Masked next-token cross-entropy (``losses.sft_positions`` over chunks of positions, then
    ``losses.sft_reduce``); ``frozen`` is unused."""
    del frozen, options
    targets, mask = shifted_targets(batch)
    hidden, router = _sequence_hidden(params, batch, model_config)
    nll, correct = over_chunks(
        lambda logits, xs: losses.sft_positions(logits[0], xs["targets"]),
        ((params, model_config, hidden),),
        {"targets": targets},
        model_config.logits_chunk,
    )
    loss, metrics = losses.sft_reduce(nll, correct, mask, normalizer=normalizer)
    share = losses.batch_share(sft_normalizer(batch), normalizer, mask)
    return losses.add_router_losses(loss, metrics, router, model_config, share)


# ---------------------------------------------------------------------------- distill


def distill_objective(
    params, frozen, batch, model_config, normalizer, options: DistillConfig, teacher_config=None
):
    """Student-vs-teacher divergence on the target positions (``losses.distill_positions``
    over chunks of positions, then ``losses.distill_reduce``). ``teacher == "online"`` runs
    ``frozen`` with ``teacher_config`` (its logits too are made chunk by chunk); "topk" reads
    the batch's precomputed top-k. ``options.hard_weight`` > 0 adds that times the SFT loss on
    the data's own tokens (Hinton et al.'s soft + hard targets; metrics ``hard/*``)."""
    targets, mask = shifted_targets(batch)
    hidden, router = _sequence_hidden(params, batch, model_config)
    models = [(params, model_config, hidden)]
    xs = {}
    if options.teacher == "topk":
        xs["topk"] = (batch["teacher_topk_indices"][:, :-1], batch["teacher_topk_logprobs"][:, :-1])
    else:
        frozen = jax.lax.stop_gradient(frozen)
        models.append((frozen, teacher_config, _sequence_hidden(frozen, batch, teacher_config)[0]))
    kw = dict(kind=options.kind, beta=options.beta, temperature=options.temperature)

    hard = options.hard_weight > 0
    if hard:
        xs["targets"] = targets

    def fn(logits, xs_chunk):
        teacher = xs_chunk["topk"] if options.teacher == "topk" else logits[1]
        soft = losses.distill_positions(logits[0], teacher, **kw)
        return (soft, losses.sft_positions(logits[0], xs_chunk["targets"])) if hard else soft

    out = over_chunks(fn, tuple(models), xs, model_config.logits_chunk)
    share = losses.batch_share(sft_normalizer(batch), normalizer, mask)
    if not hard:
        loss, metrics = losses.distill_reduce(*out, mask, normalizer=normalizer)
        return losses.add_router_losses(loss, metrics, router, model_config, share)
    soft_loss, metrics = losses.distill_reduce(*out[0], mask, normalizer=normalizer)
    hard_loss, hard_metrics = losses.sft_reduce(*out[1], mask, normalizer=normalizer)
    loss = soft_loss + options.hard_weight * hard_loss
    metrics |= {f"hard/{k}": v for k, v in hard_metrics.items() if k != "num_tokens"}
    metrics |= {"loss": loss, "soft_loss": soft_loss}
    return losses.add_router_losses(loss, metrics, router, model_config, share)


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


def completion_hidden(params, batch, model_config: ModelConfig, group: int = 1):
    """Final hidden states at the positions predicting each completion token [B, T, D], and
    the routers' stats of a mixture of experts (replaying ``batch["routing"]`` if given).
    ``group`` > 1: rows come in runs of ``group`` sharing a prompt, run once (shared_prefix)."""
    tokens, positions, seg = grpo_inputs(batch)
    p = batch["prompt_tokens"].shape[1]
    if group > 1:
        below = tokens.shape[1]  # positions count the rows' tokens
        return grouped_next_token_hidden(
            params, tokens, positions, seg, p, group, model_config, below
        ), None
    hidden, _, router = hidden_states_and_router(
        params, tokens, model_config, positions=positions, segment_ids=seg,
        routing=_routing(batch), rope=rope_lookup(model_config, positions, tokens.shape[1]),
    )  # fmt: skip
    return hidden[:, p - 1 : -1], router


def _token_terms(params, hidden, targets, model_config, temperature, entropy) -> dict:
    """``completion_terms``'s terms from final hidden states [B, T, D] and targets [B, T]."""

    def fn(logits, xs):
        out = {"logp": losses.token_logprobs(logits[0], xs["targets"], temperature)}
        if entropy:
            h = losses.token_entropy(logits[0], temperature)
            out["entropy"] = h if entropy == "grad" else jax.lax.stop_gradient(h)
        return out

    targets = {"targets": targets}
    return over_chunks(fn, ((params, model_config, hidden),), targets, model_config.logits_chunk)


def completion_terms(
    params, batch, model_config, temperature: float = 1.0, *, entropy: str = "", group: int = 1
) -> dict:
    """Per-token terms of the completion at ``temperature``, f32 [B, T] (no masking applied):
    ``"logp"`` = log pi(token | prefix), and ``"entropy"`` when ``entropy`` is "grad" (with its
    gradient) or "metric" (gradient-stopped). Computed over chunks of
    ``model_config.logits_chunk`` positions: only [B, chunk, V] logits exist at a time.
    ``group``: ``completion_hidden``'s."""
    hidden, router = completion_hidden(params, batch, model_config, group)
    targets = batch["completion_tokens"]
    terms = _token_terms(params, hidden, targets, model_config, temperature, entropy)
    return terms if router is None else terms | {"router": router}


def completion_logprobs(params, batch, model_config, temperature: float = 1.0, group: int = 1):
    """log pi(completion token | prefix) at ``temperature``: f32 [B, T] (no masking applied)."""
    return completion_terms(params, batch, model_config, temperature, group=group)["logp"]


def packed_terms(
    params, batch, model_config: ModelConfig, temperature: float = 1.0, *, entropy: str = ""
) -> dict:
    """``completion_terms`` of packed rows: f32 [B, T - 1], entry t about token t + 1 (of its
    segment: one forward over the rows, attention within segments), chunked alike."""
    hidden, router = _sequence_hidden(params, batch, model_config)
    targets = batch["tokens"][:, 1:]
    terms = _token_terms(params, hidden, targets, model_config, temperature, entropy)
    return terms if router is None else terms | {"router": router}


def packed_logprobs(params, batch, model_config: ModelConfig, temperature: float = 1.0):
    """log pi(token t | its segment's prefix): f32 [B, T], aligned with the packed batch's
    ``old_logprobs`` (0 at t = 0; meaningful where ``completion_mask`` is 1)."""
    logp = packed_terms(params, batch, model_config, temperature)["logp"]
    return jnp.pad(logp, ((0, 0), (1, 0)))


_PER_TOKEN = ("completion_mask", "old_logprobs", "advantages", "sampler_logprobs", "segment_ids")


def _packed_view(batch: dict) -> dict:
    """The packed batch's per-token arrays aligned with ``packed_terms``: [B, T - 1]."""
    return {k: batch[k][:, 1:] for k in _PER_TOKEN if k in batch}


def grpo_normalizer(batch: dict, options: GRPOConfig) -> jax.Array:
    return losses.batch_normalizer(
        batch["completion_mask"], options.aggregation, max_tokens=options.max_tokens
    )


def grpo_packed_normalizer(batch: dict, options: GRPOConfig) -> jax.Array:
    """``grpo_normalizer`` of the padded batch the packed ``batch`` was made from."""
    view = _packed_view(batch)
    return losses.batch_normalizer(
        view["completion_mask"],
        options.aggregation,
        max_tokens=options.max_tokens,
        segment_ids_BT=view["segment_ids"],
        num_sequences=jnp.sum(batch["num_sequences"]),
    )


def no_sequences(batch: dict) -> jax.Array:
    """bool []: the packed (micro-)batch holds no sequence (every row empty)."""
    return jnp.all(batch["segment_ids"] == 0)


def grpo_objective(
    params, frozen, batch, model_config, normalizer, options: GRPOConfig, packed=False, group=1
):
    """Clipped-surrogate GRPO loss (``losses.grpo_loss``) of the current policy ``params``.

    ``frozen``: reference params, used (stop-gradient) when ``options.beta > 0``. ``packed``:
    the batch is packed (``grpo_packing``); the loss and gradient are the padded batch's.
    ``group`` > 1: rows come in runs of ``group`` sharing one prompt, whose forward they share.
    """
    terms_fn = packed_terms if packed else functools.partial(completion_terms, group=group)
    view = _packed_view(batch) if packed else batch
    mask = view["completion_mask"]
    entropy = ""
    if options.entropy_coef != 0 or options.log_entropy:
        entropy = "grad" if options.entropy_coef != 0 else "metric"
    terms = terms_fn(params, batch, model_config, options.temperature, entropy=entropy)
    ref_logp = None
    if options.beta > 0:
        ref = terms_fn(frozen, batch, model_config, options.temperature)
        ref_logp = jax.lax.stop_gradient(ref["logp"])
    tis = None
    if options.tis_cap is not None:
        tis = losses.truncated_is_weights(
            view["old_logprobs"], view["sampler_logprobs"], mask, options.tis_cap
        )
    loss, metrics = losses.grpo_loss(
        terms["logp"],
        view["old_logprobs"],
        view["advantages"],
        mask,
        ref_logp_BT=ref_logp,
        beta=float(options.beta),
        eps_low=options.eps_low,
        eps_high=options.eps_high,
        aggregation=options.aggregation,
        max_tokens=options.max_tokens,
        importance=options.importance,
        tis_weights_BT=tis,
        entropy_BT=terms.get("entropy"),
        entropy_coef=float(options.entropy_coef),
        normalizer=normalizer,
        segment_ids_BT=view["segment_ids"] if packed else None,
    )
    own = (grpo_packed_normalizer if packed else grpo_normalizer)(batch, options)
    share = losses.batch_share(own, normalizer, mask, options.aggregation)
    return losses.add_router_losses(loss, metrics, terms.get("router"), model_config, share)


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


def grpo(model_config: ModelConfig, options: GRPOConfig, prompt_groups: int = 1) -> Objective:
    """The GRPO objective; the state needs ``frozen`` (the reference) iff ``options.beta > 0``.
    With ``options.pack_length`` > 0 it takes packed batches and skips empty micro-batches.
    ``prompt_groups`` > 1 (``prompt_sharing.prompt_groups``): the batch's rows come in runs of
    that many sharing a prompt, and the G rows of a prompt share its forward."""
    if not options.pack_length:
        fn = functools.partial(grpo_objective, group=prompt_groups)
        loss = functools.partial(_bind, fn, model_config=model_config, options=options)
        normalizer = functools.partial(grpo_normalizer, options=options)
        return Objective("grpo", loss, normalizer, row_group=prompt_groups)
    if prompt_groups > 1:
        raise ValueError("prompt sharing takes padded GRPO batches: config.grpo.pack_length=0")
    fn = functools.partial(grpo_objective, packed=True)
    loss = functools.partial(_bind, fn, model_config=model_config, options=options)
    normalizer = functools.partial(grpo_packed_normalizer, options=options)
    return Objective("grpo", loss, normalizer, no_sequences)


def _bind(fn, params, frozen, batch, normalizer, *, model_config, options):
    return fn(params, frozen, batch, model_config, normalizer, options)
