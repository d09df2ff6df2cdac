"""Packed GRPO (``r1jax.train.grpo_packing``): the packer keeps every completion token exactly
once in static rows, and the packed update has the padded one's loss and gradient (fp32) for
every aggregation, with a reference, entropy, TIS and GSPO, over chunked logits and micro-batches.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from grpo_toy import (
    CONFIG,
    CharTokenizer,
    InlineReward,
    make_parts,
    one_device_mesh,
    prompt_batches,
    replace,
    toy,
)

from r1jax.config import GRPOConfig, OptimConfig
from r1jax.model import init_params
from r1jax.train import grpo, objectives
from r1jax.train.grpo_packing import first_fit, microbatch_order, pack_grpo_batch
from r1jax.train.optim import make_optimizer
from r1jax.train.step import make_logprobs_fn, make_train_step

R, P, T = 8, 5, 7
MODEL = dataclasses.replace(CONFIG, logits_chunk=4)  # chunked logits (T = 7, L - 1 = 23)


def padded_batch(seed: int = 0, *, truncated: int = 1, rows: int = R) -> dict:
    """A padded GRPO batch of ``rows`` rows: prompts of 1..P tokens, completions of 1..T tokens, the
    last ``truncated`` rows fully masked; pi_old / sampler log-probs unique random floats."""
    rng = np.random.default_rng(seed)
    prompt_len = rng.integers(1, P + 1, rows)
    completion_len = rng.integers(1, T + 1, rows)
    prompt_mask = (np.arange(P)[None] >= P - prompt_len[:, None]).astype(np.int32)
    mask = (np.arange(T)[None] < completion_len[:, None]).astype(np.int32)
    mask[rows - truncated :] = 0
    return {
        "prompt_tokens": rng.integers(1, 16, (rows, P)).astype(np.int32) * prompt_mask,
        "prompt_mask": prompt_mask,
        "completion_tokens": rng.integers(1, 16, (rows, T)).astype(np.int32),
        "completion_mask": mask,
        "old_logprobs": -rng.uniform(0.5, 3.0, (rows, T)).astype(np.float32),
        "sampler_logprobs": -rng.uniform(0.5, 3.0, (rows, T)).astype(np.float32),
        "advantages": rng.normal(size=rows).astype(np.float32),
    }


# ------------------------------------------------------------------------------ packer


def test_packer_keeps_every_completion_token_once_in_static_rows():
    batch = padded_batch()
    packed, stats = pack_grpo_batch(batch, 2 * (P + T), num_microbatches=2)
    assert all(v.shape[0] == R for v in packed.values())  # static: R rows of L
    assert packed["tokens"].shape == (R, 2 * (P + T))
    on = packed["completion_mask"] > 0
    want = batch["old_logprobs"][batch["completion_mask"] > 0]
    assert sorted(packed["old_logprobs"][on]) == sorted(want)  # each token once, none dropped
    where = {float(v): (i, t) for (i, t), v in np.ndenumerate(batch["old_logprobs"])}
    prompt_len = batch["prompt_mask"].sum(1)
    for (r, c), v in zip(np.argwhere(on), packed["old_logprobs"][on], strict=True):
        i, t = where[float(v)]
        assert packed["tokens"][r, c] == batch["completion_tokens"][i, t]
        assert packed["positions"][r, c] == prompt_len[i] + t
        assert packed["advantages"][r, c] == batch["advantages"][i]
        assert packed["sampler_logprobs"][r, c] == batch["sampler_logprobs"][i, t]
        start = c - packed["positions"][r, c]
        prompt = batch["prompt_tokens"][i][batch["prompt_mask"][i] > 0]
        np.testing.assert_array_equal(packed["tokens"][r, start : start + prompt_len[i]], prompt)
        assert np.all(packed["segment_ids"][r, start : c + 1] == packed["segment_ids"][r, c])
    for row in packed["segment_ids"]:  # segments 1..n left to right, padding after them
        n = row.max()
        assert np.array_equal(np.unique(row[row > 0]), np.arange(1, n + 1))
        assert np.all(np.diff(row[row > 0]) >= 0) and not np.any(row[: np.sum(row > 0)] == 0)
    assert packed["tokens"][packed["segment_ids"] == 0].sum() == 0
    assert packed["num_sequences"].sum() == R
    assert stats["data/grpo_pack_rows"] < R


def test_filled_rows_come_first_in_micro_batch_order_and_padding_removed_is_reported():
    rows, m = 32, 8
    batch = padded_batch(1, truncated=0, rows=rows)
    packed, stats = pack_grpo_batch(batch, P + T, num_microbatches=m)
    used = int(stats["data/grpo_pack_rows"])
    filled = packed["segment_ids"].max(1) > 0
    per = rows // m
    active = [filled[j::m].any() for j in range(m)]
    assert active == [j < -(-used // per) for j in range(m)]  # empty micro-batches at the end
    tokens = (batch["prompt_mask"].sum() + batch["completion_mask"].sum()).item()
    computed = sum(active) * per * (P + T)
    assert stats["data/grpo_pack_fill"] == pytest.approx(tokens / computed)
    assert stats["data/grpo_padding_removed"] == pytest.approx(1 - computed / (rows * (P + T)))
    assert stats["data/grpo_padding_removed"] > 0


def test_first_fit_and_micro_batch_order():
    assert first_fit(np.array([3, 5, 0, 4, 2]), 5, 8).tolist() == [0, 0, -1, 1, 1]
    assert sorted(microbatch_order(8, 2).tolist()) == list(range(8))
    assert microbatch_order(8, 2)[:4].tolist() == [0, 2, 4, 6]  # micro-batch 0: rows 0, 2, ...
    assert microbatch_order(6, 4).tolist() == list(range(6))  # M does not divide: as is
    with pytest.raises(ValueError, match="pack_length=4"):
        first_fit(np.array([5]), 1, 4)


# ---------------------------------------------------------------------- loss and gradient

CASES = {
    "seq_mean+ref+entropy+tis": dict(aggregation="seq_mean", beta=0.1, entropy_coef=0.01),
    "token_mean+ref+entropy+tis": dict(aggregation="token_mean", beta=0.1, entropy_coef=0.01),
    "constant+ref+entropy+tis": dict(aggregation="constant", beta=0.1, entropy_coef=0.01),
    "gspo": dict(variant="gspo", beta=0.1),
}


def _loss_and_grads(objective, params, batch):
    fn = jax.jit(jax.value_and_grad(objective.loss, has_aux=True))
    (loss, metrics), grads = fn(params, params, batch, objective.normalizer(batch))
    return loss, metrics, grads


@pytest.mark.parametrize("case", CASES)
def test_packed_update_has_the_padded_loss_and_gradient(case):
    options = GRPOConfig(max_new_tokens=T, tis_cap=2.0, eps_low=0.1, **CASES[case])
    params = init_params(MODEL, jax.random.key(0))
    batch = padded_batch(2)
    packed, _ = pack_grpo_batch(batch, 2 * (P + T), num_microbatches=2)
    loss_a, metrics_a, grads_a = _loss_and_grads(objectives.grpo(MODEL, options), params, batch)
    packed_objective = objectives.grpo(MODEL, replace(options, pack_length=2 * (P + T)))
    loss_b, metrics_b, grads_b = _loss_and_grads(packed_objective, params, packed)
    assert abs(float(loss_a)) > 1e-3
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for g_a, g_b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b), strict=True):
        np.testing.assert_allclose(g_b, g_a, rtol=1e-5, atol=1e-5)
    for key in ("kl", "entropy", "clip_frac", "ratio_mean", "num_tokens", "tis_weight_mean"):
        np.testing.assert_allclose(metrics_b[key], metrics_a[key], rtol=1e-5, atol=1e-6)
    assert float(metrics_a["clip_frac"]) > 0  # the clip is exercised


def test_packed_logprobs_match_the_padded_ones_at_every_completion_token():
    params = init_params(MODEL, jax.random.key(1))
    logprobs_fn = make_logprobs_fn(MODEL, one_device_mesh(), temperature=0.7)
    batch = padded_batch(3, truncated=0)
    packed, _ = pack_grpo_batch(batch, P + T)
    padded_lp = np.asarray(logprobs_fn(params, batch))
    packed_lp = np.asarray(logprobs_fn(params, packed))
    assert packed_lp.shape == packed["tokens"].shape
    where = {float(v): (i, t) for (i, t), v in np.ndenumerate(batch["old_logprobs"])}
    on = packed["completion_mask"] > 0
    for (r, c), v in zip(np.argwhere(on), packed["old_logprobs"][on], strict=True):
        np.testing.assert_allclose(packed_lp[r, c], padded_lp[where[float(v)]], atol=1e-5)


# ------------------------------------------------------------------------------- loop


class StopTokenizer(CharTokenizer):
    """The toy tokenizer, able to name single-letter stop strings' ids."""

    def token_to_id(self, text):
        return self.encode(text)[0] if len(text) == 1 else None


