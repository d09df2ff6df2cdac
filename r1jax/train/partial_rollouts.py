"""Partial rollouts in the GRPO loop (``config.grpo.partial_lanes``; the sampler side is
``r1jax.sampling.pool``).

``grpo.partial_lanes`` prompts are in flight in a ``RolloutPool``. Each rollout round of an
iteration (``rollout.collect``; several with DAPO dynamic sampling) takes the pool's OLDEST
batch of ``num_prompts`` prompts, decoded until its groups are complete, and admits new data
batches into the lanes it frees; the rows of later batches keep decoding alongside and carry
their cache and tokens into the next iteration, where the updated policy continues them.

Off-policy tokens stay exact: each token keeps the log-prob its sampling policy gave it, and
with ``mu = 1`` those are the loss's pi_old (the importance ratio is pi_theta over the policy
that actually sampled the token); with ``mu > 1`` the config requires ``tis_cap``, whose
truncated importance weight compares the recomputed pi_old with them. Metrics:
``sample/stale_token_fraction`` (the batch's completion tokens sampled by an older policy than
the one being updated) and ``sample/policy_lag_max`` (in updates).

The pool lives in host memory and on device, not in checkpoints: a resumed run starts with an
empty pool. The checkpoint's data position is the one from before the oldest batch in flight
(the data iterator's ``pending``), so those prompts are drawn again and sampled anew by the
resumed policy (none skipped; not bit for bit the uninterrupted run), and the resumed pool's
request keys are folded with the step it starts at (not the first pool's again).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import jax
import numpy as np

from r1jax import multihost
from r1jax.sampling.methods import make_method
from r1jax.sampling.rollout_pool import RolloutPool
from r1jax.train.rollout import prompt_lists

KEY_STREAM = 0x9A27  # folded into the state's key: the pool's request keys


def make_pool(parts, state, num_prompts: int, prompt_length: int, step: int = 0) -> RolloutPool:
    """The run's ``RolloutPool`` from ``parts.grpo`` (its keys from the state's key and, for a
    pool made when a run resumes at ``step`` > 0, that step)."""
    grpo, tokenizer = parts.grpo, parts.tokenizer
    eos = tokenizer.eos_id
    key = jax.random.fold_in(state.key(), KEY_STREAM)
    key = jax.random.fold_in(key, step) if step else key
    return RolloutPool(
        parts.sampler,
        batch_prompts=num_prompts,
        lanes=grpo.partial_lanes,
        num_samples=grpo.num_samples,
        max_new_tokens=grpo.max_new_tokens,
        prompt_length=prompt_length,
        method=make_method(temperature=grpo.temperature, top_k=grpo.top_k, top_p=grpo.top_p),
        key=key,
        stop_token_ids=(eos,) if grpo.stop_at_eos and eos is not None else (),
        stop_strings=grpo.stop_strings,
        tokenizer=tokenizer,
        max_steps=grpo.partial_step_budget,
        shards=grpo.partial_shards,
    )


class PartialRounds:
    """``rollout.collect``'s two callables over a pool for one iteration: ``next_prompts(r)``
    fills the pool's free lanes from ``data``, decodes with ``params`` and returns the oldest
    batch's data batch; ``sample_fn(prompts, r)`` returns that batch's rows."""

    def __init__(self, pool: RolloutPool, data: Iterator[Mapping], params, version: int):
        self.pool, self.data, self.params, self.version = pool, data, params, version
        self.harvests = []

    def next_prompts(self, round_index: int) -> Mapping:
        pending = getattr(self.data, "pending", None)  # the data positions of batches in flight
        while self.pool.wants_prompts:
            if pending is not None:
                pending.append(self.data.position())
            batch = next(self.data)
            prompts, rows = prompt_lists(batch)
            if len(rows) != len(batch["prompt_tokens"]):
                raise ValueError(
                    f"partial rollouts take full prompt batches: {len(rows)} valid prompts of "
                    f"{len(batch['prompt_tokens'])}"
                )
            self.pool.admit(self.params, prompts, payload=batch)
        self.harvests.append(self.pool.next_batch(self.params, self.version))
        if pending:
            pending.popleft()  # the oldest batch leaves the pool, to be trained on now
        return self.harvests[-1].payload

    def sample_fn(self, prompts, round_index: int):
        del prompts, round_index  # the prompts of the batch ``next_prompts`` returned
        return self.harvests[-1].sample

    def metrics(self) -> dict[str, float]:
        """Tokens of the iteration's harvests sampled by older policies, and the largest lag
        (over every process's rows: a collective on several processes)."""
        versions = np.concatenate([h.versions_BT for h in self.harvests])
        if self.pool.sampler.multi_process:
            versions = multihost.gather_shards(versions, self.pool.sampler.mesh)
        versions = versions[versions >= 0]
        lag = self.version - versions
        return {
            "sample/stale_token_fraction": float(np.mean(lag > 0)) if lag.size else 0.0,
            "sample/policy_lag_max": float(lag.max(initial=0)),
            "sample/pool_calls": float(sum(h.calls for h in self.harvests)),
        }
