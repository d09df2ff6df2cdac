"""Checks of ``config.grpo``'s decoding options: continuous batching's slots, the paged cache
and partial rollouts, which depend on one another (``GRPOConfig`` runs them when built)."""

from __future__ import annotations

from r1jax.config.pool_layout import layout


def check_decoding(grpo) -> None:
    """Raises ValueError naming the ``config.grpo`` keys of an impossible combination."""
    if not grpo.temperature > 0 or grpo.top_k < 0 or not 0 < grpo.top_p <= 1:
        raise ValueError(
            f"config.grpo.temperature={grpo.temperature}, top_k={grpo.top_k}, "
            f"top_p={grpo.top_p}: GRPO samples G different completions per prompt, so "
            "temperature > 0, top_k >= 0 (0: off) and 0 < top_p <= 1"
        )
    paged = grpo.decode_page_size and grpo.decode_min_slots
    if (
        grpo.decode_slots < 0
        or not 0 <= grpo.decode_min_slots <= max(grpo.decode_slots, 0)
        or (grpo.decode_page_size and not grpo.decode_slots)
        or paged
    ):
        raise ValueError(
            f"config.grpo.decode_slots={grpo.decode_slots} (>= 0, 0 = static), "
            f"decode_min_slots={grpo.decode_min_slots} (0 or 1 ... decode_slots), "
            f"decode_page_size={grpo.decode_page_size} (needs decode_slots > 0 and "
            "decode_min_slots = 0)"
        )
    q, lanes, mu = grpo.num_prompts, grpo.partial_lanes, grpo.mu
    if lanes and (
        lanes < 2 * q
        or lanes % q
        or not grpo.decode_slots
        or grpo.decode_min_slots
        or (mu > 1 and grpo.tis_cap is None)
        or grpo.partial_step_budget < 0
    ):
        raise ValueError(
            f"config.grpo.partial_lanes={lanes} needs a multiple of num_prompts={q} >= "
            f"{2 * q}, decode_slots > 0 (got {grpo.decode_slots}), decode_min_slots=0 (got "
            f"{grpo.decode_min_slots}), partial_step_budget >= 0, and mu=1 or tis_cap set "
            f"(mu={mu}: pi_old recomputed, tokens of older policies need the correction)"
        )
    shards = grpo.partial_shards
    if shards != 1 and not lanes:
        raise ValueError(f"config.grpo.partial_shards={shards} needs partial_lanes > 0")
    if lanes:
        layout(
            shards, prompts=q, samples=grpo.num_samples, lanes=lanes, slots=grpo.decode_slots,
            name="config.grpo.partial_shards",
        )  # fmt: skip
