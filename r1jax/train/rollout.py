"""The GRPO rollout stage: prompts -> G samples each -> rewards -> advantages -> a GRPO batch.

Shape letters (the key in ``r1jax/__init__.py``): Q prompts (groups) per update, G samples per
prompt, R = Q * G rows, P prompt width, T = ``max_new_tokens``. Rows are group-contiguous: row
``i * G + j`` is sample j of prompt i, which is the layout ``r1jax.losses.group_advantages``
expects.

Advantages are computed here, on the WHOLE assembled batch of Q complete groups, before the train
step splits it into micro-batches (SPEC section 11: a micro-batch smaller than G must never
regroup rewards).

The switches that the field converged on after R1 (``GRPOConfig``):
  - DAPO dynamic sampling: groups whose G rewards are all equal carry no gradient; they are
    dropped and further prompts are sampled until Q groups are kept or ``max_sampling_rounds``
    is reached (then the batch is filled up with dropped groups, counted, to keep shapes fixed);
  - masking truncated completions (``finish_reason == "length"``) out of the loss;
  - DAPO's soft overlong penalty, counted in tokens: 0 up to ``max_new_tokens - overlong_cache``,
    then linear down to -1 at ``max_new_tokens``.
The stage is host code around three callables (sample, score, next prompt batch), so every
switch is testable without a model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from r1jax import losses
from r1jax.config import GRPOConfig
from r1jax.data.tokenizer import ClippedVocabTokenizer  # noqa: F401  (re-exported)
from r1jax.rewards.shaping import overlong_penalty


@dataclasses.dataclass
class Rollout:
    """Host results of sampling and scoring R rows (group-contiguous).

    prompt_tokens/prompt_mask int32 [R, P] (left-padded); tokens/mask int32 [R, T]; logprobs f32
    [R, T] (the sampler's); lengths int32 [R]; finish_reason str [R]; completions: R strings;
    rewards f32 [R] (total, overlong penalty included); components: name -> f32 [R];
    routing int16 [R, P + T, L', K] (``grpo.routing_replay``): each input token's experts.
    """

    prompt_tokens: np.ndarray
    prompt_mask: np.ndarray
    tokens: np.ndarray
    mask: np.ndarray
    logprobs: np.ndarray
    lengths: np.ndarray
    finish_reason: np.ndarray
    completions: list[str]
    rewards: np.ndarray
    components: dict[str, np.ndarray]
    routing: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.tokens.shape[0])


# ------------------------------------------------------------------------ pure pieces


def prompt_lists(batch: Mapping[str, Any]) -> tuple[list[list[int]], np.ndarray]:
    """Token-id lists of the valid prompts of a ``make_rl_dataset`` batch and their row indices."""
    tokens, mask = np.asarray(batch["prompt_tokens"]), np.asarray(batch["prompt_mask"])
    valid = np.asarray(batch.get("valid", np.ones(len(tokens), bool)), bool)
    rows = np.flatnonzero(valid)
    return [tokens[i][mask[i] > 0].tolist() for i in rows], rows


def repeat_fields(fields: Mapping[str, Sequence], rows: np.ndarray, group_size: int) -> dict:
    """Each field's entries of ``rows``, each repeated G times (aligned with the R samples)."""
    return {k: [v[i] for i in rows for _ in range(group_size)] for k, v in fields.items()}


def compute_advantages(rewards_R: np.ndarray, options: GRPOConfig) -> np.ndarray:
    """``losses.group_advantages`` over the whole batch of complete groups: f32 [R]."""
    adv = losses.group_advantages(
        jnp.asarray(rewards_R, jnp.float32),
        options.num_samples,
        scale=options.advantage_scale,
        baseline=options.advantage_baseline,
    )
    return np.asarray(adv, np.float32)


def degenerate_groups(rewards_R: np.ndarray, group_size: int) -> np.ndarray:
    """bool [Q]: groups whose rewards are all equal (``losses.group_is_degenerate``)."""
    return np.asarray(losses.group_is_degenerate(jnp.asarray(rewards_R, jnp.float32), group_size))


def _left_pad_to(x: np.ndarray, width: int, value: int) -> np.ndarray:
    return np.pad(x, ((0, 0), (width - x.shape[1], 0)), constant_values=value)


def concat_rollouts(parts: Sequence[Rollout], pad_id: int) -> Rollout:
    """Rows of several rollouts in order; prompts re-left-padded to the widest."""
    width = max(p.prompt_tokens.shape[1] for p in parts)
    arrays = {}
    for f in dataclasses.fields(Rollout):
        values = [getattr(p, f.name) for p in parts]
        if f.name == "prompt_tokens":
            values = [_left_pad_to(v, width, pad_id) for v in values]
        elif f.name == "prompt_mask":
            values = [_left_pad_to(v, width, 0) for v in values]
        elif f.name == "routing" and values[0] is not None:
            pad = lambda v, p: np.pad(
                v, ((0, 0), (width - p, 0), (0, 0), (0, 0)), constant_values=-1
            )
            values = [pad(v, p.prompt_tokens.shape[1]) for v, p in zip(values, parts, strict=True)]
        if f.name == "routing" and values[0] is None:
            arrays[f.name] = None
        elif f.name == "completions":
            arrays[f.name] = [c for v in values for c in v]
        elif f.name == "components":
            arrays[f.name] = {k: np.concatenate([v[k] for v in values]) for k in values[0]}
        else:
            arrays[f.name] = np.concatenate(values)
    return Rollout(**arrays)


def take_groups(rollout: Rollout, groups: np.ndarray, group_size: int) -> Rollout:
    """The rows of the given group indices, each group's G rows kept together and in order."""
    rows = (np.asarray(groups, np.int64)[:, None] * group_size + np.arange(group_size)).reshape(-1)
    picked = {}
    for f in dataclasses.fields(Rollout):
        v = getattr(rollout, f.name)
        if v is None:
            picked[f.name] = None
        elif f.name == "completions":
            picked[f.name] = [v[i] for i in rows]
        elif f.name == "components":
            picked[f.name] = {k: c[rows] for k, c in v.items()}
        else:
            picked[f.name] = v[rows]
    return Rollout(**picked)


def build_grpo_batch(rollout: Rollout, advantages_R: np.ndarray, options: GRPOConfig) -> dict:
    """The train step's GRPO batch (``r1jax.train.objectives``): NumPy leaves with R rows.

    ``old_logprobs`` are the sampler's (pi_old for mu = 1); the loop replaces them with the
    trainer's own log-probs when mu > 1 or under the TIS correction. With ``mask_truncated``,
    rows cut at ``max_new_tokens`` get an all-zero ``completion_mask``.
    """
    mask = rollout.mask.astype(np.int32)
    if options.mask_truncated:
        mask = mask * (rollout.finish_reason != "length")[:, None].astype(np.int32)
    batch = {
        "prompt_tokens": rollout.prompt_tokens.astype(np.int32),
        "prompt_mask": rollout.prompt_mask.astype(np.int32),
        "completion_tokens": rollout.tokens.astype(np.int32),
        "completion_mask": mask,
        "old_logprobs": rollout.logprobs.astype(np.float32),
        "advantages": np.asarray(advantages_R, np.float32),
    }
    if options.keep_sampler_logprobs:
        batch["sampler_logprobs"] = rollout.logprobs.astype(np.float32)
    if rollout.routing is not None:
        batch["routing"] = rollout.routing
    return batch


# ------------------------------------------------------------------------------ stage


def score_rollout(
    reward, sample, completions: list[str], prompts: list[str], fields: dict, options
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores R completions with ``reward.evaluate`` (e.g. a long-lived ``CompositeReward``,
    whose process pool does the work) and adds the overlong penalty: (total f32 [R], components).

    ``fields`` are already repeated per sample; ``completion_lengths`` (token counts, stop token
    included) is added for the length rewards.
    """
    lengths = [int(n) for n in sample.lengths]
    result = reward.evaluate(prompts, completions, **fields, completion_lengths=lengths)
    components = {k: np.asarray(v, np.float32) for k, v in result.components.items()}
    total = np.asarray(result.total, np.float32)
    if options.overlong_cache > 0:
        penalty = overlong_penalty(
            sample.lengths, options.max_new_tokens, options.overlong_cache
        ).astype(np.float32)
        components["overlong"] = penalty
        total = total + options.overlong_weight * penalty
    return total, components


def sample_and_score(prompt_batch: Mapping[str, Any], sample_fn, reward, tokenizer, options):
    """One round: the valid prompts of a data batch -> G samples each -> scored ``Rollout``.

    ``sample_fn(prompts: list[list[int]]) -> SampleOutput`` (group-contiguous rows).
    """
    prompts, rows = prompt_lists(prompt_batch)
    sample = sample_fn(prompts)
    g = options.num_samples
    if sample.tokens.shape[0] != len(prompts) * g:
        raise RuntimeError(
            f"sampler returned {sample.tokens.shape[0]} rows for {len(prompts)} prompts x G={g}"
        )
    completions = [tokenizer.decode(ids) for ids in sample.completions()]
    texts = [prompt_batch["prompts"][i] for i in rows for _ in range(g)]
    fields = repeat_fields(prompt_batch.get("fields", {}), rows, g)
    total, components = score_rollout(reward, sample, completions, texts, fields, options)
    return Rollout(
        prompt_tokens=sample.prompt_tokens,
        prompt_mask=sample.prompt_mask,
        tokens=sample.tokens,
        mask=sample.mask,
        logprobs=sample.logprobs,
        lengths=sample.lengths,
        finish_reason=np.asarray(sample.finish_reason),
        completions=completions,
        rewards=total,
        components=components,
        routing=getattr(sample, "routing", None),
    )


def collect(
    next_prompts: Callable[[int], Mapping[str, Any]],
    sample_fn: Callable[[list[list[int]], int], Any],
    reward,
    tokenizer,
    options: GRPOConfig,
    *,
    num_prompts: int,
    pad_id: int = 0,
    all_done: Callable[[bool], bool] = bool,
    owner_rewards: Callable[[np.ndarray], np.ndarray] = np.asarray,
) -> tuple[Rollout, dict[str, float]]:
    """Rounds of ``sample_and_score`` until ``num_prompts`` groups are gathered.

    ``next_prompts(round)`` returns the next data batch; ``sample_fn(prompts, round)`` samples it
    (the round picks the PRNG key). Without dynamic sampling one round is taken. With it,
    degenerate groups are dropped until ``num_prompts`` remain or ``max_sampling_rounds`` are
    done; a short batch is then filled with dropped groups. Returns the ``Rollout`` of exactly
    ``num_prompts * G`` rows and counts (rounds, groups sampled/dropped/filled).

    ``all_done(enough) -> bool`` decides whether sampling stops after a dynamic-sampling round;
    with several processes it is ``r1jax.multihost.all_processes``: sampling is a collective,
    so every process keeps taking rounds until all of them have enough groups.
    ``owner_rewards(rewards)``: this process's rows as the first process of its data shard
    scored them, which decide the degenerate groups (``grpo.local_advantages``'s reading), so
    processes sharing a shard keep the same groups even where a reward differed between them.
    """
    g = options.num_samples
    kept, dropped, sampled, rounds = [], [], 0, 0
    while rounds < options.max_sampling_rounds:
        part = sample_and_score(
            next_prompts(rounds), lambda p, r=rounds: sample_fn(p, r), reward, tokenizer, options
        )
        rounds += 1
        groups = part.num_rows // g
        sampled += groups
        bad = np.zeros(groups)
        if options.dynamic_sampling:
            bad = degenerate_groups(owner_rewards(part.rewards), g)
        kept.append(take_groups(part, np.flatnonzero(~bad.astype(bool)), g))
        dropped.append(take_groups(part, np.flatnonzero(bad), g))
        if not options.dynamic_sampling:
            break
        if all_done(sum(k.num_rows for k in kept) >= num_prompts * g):
            break
    have = sum(k.num_rows for k in kept) // g
    filled = max(num_prompts - have, 0)
    rollout = concat_rollouts(kept + dropped, pad_id)
    if rollout.num_rows < num_prompts * g:
        raise RuntimeError(f"rollout: {rollout.num_rows // g} groups for {num_prompts} prompts")
    rollout = take_groups(rollout, np.arange(num_prompts), g)
    num_dropped = sum(d.num_rows for d in dropped) // g
    info = {
        "dynamic/rounds": float(rounds),
        "dynamic/groups_sampled": float(sampled),
        "dynamic/groups_dropped": float(num_dropped),
        "dynamic/groups_filled": float(filled),
    }
    return rollout, info
