"""What every training job builds from its typed stage (model, mesh, optimizer, schedule; the
tokenizer and the example source of ``config.data``) and the ``Job`` it hands the loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax

from r1jax import multihost, sharding
from r1jax.config import Stage
from r1jax.config.lora import LoRAConfig
from r1jax.config.schema import DataConfig
from r1jax.model import ModelConfig
from r1jax.train.optim import make_optimizer, make_schedule
from r1jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything static about a run, built once from its stage.

    ``frozen_config``: the model config of the frozen params (a GRPO reference: the policy's
    own; online distillation: the teacher's), None without frozen params. ``lora``: the
    state trains adapters over a frozen base (``r1jax.train.adapters``), else None.
    """

    model_config: ModelConfig
    mesh: Any
    optimizer: Any
    schedule: Any
    frozen_config: ModelConfig | None = None
    lora: LoRAConfig | None = None


def build_setup(stage: Stage, frozen_config: ModelConfig | None = None) -> Setup:
    """Model config, the mesh (its sharding rules become ambient), optimizer and schedule."""
    return Setup(
        stage.model,
        sharding.make_mesh(stage.mesh),
        make_optimizer(stage.optim),
        make_schedule(stage.optim),
        None if stage.lora is not None else frozen_config,
        stage.lora,  # None unless config.lora.rank > 0 (``r1jax.config.typed``)
    )


def make_source(data: DataConfig):
    """A built-in task (``data.task``) or JSONL/Parquet path(s) (``data.path``: files,
    directories or globs, several separated by commas)."""
    from r1jax.data import get_task

    if data.path:
        paths = [p.strip() for p in data.path.split(",") if p.strip()]
        return paths[0] if len(paths) == 1 else paths
    return get_task(data.task, **dict(data.task_options))


def make_tokenizer(data: DataConfig, workdir: str | Path):
    """``data.tokenizer`` if set, else a sentencepiece model trained on the task into workdir."""
    from r1jax.data import load_tokenizer, tokenizer_corpus, train_sentencepiece

    if data.tokenizer:
        return load_tokenizer(data.tokenizer)
    if data.path:
        raise ValueError("config.data.path is set: also set config.data.tokenizer (a model path)")
    prefix = Path(workdir) / "tokenizer"
    model = prefix.with_suffix(".model")
    if not model.exists():
        if jax.process_index() == 0:
            source, n = make_source(data), data.tokenizer_examples
            lines = tokenizer_corpus(source, n, data.seed, layout="fields")
            train_sentencepiece(lines, prefix, data.vocab_size)
        multihost.barrier("tokenizer")  # the others wait for process 0's file
    return load_tokenizer(str(model))


def check_shapes(loaded: ModelConfig, config: ModelConfig, where: str) -> None:
    """Raises, naming the field, unless ``loaded`` has ``config``'s shape."""
    for field in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads"):
        if getattr(loaded, field) != getattr(config, field):
            raise ValueError(
                f"{where}: its {field}={getattr(loaded, field)} but "
                f"config.model.{field}={getattr(config, field)}"
            )


def check_vocab(tokenizer, model_config: ModelConfig) -> None:
    if tokenizer.vocab_size > model_config.vocab_size:
        raise ValueError(
            f"tokenizer vocab {tokenizer.vocab_size} > config.model.vocab_size "
            f"{model_config.vocab_size}"
        )


EvalFn = Callable[[TrainState, int], Mapping[str, float] | None]
# iteration(state, step, guard) -> (state, metrics); ``guard()`` is the transfer guard context
# the jitted update runs in; metrics may be device arrays (fetched at log steps only).
Iteration = Callable[[TrainState, int, Callable], tuple[TrainState, dict]]


@dataclasses.dataclass
class Job:
    """What an objective supplies to the loop.

    data: the checkpointable iterator (``get_state``/``set_state``) ``iteration`` reads.
    frozen: params attached to the state and not checkpointed (a distillation teacher).
    reference: the frozen params are a copy of the initial policy, checkpointed (GRPO's
      reference, beta > 0).
    steps_per_iteration: optimizer steps per iteration (GRPO's mu).
    throughput: ``fn(seconds_per_iteration) -> metrics`` added at log steps.
    """

    setup: Setup
    iteration: Iteration
    data: Any
    frozen: Any = None
    reference: bool = False
    steps_per_iteration: int = 1
    throughput: Callable[[float], dict] | None = None
    progress_keys: tuple[str, ...] = ("loss", "learning_rate", "tokens_per_s")
    desc: str = "train"
    eval_fn: EvalFn | None = None
    close: Callable[[], None] = lambda: None
