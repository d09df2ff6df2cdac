"""Multi-stage recipes (R1-Zero, R1, distillation) as a chain of named stages in one run directory.

A recipe config lists its stages in order (``config.stages = "sft_cold_start,grpo,..."``) and has
one section per stage, ``config.<name>``, whose ``kind`` picks the runner:

  tokenizer          train a sentencepiece model on a built-in task's text (shared by all stages)
  sft / distill      ``r1jax.train.loop.run`` on that section (a full training config)
  grpo               ``r1jax.train.grpo_run.run`` on that section
  eval               ``r1jax.evaluation.evaluate`` of a stage's model on held-out prompts
  rejection_sample   samples a stage's model, keeps correct/readable traces -> SFT JSONL

Stage inputs name earlier stages: ``init_from`` (training stages start from that stage's final
params), ``model_from`` (eval / rejection sampling read that stage's model), ``data_from`` (an SFT
stage trains on the JSONL a rejection-sampling stage wrote). Each finished stage writes
``<run>/<stage>/done.json`` with its results; re-running the recipe skips finished stages and
resumes an interrupted one from its checkpoints. ``only=`` runs one stage alone (its inputs must
exist).

Under several processes (``jax.distributed``; the run directory on storage every host sees) the
same recipe runs on every process: training stages as in ``r1jax train``, evaluation and
rejection sampling over a mesh spanning the processes (``<stage>.mesh``, default all devices as
data), each process sampling its share of the questions; process 0 writes the stage files and
every process waits at the end of each stage until they are written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import jax
import ml_collections

from r1jax import distributed, multihost
from r1jax.checkpoint import find_tokenizer, load_params

STAGE_KINDS = ("tokenizer", "sft", "distill", "grpo", "eval", "rejection_sample")


def stage_names(config) -> list[str]:
    names = [s.strip() for s in str(config.stages).split(",") if s.strip()]
    for name in names:
        if name not in config:
            raise ValueError(f"config.stages lists {name!r} but config.{name} is missing")
        kind = config[name].get("kind")
        if kind not in STAGE_KINDS:
            raise ValueError(f"config.{name}.kind={kind!r}; one of {STAGE_KINDS}")
    return names


def _tokenizer_path(run_dir: Path) -> Path:
    return run_dir / "tokenizer" / "tokenizer.model"


def _stage_config(section, run_dir: Path) -> ml_collections.ConfigDict:
    """A training stage's section with the recipe-level links resolved to paths."""
    cfg = ml_collections.ConfigDict(section.to_dict())
    with cfg.unlocked():
        if "data" in cfg and _tokenizer_path(run_dir).exists() and not cfg.data.get("tokenizer"):
            cfg.data.tokenizer = str(_tokenizer_path(run_dir))
        data_from = cfg.get("data_from")
        if data_from:
            cfg.data.path = str(run_dir / data_from / "traces.jsonl")
        for key in ("kind", "init_from", "data_from", "model_from"):
            if key in cfg:
                del cfg[key]
    return cfg


def _init_params(section, run_dir: Path):
    """The final params of the stage named by ``init_from`` (None without one), restored onto
    the mesh the stage trains on (under several processes each holds only its shards)."""
    from r1jax.sharding import MeshConfig, make_mesh

    name = section.get("init_from")
    if not name:
        return None
    mesh = make_mesh(MeshConfig.from_mapping(section.get("mesh") or {}))
    _, params = load_params(run_dir / name, mesh=mesh)
    return params


def _run_tokenizer(section, stage_dir: Path, run_dir: Path) -> dict:
    from r1jax.data import get_task, tokenizer_corpus, train_sentencepiece

    task = get_task(section.task, **dict(section.get("task_options") or {}))
    lines = tokenizer_corpus(task, section.num_examples, section.seed, layout="example")
    prefix = stage_dir / "tokenizer"
    if distributed.is_main_process():  # one writer; the stage's barrier publishes it
        train_sentencepiece(lines, prefix, section.vocab_size)
    return {"tokenizer": f"{prefix}.model"}


def _run_training(section, stage_dir: Path, run_dir: Path) -> dict:
    from r1jax.train import grpo_run, loop

    cfg = _stage_config(section, run_dir)
    init = _init_params(section, run_dir)
    if section.kind == "grpo":
        return grpo_run.run(cfg, stage_dir, init_params=init)
    return loop.run(cfg, stage_dir, init_params=init)


