"""``config.lora``: low-rank adapters over a frozen (optionally quantized) base (LoRA, QLoRA).

This module imports nothing heavy (config files import it); the adapters themselves are
``r1jax.model.lora``, the quantized base ``r1jax.model.quant``.
"""

from __future__ import annotations

import dataclasses

LORA_TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
BASE_QUANT = ("", "int8", "int4", "nf4")


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """``rank`` r (0: no adapters, every weight is trained), ``alpha`` (the delta is scaled by
    alpha / r), ``targets``: layer weight names (``q k v o gate up down``, experts'
    ``expert_gate expert_up expert_down``, MLA's ``q q_a q_b kv_a kv_b``). ``dropout``: PEFT's
    ``lora_dropout``, carried to and from the PEFT form (training refuses dropout > 0: the
    adapters are merged into each layer's weight inside the layer scan, where no per-token
    dropout of the adapter's input exists).

    ``base_quant``: how the frozen base stores its layer projections: "" (in the model's
    compute dtype), "int8", "int4" (symmetric, absmax) or "nf4" (QLoRA's NormalFloat), with a
    scale per ``quant_block`` consecutive inputs and output column; norms, biases, routers,
    embeddings and the LM head stay in the compute dtype."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = LORA_TARGETS
    base_quant: str = ""
    quant_block: int = 64

    def __post_init__(self):
        if self.rank < 0 or not 0 <= self.dropout < 1 or self.quant_block < 1:
            raise ValueError(
                f"config.lora: rank={self.rank} (>= 0), dropout={self.dropout} ([0, 1)), "
                f"quant_block={self.quant_block} (>= 1)"
            )
        if self.base_quant not in BASE_QUANT:
            raise ValueError(f"config.lora.base_quant={self.base_quant!r}; one of {BASE_QUANT}")
        if self.base_quant and not self.rank:
            raise ValueError(
                f"config.lora.base_quant={self.base_quant!r} needs adapters (config.lora.rank "
                ">= 1): a quantized base is frozen"
            )
        if not self.targets:
            raise ValueError("config.lora.targets: empty; name the weights to adapt")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return self.alpha / max(self.rank, 1)


def check_lora_training(lora: LoRAConfig, grpo=None) -> None:
    """What training adapters refuses (``grpo``: a GRPO stage's section), named by field."""
    if lora.dropout:
        raise ValueError(
            f"config.lora.dropout={lora.dropout}: training merges each layer's adapters into "
            "its weight (no per-token adapter input to drop); use 0.0 (the PEFT export "
            "carries the value you set for inference tools)"
        )
    if grpo is not None and grpo.beta > 0 and grpo.ref_refresh_every:
        raise ValueError(
            f"config.grpo.ref_refresh_every={grpo.ref_refresh_every}: with config.lora.rank > 0 "
            "the KL reference is the frozen base (adapters off) and is never refreshed; set 0"
        )
