"""How partial rollouts' pool splits into D shards (``config.grpo.partial_shards``;
``r1jax.sampling.pool_shards`` runs them): plain arithmetic. A config checks the prompt and
slot counts when built; the pool (and ``r1jax plan``) its pages, which need the prompt bucket."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a pool of ``lanes`` lanes and ``slots`` slots for batches of ``prompts`` x
    ``samples`` splits into ``shards``: per shard, ``batch_rows`` (B) requests of each batch,
    ``shard_samples`` per shard prompt (G, or B when shards share a prompt), ``shard_lanes``,
    ``shard_slots`` and ``shard_gen_pages`` (``gen_pages // shards``: a remainder is unused)."""

    shards: int
    prompts: int
    samples: int
    lanes: int
    slots: int
    gen_pages: int = 0

    @property
    def batch_rows(self) -> int:
        return self.prompts * self.samples // self.shards

    @property
    def shard_samples(self) -> int:
        return self.samples if self.prompts % self.shards == 0 else self.batch_rows

    @property
    def shard_lanes(self) -> int:
        return self.lanes * self.samples // self.shards // self.shard_samples

    @property
    def shard_slots(self) -> int:
        return self.slots // self.shards

    @property
    def shard_gen_pages(self) -> int:
        return self.gen_pages // self.shards


def layout(
    shards, *, prompts, samples, lanes, slots, gen_pages=0, request_pages=0, name="shards"
) -> Layout:
    """The ``Layout``, or a ValueError naming ``name`` (the setting) and what D must divide."""
    d = shards
    whole = d >= 1 and prompts % d == 0
    shared = d >= 1 and d % prompts == 0 and samples % (d // prompts) == 0
    if not (whole or shared) or slots % d or (gen_pages and gen_pages // d < request_pages):
        pages = f" and leave each a request's {request_pages} of the {gen_pages} generation pages"
        raise ValueError(
            f"{name}={shards}: the shard count must divide the batch's {prompts} prompts (or be "
            f"a multiple of them splitting each prompt's {samples} samples evenly) and the "
            f"{slots} slots" + (pages if gen_pages else "")
        )
    return Layout(shards, prompts, samples, lanes, slots, gen_pages)
