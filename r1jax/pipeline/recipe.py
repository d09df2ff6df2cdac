"""Multi-stage recipes (R1-Zero, R1, distillation) as a chain of named stages in one run directory.

A recipe config lists its stages in order (``config.stages = "sft_cold_start,grpo,..."``) and has
one section per stage, ``config.<name>``: a whole stage config (``r1jax.config.defaults(kind)``,
the same a single command runs) whose ``kind`` picks the runner:

  tokenizer          train a sentencepiece model on a built-in task's text (shared by all stages)
  sft/distill/grpo/reward_model   ``r1jax.train.loop.run`` on that stage (as ``r1jax train``)
  eval               ``r1jax.evaluation.stage.run``: a stage's model on held-out prompts
  rejection_sample   samples a stage's model, keeps correct/readable traces -> SFT JSONL
  teacher_topk       a stage's model's top-k next tokens stored with SFT records -> JSONL

Stage inputs name earlier stages: ``init_from`` (training stages start from that stage's final
params), ``model_from`` (eval / rejection sampling read that stage's model), ``data_from`` (an SFT
stage trains on the JSONL a rejection-sampling stage wrote), ``reward_model_from`` (a GRPO
stage scores its "model"-routed examples with that reward_model stage's model). Each finished
stage writes ``<run>/<stage>/done.json`` with its results; re-running the recipe skips finished
stages and resumes an interrupted one from its checkpoints. ``only=`` runs one stage alone (its
inputs must exist).

Under several processes (``jax.distributed``; the run directory on storage every host sees) the
same recipe runs on every process: training stages as in ``r1jax train``, evaluation and
rejection sampling over the stage's mesh spanning the processes (``<stage>.mesh``, default all
devices as data), each process sampling its share of the questions; process 0 writes the stage
files and every process waits at the end of each stage until they are written.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

from r1jax import distributed, multihost
from r1jax.checkpoint import load_params
from r1jax.config import Stage, typed

RECIPE_KEYS = ("stages", "run_dir", "prng_impl", "distributed")


def stage_names(config) -> list[str]:
    """The stages ``config.stages`` lists, each checked to have a section with a valid kind."""
    names = [s.strip() for s in str(config.stages).split(",") if s.strip()]
    for name in names:
        if name not in config:
            raise ValueError(f"config.stages lists {name!r} but config.{name} is missing")
    for key in config:
        if key not in RECIPE_KEYS and key not in names:
            raise ValueError(
                f"config.{key}: not a stage listed in config.stages ({names}) nor one of "
                f"{RECIPE_KEYS}"
            )
    return names


def typed_stages(config) -> dict[str, Stage]:
    """Every listed stage converted once (unknown keys and kinds fail before anything runs)."""
    return {name: typed(config[name], f"config.{name}") for name in stage_names(config)}


def _tokenizer_path(run_dir: Path) -> Path:
    return run_dir / "tokenizer" / "tokenizer.model"


def _with_links(stage: Stage, run_dir: Path) -> Stage:
    """A training stage with the recipe-level links resolved: the shared tokenizer (when the
    stage names none) and ``data_from`` (the JSONL a rejection-sampling stage wrote)."""
    data = stage.data
    if _tokenizer_path(run_dir).exists() and not data.tokenizer:
        data = dataclasses.replace(data, tokenizer=str(_tokenizer_path(run_dir)))
    if stage.link("data_from"):  # the stage's traces, before any data.path of its own
        traces = str(run_dir / stage.link("data_from") / "traces.jsonl")
        data = dataclasses.replace(data, path=f"{traces},{data.path}" if data.path else traces)
    links = dict(stage.links)
    if stage.link("reward_model_from"):  # a stage name -> its directory
        links["reward_model_from"] = str(run_dir / stage.link("reward_model_from"))
    return dataclasses.replace(stage, data=data, links=links)


def _init_params(stage: Stage, run_dir: Path):
    """The final params of the stage named by ``init_from`` (None without one), restored onto
    the mesh the stage trains on (under several processes each holds only its shards)."""
    from r1jax.sharding import make_mesh

    name = stage.link("init_from")
    if not name:
        return None
    _, params = load_params(run_dir / name, mesh=make_mesh(stage.mesh))
    return params


def _run_tokenizer(stage: Stage, stage_dir: Path, run_dir: Path) -> dict:
    from r1jax.data import get_task, tokenizer_corpus, train_sentencepiece
    from r1jax.data.tokenizer_train import iter_corpus_lines

    tok = stage.tokenizer
    lines = list(iter_corpus_lines(list(tok.inputs), tok.field))
    if tok.task:
        task = get_task(tok.task, **dict(tok.task_options))
        lines += tokenizer_corpus(task, tok.num_examples, tok.seed, layout="example")
    if not lines:
        raise ValueError("a tokenizer stage needs tokenizer.task and/or tokenizer.inputs")
    prefix = stage_dir / "tokenizer"
    if distributed.is_main_process():  # one writer; the stage's barrier publishes it
        options = dict(model_type=tok.model_type, split_digits=tok.split_digits)
        train_sentencepiece(lines, prefix, tok.vocab_size, **options)
    return {"tokenizer": f"{prefix}.model"}


def _run_training(stage: Stage, stage_dir: Path, run_dir: Path) -> dict:
    from r1jax.train import loop

    init = _init_params(stage, run_dir)
    return loop.run(_with_links(stage, run_dir), stage_dir, init_params=init)


def _run_teacher_topk(stage: Stage, stage_dir: Path, run_dir: Path) -> dict:
    """A "teacher_topk" stage: ``traces.jsonl`` with the ``model_from`` stage's top-k, over
    the records of its ``data`` (``data_from``: a rejection-sampling stage's traces)."""
    from r1jax.evaluation import teacher_topk

    stage = _with_links(stage, run_dir)
    source = run_dir / stage.link("model_from")
    output = stage_dir / "traces.jsonl"
    return teacher_topk.run(stage, source, output, tokenizer_fallback=_tokenizer_path(run_dir))


def _run_sampling(stage: Stage, stage_dir: Path, run_dir: Path) -> dict:
    """An "eval" (summary + samples in the stage directory) or "rejection_sample" stage
    (``traces.jsonl``) of the model ``model_from`` names."""
    from r1jax.evaluation import stage as eval_stage

    output = stage_dir if stage.kind == "eval" else stage_dir / "traces.jsonl"
    source = run_dir / stage.link("model_from")
    return eval_stage.run(stage, source, output, tokenizer_fallback=_tokenizer_path(run_dir))


RUNNERS: dict[str, Callable[[Stage, Path, Path], dict]] = {
    "tokenizer": _run_tokenizer,
    "sft": _run_training,
    "distill": _run_training,
    "grpo": _run_training,
    "reward_model": _run_training,
    "eval": _run_sampling,
    "rejection_sample": _run_sampling,
    "teacher_topk": _run_teacher_topk,
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
    stages = typed_stages(config)
    names = list(stages)
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
        stage = stages[name]
        start = time.perf_counter()
        result = dict(RUNNERS[stage.kind](stage, stage_dir, run_dir) or {})
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
