"""A teacher's top-k distribution stored with each SFT record (``r1jax teacher-topk`` writes
it, ``make_sft_dataset(teacher_topk=True)`` reads it, ``distill.teacher="topk"`` trains on it).

Record fields, next to the record's own (K = ``distill.top_k``, n = the example's tokens)::

    teacher_tokens          list[int] [n]      the example as the teacher read it: the templated
                                               prompt, the completion, EOS (the SFT tokenisation)
    teacher_topk_indices    list[list[int]] [n][K]    at position t: the teacher's K most likely
    teacher_topk_logprobs   list[list[float]] [n][K]  next tokens (predicting token t + 1) and
                                               their full-vocabulary log-probs at the
                                               distillation temperature

The reader checks that the student's tokenisation of the record is ``teacher_tokens`` (the same
tokenizer and template), so the stored entries line up with the positions they describe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from r1jax.data.errors import DataError

TOPK_FIELDS = ("teacher_topk_indices", "teacher_topk_logprobs")


def topk_fields(tokens, indices, logprobs) -> dict[str, list]:
    """The JSON fields of one example: tokens [n], indices [n, K], logprobs [n, K]."""
    return {
        "teacher_tokens": np.asarray(tokens).tolist(),
        "teacher_topk_indices": np.asarray(indices).tolist(),
        "teacher_topk_logprobs": np.asarray(logprobs, np.float32).tolist(),
    }


def stored_topk(record: dict[str, Any], tokens: np.ndarray) -> dict[str, np.ndarray]:
    """The record's stored top-k as ``{indices int32 [n, K], logprobs f32 [n, K]}``, checked
    against ``tokens`` (the SFT tokenisation of the record); errors name the record's field."""
    origin = record.get("_origin")
    for field in ("teacher_tokens", *TOPK_FIELDS):
        if not isinstance(record.get(field), list):
            raise DataError(
                "missing: distill.teacher='topk' reads the teacher's top-k stored with each "
                "record (write it with r1jax teacher-topk)",
                origin=origin,
                field=field,
            )
    if record["teacher_tokens"] != np.asarray(tokens).tolist():
        raise DataError(
            f"the teacher read {len(record['teacher_tokens'])} tokens, this tokenizer and "
            f"template give {len(tokens)} others: use the teacher-topk run's tokenizer",
            origin=origin,
            field="teacher_tokens",
        )
    out = {}
    for field, dtype in zip(TOPK_FIELDS, (np.int32, np.float32), strict=True):
        try:
            value = np.asarray(record[field], dtype)
        except (TypeError, ValueError) as e:
            message = f"not an [n][K] array of numbers ({e})"
            raise DataError(message, origin=origin, field=field) from e
        if value.ndim != 2 or value.shape[0] != len(tokens) or value.shape[1] < 1:
            raise DataError(
                f"shape {value.shape}, expected [{len(tokens)}, K]", origin=origin, field=field
            )
        out[field] = value
    if out[TOPK_FIELDS[0]].shape != out[TOPK_FIELDS[1]].shape:
        raise DataError(
            "indices and log-probs differ in shape", origin=origin, field=TOPK_FIELDS[1]
        )
    return out