def eval_examples(section) -> list[dict]:
    """Held-out prompts of a built-in task (a seed the training stages do not use) or JSONL."""
    from r1jax.data import RecordSource, get_task

    if section.get("path"):
        source = RecordSource(section.path, purpose="rl")
        return [source[i] for i in range(min(len(source), section.num_prompts))]
    task = get_task(section.task, **dict(section.get("task_options") or {}))
    return [task.example(i, seed=section.seed) for i in range(section.num_prompts)]


def _settings(section):
    from r1jax.evaluation import EvalSettings

    fields = {k: section[k] for k in EvalSettings.__dataclass_fields__ if k in section}
    if "ks" in fields:
        fields["ks"] = tuple(fields["ks"])
    return EvalSettings(**fields)


def _sampling_mesh(section):
    """The section's ``mesh`` (data/fsdp/tensor sizes); without one, no mesh for a single
    process and all devices as data across processes (each process samples its share)."""
    from r1jax.sharding import MeshConfig, make_mesh

    if section.get("mesh"):
        return make_mesh(MeshConfig.from_mapping(section.mesh))
    return make_mesh(MeshConfig(-1, 1, 1)) if jax.process_count() > 1 else None


def _model_and_tokenizer(section, run_dir: Path):
    """(model_config, params on the stage's mesh, tokenizer, mesh) of ``model_from``."""
    from r1jax.data import load_tokenizer

    source = run_dir / section.model_from
    mesh = _sampling_mesh(section)
    model_config, params = load_params(source, mesh=mesh)
    tokenizer = find_tokenizer(source) or _tokenizer_path(run_dir)
    return model_config, params, load_tokenizer(str(tokenizer)), mesh


def _run_eval(section, stage_dir: Path, run_dir: Path) -> dict:
    from r1jax.evaluation import evaluate

    model_config, params, tokenizer, mesh = _model_and_tokenizer(section, run_dir)
    return evaluate(
        params,
        model_config,
        tokenizer,
        eval_examples(section),
        _settings(section),
        output_dir=stage_dir,
        mesh=mesh,
    )


def _run_rejection(section, stage_dir: Path, run_dir: Path) -> dict:
    from r1jax.evaluation import RejectionSettings, rejection_sample

    model_config, params, tokenizer, mesh = _model_and_tokenizer(section, run_dir)
    filters = RejectionSettings(**dict(section.get("filters") or {}))
    return rejection_sample(
        params,
        model_config,
        tokenizer,
        eval_examples(section),
        _settings(section),
        filters,
        stage_dir / "traces.jsonl",
        mesh=mesh,
    )


RUNNERS: dict[str, Callable[[Mapping, Path, Path], dict]] = {
    "tokenizer": _run_tokenizer,
    "sft": _run_training,
    "distill": _run_training,
    "grpo": _run_training,
    "eval": _run_eval,
    "rejection_sample": _run_rejection,
}


def run_recipe(
    config,
    run_dir: str | Path,
    *,
    only: str | None = None,
    on_stage: Callable[[str, dict], None] | None = None,
) -> dict[str, dict]:
    """Runs (or resumes) every stage of ``config`` in ``run_dir``; returns results by stage."""
    run_dir = Path(run_dir)
    names = stage_names(config)
    if only is not None and only not in names:
        raise ValueError(f"--only={only!r}: not a stage of this recipe ({names})")
    results: dict[str, dict] = {}
    for name in names:
        stage_dir = run_dir / name
        done = stage_dir / "done.json"
        if done.exists() and only != name:
            results[name] = json.loads(done.read_text())
            continue
        if only is not None and only != name:
            continue
        stage_dir.mkdir(parents=True, exist_ok=True)
        section = config[name]
        start = time.perf_counter()
        result = dict(RUNNERS[section.kind](section, stage_dir, run_dir) or {})
        result["seconds"] = time.perf_counter() - start
        if distributed.is_main_process():
            done.write_text(json.dumps(result, indent=2, default=float))
        # The next stage reads what this one wrote (on process 0 alone for files that are not
        # orbax checkpoints): no process goes on before it is there.
        multihost.barrier(f"recipe:{name}:done")
        results[name] = result
        if on_stage is not None:
            on_stage(name, result)
    return results
