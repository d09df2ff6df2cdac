"""Every configurable default of r1jax, written once: one frozen dataclass per config section.

A config file edits the ml-collections ``ConfigDict`` generated from these classes
(``r1jax.config.defaults(kind)``) and states only what it changes; ``r1jax.config.typed`` turns
the edited dict into these frozen sections once, at the edge (unknown keys are rejected with the
nearest valid one). A run config is one stage: its ``kind`` is the objective or the job.

    config.kind                "sft" | "distill" | "grpo" | "reward_model" (training), or a
                               job: "eval", "rejection_sample", "sample", "convert", "tokenizer",
                               "teacher_topk"
    config.model / .mesh       the network and the device mesh (``ModelConfig``, ``MeshConfig``)
    config.optim / .train      optimizer and loop (``optim.total_steps`` 0 = ``train.steps``)
    config.data                prompts / SFT records and the tokenizer
    config.grpo                rollout, loss and loop of GRPO; ``variant`` applies ``VARIANTS``
    config.distill             teacher and divergence
    config.rewards / .reward_pool   reward components (name -> options) and their process pool
    config.eval                held-out evaluation (``r1jax eval``, recipe eval stages, the hook)
    config.lora                GRPO / SFT of low-rank adapters on a frozen, optionally quantized
                               base

This module imports nothing heavy: config files may import it, training code imports it.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from r1jax.config.decoding import check_decoding
from r1jax.config.lora import LoRAConfig
from r1jax.config.tool_sections import (  # noqa: F401  (re-exported: every section is here)
    ConvertConfig,
    DistributedConfig,
    SampleConfig,
    TokenizerConfig,
)
from r1jax.config.variants import VARIANTS


def unknown_key(where: str, key: str, known) -> str:
    """The error message for ``where.key`` not in ``known``, naming the nearest valid key."""
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {where}.{near[0]}?" if near else f"; known: {sorted(known)}"
    return f"{where}.{key}: unknown key{hint}"


TRAINING_KINDS = ("sft", "distill", "grpo", "reward_model")
JOB_KINDS = ("eval", "rejection_sample", "sample", "convert", "tokenizer", "teacher_topk")
KINDS = (*TRAINING_KINDS, *JOB_KINDS)
MESH_AXES = ("data", "fsdp", "expert", "tensor")
SCHEDULES = ("cosine", "constant", "linear")
PROMPT_BUCKETS = (64, 128, 256, 512)  # RL prompts are padded to one of these lengths
SEED = 0  # a stage's ``seed``: its params' init and sampling keys


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Sizes of the ``data``, ``fsdp``, ``tensor`` and ``expert`` mesh axes (one may be -1: the
    rest), or a ``preset`` from ``r1jax.config.mesh_presets``; ``rules`` overrides logical-axis
    sharding rules (logical name -> mesh axes); ``strict`` makes a replicated large leaf an error.
    ``expert`` splits a mixture of experts' experts (and, elsewhere, the batch, as data
    parallelism); the mesh orders the axes data, fsdp, expert, tensor."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1
    preset: str = ""
    rules: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    strict: bool = False
    replicated_warn_size: int = 2**20  # elements: a larger replicated leaf is reported


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with warm-up then ``schedule`` ("cosine" | "linear" | "constant") to
    ``learning_rate * end_lr_ratio`` at ``total_steps`` (0: the stage's ``train.steps``);
    ``grad_clip_norm`` None or 0 disables clipping."""

    learning_rate: float = 3e-4
    schedule: str = "cosine"
    warmup_steps: int = 0
    total_steps: int = 0
    end_lr_ratio: float = 0.1
    b1: float = 0.9
    b2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip_norm: float | None = 1.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"config.optim.schedule={self.schedule!r}; one of {SCHEDULES}")
        if self.warmup_steps < 0 or self.total_steps < 0:
            raise ValueError(
                f"config.optim: need warmup_steps >= 0 and total_steps >= 0, got "
                f"{self.warmup_steps}, {self.total_steps}"
            )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The loop: ``steps`` updates of ``batch_size`` rows (global, over all processes; GRPO's
    rows are ``grpo.num_prompts * grpo.num_samples``), micro-batched, logged, checkpointed."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 256
    num_microbatches: int = 1
    log_every: int = 10
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    eval_every: int = 0
    transfer_guard: str = "disallow"

    def __post_init__(self):
        names = ("steps", "batch_size", "seq_len", "num_microbatches", "checkpoint_every")
        for name in (*names, "keep_checkpoints"):  # 0 kept none, not even the last
            if getattr(self, name) < 1:
                raise ValueError(f"config.train.{name}={getattr(self, name)}: must be >= 1")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """A built-in ``task`` or ``path`` (JSONL/Parquet files, directories or globs), and the
    ``tokenizer`` (a model file; empty: sentencepiece trained on the task into the workdir)."""

    task: str = "arithmetic"
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str = ""
    tokenizer: str = ""
    vocab_size: int = 512
    tokenizer_examples: int = 2000
    seed: int = 0
    buckets: tuple[int, ...] = PROMPT_BUCKETS  # prompt-length buckets (compile once each)


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO's rollout, loss and loop (R1: G 16, beta 0.001, T 1.0: ``variants.py``).
    ``variant`` fills the fields a config leaves unset (None here) from ``VARIANTS`` when the
    section is built; explicit values win (``dataclasses.replace`` keeps the filled values).

    Rollout: ``num_prompts`` groups of ``num_samples`` (G) completions per update; DAPO dynamic
    sampling redraws until the batch holds informative groups; ``overlong_cache`` tokens of soft
    length penalty; advantages scaled per group / batch / not at all (Dr. GRPO).
    Loss: clip [1 - eps_low, 1 + eps_high], KL weight ``beta``, ``aggregation`` of token terms,
    ``importance`` ratio per token or sequence (GSPO), ``tis_cap`` truncated importance sampling.
    Loop: ``mu`` updates per batch of rollouts; ``ref_refresh_every`` copies policy -> reference.
    """

    variant: str = "r1"  # "r1" | "dapo" | "dr_grpo" | "gspo"
    num_prompts: int = 4
    num_samples: int | None = None  # G; the variant's (16, R1's) unless set
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_strings: tuple[str, ...] = ("</answer>",)
    stop_at_eos: bool = True
    dynamic_sampling: bool | None = None
    max_sampling_rounds: int = 4
    mask_truncated: bool | None = None
    overlong_cache: int | None = None
    overlong_weight: float = 1.0
    advantage_scale: str | None = None  # "group" | "batch" | "none"
    advantage_baseline: str = "mean"  # "mean" | "leave_one_out" (RLOO)
    keep_sampler_logprobs: bool = False
    beta: float | None = None
    eps_low: float | None = None
    eps_high: float | None = None
    aggregation: str | None = None  # "seq_mean" | "token_mean" | "constant"
    max_tokens: int | None = None  # "constant" aggregation's divisor (None: max_new_tokens)
    importance: str | None = None  # "token" | "sequence"
    entropy_coef: float = 0.0
    tis_cap: float | None = None
    log_entropy: bool = True
    mu: int = 1
    ref_refresh_every: int = 0
    pack_length: int = 0  # > 0: the update packs sequences in rows of this length (grpo_packing)
    # > 0: the sampler decodes with continuous batching in this many slots (a slot whose row
    # ends takes the next (prompt, sample) of the queue; per-request keys); 0: a static batch.
    decode_slots: int = 0
    # > 0: once the queue is empty, the slots halve while at most half are busy, down to this
    # many (the tail of long rows decodes in a small batch); 0: the slot count stays.
    decode_min_slots: int = 0
    decode_page_size: int = 0  # > 0: the slots' KV cache in pages of this many tokens (paged.py)
    decode_pages: int = 0  # generation pages (0: every slot's reach; fewer: slots wait/rewind;
    # on a mesh split over the batch shards' stores, pages // shards each)
    # > 0: partial rollouts (r1jax.train.partial_rollouts): prompts in flight (a multiple of
    # num_prompts, >= 2x); rows unfinished once the oldest batch is done go on next update.
    partial_lanes: int = 0
    partial_step_budget: int = 0  # > 0: decode steps per partial-rollout call (0: unbounded)
    # The pool as this many independent pools (sampling/pool_shards.py), each with its part of
    # every batch, of the slots and, paged, its own page store: a multiple of the mesh's batch
    # shards keeps each store on its devices. A setting, not the mesh's: the same value gives
    # the same rows and policy versions on one device or any mesh.
    partial_shards: int = 1
    # A mixture of experts: the sampler records each token's experts and the update replays
    # them, so the ratio compares the same experts (static sampler, padded batches only).
    routing_replay: bool = False
    # The update runs each prompt once for its G rows (r1jax.train.prompt_sharing): "auto"
    # where that costs nothing (dense model, padded batches, no fused attention kernel lost),
    # "on" (or an error saying why not), "off".
    share_prompts: str = "auto"
    accuracy_key: str = "accuracy"
    format_key: str = "format"

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"config.grpo.variant={self.variant!r}; one of {sorted(VARIANTS)}")
        table = VARIANTS["r1"] | VARIANTS[self.variant]
        for name, value in table.items():  # the fields left unset take the variant's value
            if getattr(self, name) is None and value is not None:
                object.__setattr__(self, name, value(self) if callable(value) else value)
        if self.aggregation == "constant" and self.max_tokens is None:
            object.__setattr__(self, "max_tokens", self.max_new_tokens)
        if self.tis_cap is not None:  # the correction compares with the sampler's log-probs
            object.__setattr__(self, "keep_sampler_logprobs", True)
        if self.num_samples < 1 or self.max_new_tokens < 1 or self.max_sampling_rounds < 1:
            raise ValueError(
                "config.grpo: num_samples, max_new_tokens and max_sampling_rounds must be >= 1"
            )
        if not 0 <= self.overlong_cache <= self.max_new_tokens:
            raise ValueError(
                f"config.grpo.overlong_cache={self.overlong_cache}: need 0 <= it <= "
                f"max_new_tokens={self.max_new_tokens}"
            )
        check_decoding(self)
        if self.share_prompts not in ("auto", "on", "off"):
            raise ValueError(f"config.grpo.share_prompts={self.share_prompts!r}; auto, on or off")
        if self.routing_replay and (self.decode_slots or self.partial_lanes or self.pack_length):
            raise ValueError(
                "config.grpo.routing_replay: recorded by the static sampler into padded batches; "
                "set decode_slots, partial_lanes and pack_length to 0"
            )


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """Logit distillation: ``kind`` "forward_kl" | "reverse_kl" | "jsd"; ``teacher`` "online"
    (a forward of ``teacher_model`` each step, read from ``teacher_from``: an r1jax run, its
    checkpoints or an HF directory; empty = random with ``teacher_seed``, a plumbing test) or
    "topk" (each record's stored top-k: ``r1jax teacher-topk`` writes ``top_k`` per token)."""

    kind: str = "forward_kl"
    beta: float = 0.5
    temperature: float = 1.0
    teacher: str = "online"
    teacher_model: dict[str, Any] = dataclasses.field(default_factory=dict)
    teacher_from: str = ""
    teacher_seed: int = 1
    top_k: int = 32
    hard_weight: float = 0.0  # + this x the SFT loss on the data's tokens (soft + hard targets)


@dataclasses.dataclass(frozen=True)
class RewardPoolConfig:
    """The reward process pool: workers, per-item time limit (seconds), failure floor."""

    num_workers: int = 2
    item_timeout: float = 10.0
    floor: float = 0.0
    chunk_size: int = 8


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    """GRPO's model-based reward (with a ``reward_model_from`` link). An example's ``reward``
    field ("rules" | "model"; absent: ``default_route``) picks its reward: ``config.rewards``, or
    ``weight`` x the model's score plus the ``add_rules`` components with their weights. Rows
    over ``max_length`` tokens are cut from the left (0: prompt bucket + new tokens)."""

    weight: float = 1.0
    default_route: str = "rules"
    add_rules: tuple[str, ...] = ("format",)
    max_length: int = 0

    def __post_init__(self):
        if self.default_route not in ("rules", "model"):
            raise ValueError(f"reward_model.default_route={self.default_route!r}: rules|model")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Held-out evaluation (R1's protocol: k samples at T 0.6, top-p 0.95; pass@1 over them,
    pass@k, maj@k): ``num_prompts`` questions of ``task`` (seeded ``seed``) or ``path``."""

    task: str = ""  # empty: the run's data.task
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    path: str = ""
    num_prompts: int = 0  # 0: every record of ``path``, or 64 examples of ``task``
    num_samples: int = 8
    ks: tuple[int, ...] = ()  # extra pass@k / maj@k values; k = num_samples always reported
    temperature: float = 0.6  # 0: greedy
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 512
    prompts_per_batch: int = 32
    template: str = "r1_zero"  # "r1_zero" | "chat" | "raw"
    correctness_reward: str = ""  # empty: "countdown" for Countdown, else "accuracy"
    reward_timeout: float = 5.0
    seed: int = 12345

    def __post_init__(self):
        if not self.correctness_reward:
            reward = "countdown" if self.task == "countdown" else "accuracy"
            object.__setattr__(self, "correctness_reward", reward)

    @property
    def all_ks(self) -> tuple[int, ...]:
        return tuple(sorted({1, *self.ks, self.num_samples}))


@dataclasses.dataclass(frozen=True)
class RejectionConfig:
    """Filters of rejection sampling (R1: mixed languages, long paragraphs, code blocks in the
    chain of thought; incorrect, malformed, truncated, degenerate) and the per-prompt cap.
    ``language``: the target where an example has no ``language`` field of its own."""

    max_per_prompt: int = 3
    require_correct: bool = True
    require_well_formed: bool = True
    language: str = "en"
    min_language_consistency: float = 0.95
    repetition_ngram: int = 4
    max_repetition: float = 0.5
    drop_truncated: bool = True
    max_paragraph_words: int = 400  # a longer paragraph of the chain of thought: rejected (0: off)
    drop_code_blocks: bool = True  # a fenced ``` block in the chain of thought: rejected


# kind -> the sections a stage of that kind has (besides ``kind`` and ``seed``).
SECTIONS: dict[str, tuple[str, ...]] = {
    "sft": ("model", "mesh", "optim", "train", "data", "eval", "lora", "distributed"),
    # distill takes the section (a config may turn an sft stage into one) but no adapters
    "distill": (
        *("model", "mesh", "optim", "train", "data", "distill", "eval", "lora", "distributed"),
    ),
    "grpo": (
        *("model", "mesh", "optim", "train", "data", "grpo", "rewards", "reward_pool", "eval"),
        *("reward_model", "lora", "distributed"),
    ),
    "reward_model": ("model", "mesh", "optim", "train", "data", "eval", "distributed"),
    "eval": ("mesh", "eval", "distributed"),
    "rejection_sample": ("mesh", "eval", "rejection", "distributed"),
    "sample": ("mesh", "sample", "distributed"),
    "convert": ("mesh", "convert"),
    "teacher_topk": ("mesh", "data", "train", "distill", "distributed"),
    "tokenizer": ("tokenizer",),
}
SECTION_TYPES: dict[str, type] = {
    "mesh": MeshConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "data": DataConfig,
    "grpo": GRPOConfig,
    "distill": DistillConfig,
    "reward_pool": RewardPoolConfig,
    "reward_model": RewardModelConfig,
    "eval": EvalConfig,
    "rejection": RejectionConfig,
    "sample": SampleConfig,
    "tokenizer": TokenizerConfig,
    "convert": ConvertConfig,
    "distributed": DistributedConfig,
    "lora": LoRAConfig,
}
DEFAULT_REWARDS = {"accuracy": {"weight": 1.0}, "format": {"weight": 0.5}}
# Top-level scalars of a stage: links to other stages (recipes) or to files, by kind.
LINKS: dict[str, dict[str, Any]] = {
    "sft": dict(init_from="", data_from=""),
    "distill": dict(init_from="", data_from=""),
    "grpo": dict(init_from="", reward_model_from=""),
    "reward_model": dict(init_from="", data_from=""),
    "eval": dict(model_from="", tokenizer="", dtype="", output=""),
    "rejection_sample": dict(model_from="", tokenizer="", dtype="", output=""),
    "sample": dict(model_from="", tokenizer="", dtype="", output=""),
    "convert": {},
    "tokenizer": {},
    "teacher_topk": dict(model_from="", output="", data_from=""),
}
