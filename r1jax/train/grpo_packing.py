"""Packs a GRPO batch's (prompt + completion) sequences into fixed ``[R, T]`` rows (host NumPy).

The padded GRPO batch (``rollout.build_grpo_batch``) gives every completion its own row: the
prompt left-padded to P, the completion right-padded to ``max_new_tokens``. With long-tailed
chains of thought most of those cells are padding. The packed batch puts each sequence, prompt
then completion, into rows of T = ``GRPOConfig.pack_length`` positions, first fit in order of
decreasing length, as SFT packs (``r1jax.data.packing``). Shapes stay static so the train step
compiles once: R rows (as many as sequences, the bound when each needs a row of its own), most
of them left empty.

Packed batch (R rows, T positions; target-aligned like SFT: entry t is about token t, which the
logits at t - 1 predict), int32 unless noted::

    tokens           [R, T] token ids, ``pad_id`` where ``segment_ids == 0``
    segment_ids      [R, T] 1..n = the n sequences of the row, left to right; 0 = padding
    positions        [R, T] 0, 1, ... restarting at every segment (the prompt's first token is 0)
    completion_mask  [R, T] 1 on the completion tokens in the loss (the padded batch's mask)
    old_logprobs     [R, T] f32, pi_old log-prob of each completion token (0 elsewhere)
    sampler_logprobs [R, T] f32, the same from the sampler (when the padded batch has them)
    advantages       [R, T] f32, every token of a segment carries its completion's advantage
    num_sequences    [R] completions each row stands for; they sum to the padded batch's rows,
                     which "constant" aggregation divides by (``losses.batch_normalizer``)

Only the completion tokens up to the last one in the loss are packed: a completion with no token
in the loss (a truncated one under ``mask_truncated``) is left out (it adds nothing to the loss
and is counted in ``num_sequences``), and tokens after the stop are not needed (causal). The
objective is ``r1jax.train.objectives.grpo_packed_objective``: same loss, same gradient.

Rows are ordered for the train step's micro-batches (``step.split_microbatches``: micro-batch j
holds rows j, j + M, ...): the filled rows come first in micro-batch order, so that whole
micro-batches are empty and the step skips them (``Objective.empty``). That skip is what saves
compute: the rows themselves are as many as in the padded layout.
"""

from __future__ import annotations

import numpy as np

PER_TOKEN = ("completion_mask", "old_logprobs", "sampler_logprobs")


def sequence_lengths(batch: dict) -> tuple[np.ndarray, np.ndarray]:
    """(prompt tokens int [R], completion tokens to pack int [R]) of a padded GRPO batch: the
    prompt's real tokens, and the completion up to its last token in the loss (0: none)."""
    prompt = (np.asarray(batch["prompt_mask"]) > 0).sum(1)
    mask = np.asarray(batch["completion_mask"]) > 0
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return prompt, np.where(mask.any(1), last, 0)


def first_fit(lengths: np.ndarray, num_rows: int, row_length: int) -> np.ndarray:
    """The row of each sequence (int [N], -1 for length 0), first fit in order of decreasing
    length into ``num_rows`` rows of ``row_length`` positions; raises if one does not fit."""
    lengths = np.asarray(lengths, np.int64)
    rows = np.full(len(lengths), -1, np.int64)
    fill = np.zeros(num_rows, np.int64)
    for i in np.argsort(-lengths, kind="stable"):
        if lengths[i] == 0:
            continue
        fits = np.flatnonzero(fill + lengths[i] <= row_length)
        if not len(fits):
            raise ValueError(
                f"a GRPO sequence of {lengths[i]} tokens (prompt + completion) does not fit in "
                f"{num_rows} rows of config.grpo.pack_length={row_length}; raise pack_length "
                "to at least the longest prompt plus max_new_tokens"
            )
        rows[i] = fits[0]
        fill[fits[0]] += lengths[i]
    return rows


def microbatch_order(num_rows: int, num_microbatches: int) -> np.ndarray:
    """int [R]: where the k-th filled row goes so that micro-batch j (rows j, j + M, ...) holds
    filled rows j * R/M ... (j + 1) * R/M - 1. M not dividing R: the identity."""
    m = num_microbatches if num_microbatches > 0 and num_rows % num_microbatches == 0 else 1
    k = np.arange(num_rows)
    per = num_rows // m
    return (k % per) * m + k // per


