"""GRPO's update with each prompt's forward shared by its G rows (``config.grpo.share_prompts``).

A GRPO batch holds G completions of each prompt in consecutive rows; the update's forward then
runs each prompt once and the G completions over its keys and values
(``r1jax.model.shared_prefix``): the same loss and gradient up to rounding, (G - 1) / G of the
prompt's share of the update's matmuls saved. ``prompt_groups`` decides it once per run from
the config and the mesh; ``check_prompt_groups`` verifies each batch's rows before an update
that shares (a wrong grouping would train on another prompt's keys).

"auto" shares wherever it costs nothing: a dense model, padded batches, each data shard's rows
of every micro-batch in whole groups, and sequences for which the unshared forward would not
run a fused attention kernel (cuDNN or splash attend a row's own tokens only; the shared
continuation's attention over the prompt's keys runs blockwise on long sequences). "on" shares
or raises, naming what prevents it; "off" never shares.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from r1jax import multihost
from r1jax.config import GRPOConfig
from r1jax.model import ModelConfig
from r1jax.model.attention_kernels import choose_impl


def prompt_groups(
    grpo: GRPOConfig,
    model_config: ModelConfig,
    mesh,
    *,
    num_microbatches: int = 1,
    max_length: int = 0,
    backend: str | None = None,
) -> int:
    """G when the update shares each prompt's forward among its rows, else 1.

    ``max_length``: the longest prompt + completion the run trains on (for "auto"'s kernel
    check; 0 skips it); ``backend``: the platform the update runs on (default: the mesh's).
    """
    group = grpo.num_samples
    if grpo.share_prompts == "off" or group == 1:
        return 1
    reasons = _blockers(grpo, model_config, mesh, num_microbatches)
    if grpo.share_prompts == "auto" and max_length:
        backend = backend or mesh.devices.flat[0].platform
        impl = choose_impl(
            model_config.attention_impl,
            t=max_length,
            s=max_length,
            self_attention=True,
            config=model_config,
            backend=backend,
        )
        if impl in ("cudnn", "splash"):
            reasons.append(f"the unshared forward runs the {impl} kernel at {max_length} tokens")
    if reasons and grpo.share_prompts == "on":
        raise ValueError(f"config.grpo.share_prompts='on' cannot share: {'; '.join(reasons)}")
    return 1 if reasons else group


def _blockers(grpo: GRPOConfig, model_config: ModelConfig, mesh, num_microbatches: int):
    """What prevents sharing, in words (empty: nothing)."""
    out = []
    if grpo.pack_length:
        out.append("packed batches (config.grpo.pack_length > 0) have no prompt rows")
    if model_config.mla is not None or model_config.moe is not None:
        out.append("a dense model with grouped-query attention only (MoE or MLA here)")
    rows, shards = grpo.num_prompts * grpo.num_samples, multihost.batch_splits(mesh)
    if rows % shards or (rows // shards) % (num_microbatches * grpo.num_samples):
        out.append(
            f"each of the mesh's {shards} batch shards holds {rows / shards:g} rows, not whole "
            f"groups of {grpo.num_samples} in each of {num_microbatches} micro-batches"
        )
    return out


def check_prompt_groups(batch: Mapping[str, np.ndarray], group: int) -> None:
    """Raises unless the host batch's rows come in runs of ``group`` with one prompt each
    (``prompt_tokens`` and ``prompt_mask`` equal within a run)."""
    if group <= 1:
        return
    for key in ("prompt_tokens", "prompt_mask"):
        rows = np.asarray(batch[key])
        if rows.shape[0] % group:
            raise ValueError(f"batch[{key!r}]: {rows.shape[0]} rows are not groups of {group}")
        runs = rows.reshape(rows.shape[0] // group, group, *rows.shape[1:])
        bad = np.flatnonzero(np.any(runs != runs[:, :1], axis=tuple(range(1, runs.ndim))))
        if bad.size:
            raise ValueError(
                f"batch[{key!r}]: rows {bad[0] * group}..{bad[0] * group + group - 1} should "
                f"hold one prompt (config.grpo.share_prompts shares its forward); "
                f"{bad.size} such groups differ. Set config.grpo.share_prompts='off'"
            )