def _packed_parts(parts, options: GRPOConfig, num_microbatches: int):
    """``parts`` with a packed train step (same optimizer as ``grpo_toy``'s)."""
    optimizer = make_optimizer(OptimConfig(learning_rate=1e-2, schedule="constant", b2=0.99))
    step_fn = make_train_step(
        CONFIG,
        objectives.grpo(CONFIG, options),
        optimizer,
        parts.step_fn.mesh,
        num_microbatches=num_microbatches,
    )
    return replace(parts, step_fn=step_fn, grpo=options)


@pytest.mark.slow  # two toy GRPO loops compiled (default run stays under 10 minutes)
def test_loop_with_packing_matches_the_padded_loop_and_skips_empty_micro_batches():
    """mu = 2 under TIS (pi_old recomputed on the packed rows), completions of varied length
    (stop strings), 8 micro-batches of which the empty ones are skipped."""
    padded = toy(stop_strings=("e", "f", "g", "h"), max_new_tokens=12, mu=2, tis_cap=2.0)
    state_a, parts_a = make_parts(reward=InlineReward(), grpo=padded)
    state_b, parts_b = make_parts(reward=InlineReward(), grpo=padded)
    parts_a, parts_b = (replace(p, tokenizer=StopTokenizer()) for p in (parts_a, parts_b))
    parts_b = _packed_parts(parts_b, replace(padded, pack_length=32), num_microbatches=8)
    state_a, metrics_a = grpo.grpo_iteration(state_a, prompt_batches(4), parts_a, 0)
    state_b, metrics_b = grpo.grpo_iteration(state_b, prompt_batches(4), parts_b, 0)
    assert metrics_b["response_length/mean"] < 8  # many completions stopped early
    # The loss is exact; metrics are averages over micro-batches (8 here, 1 there).
    np.testing.assert_allclose(metrics_b["train/loss"], metrics_a["train/loss"], rtol=1e-4)
    np.testing.assert_allclose(metrics_b["train/grad_norm"], metrics_a["train/grad_norm"], 1e-4)
    assert metrics_b["train/microbatches_computed"] < 8
    assert metrics_b["data/grpo_padding_removed"] > 0
    assert int(state_b.step) == 2 and metrics_b["train/skipped_total"] == 0
    diff = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), state_a.params, state_b.params)
    assert max(jax.tree.leaves(diff)) < 1e-4
