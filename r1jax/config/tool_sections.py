"""The sections of the tool commands (``r1jax sample``, ``tokenizer``, ``convert``) and of
``jax.distributed``: frozen dataclasses like every section, re-exported by ``schema`` (which
holds the training and evaluation sections and the kind -> sections tables)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """``r1jax sample``: prompts (texts, or a JSONL file with a ``prompt`` field) -> completions."""

    prompts: tuple[str, ...] = ()
    prompts_file: str = ""
    template: str = "r1_zero"  # "r1_zero" | "chat" (the tokenizer's) | "raw"
    num_samples: int = 1
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False
    stop_strings: tuple[str, ...] = ("</answer>",)
    seed: int = 0
    slots: int = 0  # > 0: continuous batching in this many decode slots (r1jax.sampling)
    min_slots: int = 0  # > 0: the slots halve down to this many once the queue is empty
    page_size: int = 0  # > 0: the slots' KV cache in pages of this many tokens
    pages: int = 0  # generation pages (0: every slot's reach)


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """A sentencepiece model (R1 tags as single ids) trained on ``inputs`` (.txt / .jsonl files,
    the JSONL ``field``) and ``num_examples`` of a built-in ``task``'s text (either may be
    empty), written to ``model_prefix``.model (a recipe stage writes into its directory)."""

    inputs: tuple[str, ...] = ()
    field: str = "text"
    task: str = ""
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    num_examples: int = 2000
    vocab_size: int = 512
    model_type: str = "bpe"  # "bpe" | "unigram"
    split_digits: bool = True
    model_prefix: str = ""


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """``r1jax convert``: ``direction`` "hf-to-r1jax" | "r1jax-to-hf" (a LoRA run: merged into
    its base) | "r1jax-to-peft" (a LoRA run's adapters alone) from ``input`` to ``output``;
    ``dtype``: the written params' dtype (empty: the model config's ``param_dtype``, float32
    unless the run set another: a bf16 HF checkpoint becomes fp32 master weights, and comes back
    as fp32 unless ``dtype=bfloat16``; not applied to PEFT adapters, written as float32);
    safetensors shard size."""

    direction: str = "hf-to-r1jax"
    input: str = ""
    output: str = ""
    dtype: str = ""
    max_shard_gb: float = 4.0


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """``jax.distributed`` set-up (``r1jax.distributed``): ``mode`` "auto" (the environment:
    SLURM, xpk, JobSet, TPU VM, ``R1JAX_*``), "off", or one rule's name; explicit fields win."""

    mode: str = "auto"
    coordinator: str | None = None  # host:port
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: str | None = None  # "0,1"
    cpu_collectives: str = "gloo"
    initialization_timeout: int = 0  # seconds; 0: jax's default
