"""An "eval" or "rejection_sample" stage end to end: the model of ``model_from`` on the stage's
mesh, its tokenizer, the held-out questions of ``eval``, then ``evaluate`` or
``rejection_sample``. Used by ``r1jax eval``, ``r1jax rejection-sample`` and recipe stages.

Under several processes (``jax.distributed``) the mesh spans them all and each process samples
its share of the questions; process 0 writes the files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jax

from r1jax import distributed, sharding
from r1jax.checkpoint import find_tokenizer, load_params
from r1jax.config import EvalConfig, Stage
from r1jax.evaluation.job import evaluate
from r1jax.evaluation.rejection import rejection_sample

DEFAULT_TASK_PROMPTS = 64


def examples_for(ev: EvalConfig) -> list[dict]:
    """The held-out questions: the first ``num_prompts`` records of ``path`` (0: all), or
    ``num_prompts`` (0: 64) examples of the built-in ``task`` drawn with ``seed``."""
    from r1jax.data import RecordSource, get_task

    if ev.path:
        source = RecordSource(ev.path, purpose="rl")
        n = len(source) if not ev.num_prompts else min(ev.num_prompts, len(source))
        return [source[i] for i in range(n)]
    if not ev.task:
        raise ValueError("config.eval: set task (a built-in task) or path (JSONL/Parquet)")
    task = get_task(ev.task, **dict(ev.task_options))
    return [task.example(i, seed=ev.seed) for i in range(ev.num_prompts or DEFAULT_TASK_PROMPTS)]


def load_model(stage: Stage, model_dir: str | Path, tokenizer_fallback: str | Path = ""):
    """(model_config, params on the stage's mesh, tokenizer, mesh) of ``model_dir``.

    The tokenizer is ``stage.links["tokenizer"]``, else the one stored with the checkpoint,
    else ``tokenizer_fallback`` (a recipe's shared tokenizer)."""
    from r1jax.data import load_tokenizer
    from r1jax.data.tokenizer import ClippedVocabTokenizer

    mesh = sharding.make_mesh(stage.mesh)
    overrides = {"compute_dtype": stage.link("dtype")} if stage.link("dtype") else {}
    model_config, params = load_params(model_dir, mesh=mesh, **overrides)
    tokenizer = stage.link("tokenizer") or find_tokenizer(model_dir) or tokenizer_fallback
    if not tokenizer or not Path(tokenizer).exists():
        raise FileNotFoundError(
            f"no tokenizer found next to {model_dir}: set config.tokenizer (a file or directory)"
        )
    # A model's vocabulary may be larger than its tokenizer's (padded tables, a small
    # sentencepiece model): ids past the tokenizer decode to nothing instead of failing.
    return model_config, params, ClippedVocabTokenizer(load_tokenizer(str(tokenizer))), mesh


def run(stage: Stage, model_dir: str | Path, output: str | Path, tokenizer_fallback="") -> dict:
    """Evaluates (``kind="eval"``: ``output`` is a directory for ``summary.json`` and
    ``samples.jsonl``) or rejection-samples (``output`` is the JSONL written) ``model_dir``."""
    model_config, params, tokenizer, mesh = load_model(stage, model_dir, tokenizer_fallback)
    examples = examples_for(stage.eval)
    if distributed.is_main_process():
        print(
            f"{stage.kind}: {len(examples)} questions x {stage.eval.num_samples} samples on "
            f"{mesh.devices.size} device(s) in {jax.process_count()} process(es)",
            file=sys.stderr,
            flush=True,
        )
    if stage.kind == "rejection_sample":
        settings = (stage.eval, stage.rejection)
        return rejection_sample(
            params, model_config, tokenizer, examples, *settings, output, mesh=mesh
        )
    if stage.kind != "eval":
        raise ValueError(f"config.kind={stage.kind!r}: 'eval' or 'rejection_sample' here")
    return evaluate(
        params, model_config, tokenizer, examples, stage.eval, output_dir=output or None, mesh=mesh
    )