def _place(out: dict, row: int, start: int, seg: int, batch: dict, i: int, p: int, n: int):
    """Writes sequence i (p prompt + n completion tokens) at ``out[...][row, start:]``."""
    end = start + p + n
    prompt = np.asarray(batch["prompt_tokens"][i])[np.asarray(batch["prompt_mask"][i]) > 0]
    out["tokens"][row, start : start + p] = prompt
    out["tokens"][row, start + p : end] = batch["completion_tokens"][i][:n]
    out["segment_ids"][row, start:end] = seg
    out["positions"][row, start:end] = np.arange(p + n)
    out["advantages"][row, start:end] = batch["advantages"][i]
    for key in PER_TOKEN:
        if key in out:
            out[key][row, start + p : end] = batch[key][i][:n]


def pack_grpo_batch(
    batch: dict, length: int, *, num_microbatches: int = 1, pad_id: int = 0
) -> tuple[dict, dict[str, float]]:
    """The packed batch (module docstring) of a padded GRPO batch, and its statistics.

    Args:
      batch: ``rollout.build_grpo_batch``'s NumPy batch of R rows.
      length: T, positions per packed row (``GRPOConfig.pack_length``), at least the longest
        prompt + completion.
      num_microbatches: the train step's M; orders the rows so that empty ones fill whole
        micro-batches (the loss does not depend on it).

    Statistics (host floats): ``data/grpo_padding_removed``, the share of the padded layout's
    R x (P + max_new_tokens) cells the packed update does not compute (it computes the
    micro-batches holding a sequence: negative when T > P + max_new_tokens and every
    micro-batch holds one), ``data/grpo_pack_fill``,
    the share of those computed cells holding tokens, and ``data/grpo_pack_rows``, rows used.
    """
    if length < 1:
        raise ValueError(f"config.grpo.pack_length={length}: must be >= 1 to pack (0 = off)")
    prompt, completion = sequence_lengths(batch)
    if np.any((prompt == 0) & (completion > 0)):
        raise ValueError("a GRPO row has an empty prompt: nothing predicts its first token")
    num = len(prompt)
    rows = first_fit(np.where(completion > 0, prompt + completion, 0), num, length)
    used = int(rows.max()) + 1 if num and rows.max() >= 0 else 0
    shape = (num, length)
    out = {
        "tokens": np.full(shape, pad_id, np.int32),
        "segment_ids": np.zeros(shape, np.int32),
        "positions": np.zeros(shape, np.int32),
        "completion_mask": np.zeros(shape, np.int32),
        "old_logprobs": np.zeros(shape, np.float32),
        "advantages": np.zeros(shape, np.float32),
    }
    if "sampler_logprobs" in batch:
        out["sampler_logprobs"] = np.zeros(shape, np.float32)
    fill, segments = np.zeros(num, np.int64), np.zeros(num, np.int32)
    for i in np.flatnonzero(rows >= 0):
        r = rows[i]
        segments[r] += 1
        _place(out, r, fill[r], segments[r], batch, i, prompt[i], completion[i])
        fill[r] += prompt[i] + completion[i]
    segments[0] += num - segments.sum()  # completions left out still count as sequences
    out["num_sequences"] = segments
    order = microbatch_order(num, num_microbatches)
    packed = {k: np.zeros_like(v) for k, v in out.items()}
    for k, v in out.items():
        packed[k][order] = v
    return packed, _stats(batch, fill, used, length, num_microbatches)


def _stats(batch: dict, fill: np.ndarray, used: int, length: int, num_microbatches: int) -> dict:
    num = len(fill)
    per = num // num_microbatches if num_microbatches > 0 and num % num_microbatches == 0 else num
    computed = -(-used // per) * per * length if per else 0
    padded = num * (batch["prompt_tokens"].shape[1] + batch["completion_tokens"].shape[1])
    return {
        "data/grpo_padding_removed": 1.0 - computed / max(padded, 1),
        "data/grpo_pack_fill": float(fill.sum()) / max(computed, 1),
        "data/grpo_pack_rows": float(used),
    }
