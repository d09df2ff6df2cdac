"""``r1jax demo``: the R1 recipe in miniature on CPU, with a report (see ``configs/demo.py``).

r1jax demo [--config=configs/demo.py[:smoke]] [--run_dir=DIR] [--only=STAGE]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
from absl import flags

from r1jax import distributed
from r1jax.config.flags import parse_config
from r1jax.pipeline import recipe
from r1jax.pipeline.claims import claims_markdown, paper_claims
from r1jax.pipeline.report import plot_bars, plot_curves, read_metrics, write_report

EVALS = {  # report row -> eval stage
    "base (SFT)": "eval_base",
    "after GRPO": "eval_grpo",
    "R1 (four stages)": "eval_r1",
    "student before": "eval_student_base",
    "student distilled": "eval_student",
    "student top-k distilled": "eval_student_topk",
    "student RL (GRPO)": "eval_student_grpo",
    "bilingual GRPO": "eval_mixed",
    "bilingual GRPO + language reward": "eval_consistent",
}


def _define(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("run_dir", None, "Run directory (default: config.run_dir).", flag_values=fv)
    flags.DEFINE_string("only", None, "Run only this stage.", flag_values=fv)


def _on_stage(start: float):
    def report(name: str, result: dict) -> None:
        keys = [k for k in ("pass@1", "loss", "kept", "tokenizer") if k in result]
        shown = ", ".join(
            f"{k} {result[k]:.3f}" if isinstance(result[k], float) else f"{k} {result[k]}"
            for k in keys
        )
        print(
            f"[{time.perf_counter() - start:6.0f}s] stage {name} done ({result['seconds']:.0f}s)"
            f"{': ' + shown if shown else ''}",
            flush=True,
        )

    return report


def make_report(config, run_dir: Path, results: dict) -> Path:
    """report.md + PNG plots from the stages' outputs."""
    k = max((config[s].eval.num_samples for s in EVALS.values() if s in results), default=1)
    metrics = ["pass@1", f"maj@{k}", f"pass@{k}", "format_rate"]
    table = {row: results[stage] for row, stage in EVALS.items() if stage in results}
    figures = [("Evaluation before/after", plot_bars(table, metrics, run_dir / "eval.png"))]
    grpo_rows = read_metrics(run_dir / "grpo" / "metrics.jsonl")
    panels = {
        "reward": ["reward/total"],
        "accuracy": ["accuracy", "reward/accuracy"],
        "response length": ["response_length/mean"],
        "KL": ["kl", "loss/kl"],
        "reflection rate": ["reflection/rate"],
    }
    figures.append(
        (
            "GRPO training curves",
            plot_curves(grpo_rows, panels, run_dir / "grpo.png", "R1-Zero GRPO"),
        )
    )
    sft_panels = {"loss": ["loss"], "token accuracy": ["token_accuracy"]}
    for stage in ("pretrain", "student_pretrain", "distill"):
        rows = read_metrics(run_dir / stage / "metrics.jsonl")
        figures.append(
            (f"{stage} curves", plot_curves(rows, sft_panels, run_dir / f"{stage}.png", stage))
        )
    seconds = sum(r.get("seconds", 0.0) for r in results.values())
    protocols = sorted(
        {(config[s].eval.temperature, config[s].eval.top_p) for s in EVALS.values() if s in results}
    )
    shown = "; ".join(f"temperature {t}, top-p {p}" for t, p in protocols)
    notes = [
        f"wall time of all stages: {seconds / 60:.1f} min",
        f"evaluation: {k} samples per question, {shown}",
    ]
    if "rejection" in results:
        r = results["rejection"]
        notes.append(f"rejection sampling kept {r.get('kept')} of {r.get('samples')} samples")
    return write_report(
        run_dir,
        title="r1jax demo: R1 in miniature",
        evaluations=table,
        metrics=metrics + ["mean_length", "language_mixing"],
        figures=figures,
        notes=notes,
        sections=[("The paper's claims", claims_markdown(paper_claims(results, run_dir)))],
    )


def main(argv: list[str]) -> int:
    config, fv = parse_config(
        argv, command="r1jax demo", default="configs/demo.py", define_flags=_define, doc=__doc__
    )
    # Several processes (launch/local.sh, a pod): every one runs the recipe, process 0 reports.
    distributed.initialize(config)
    main_process = distributed.is_main_process()
    if config.get("prng_impl"):
        # XLA:CPU compiles the default threefry generator slowly (seconds per random tensor);
        # the demo's config picks "rbg", which compiles ~10x faster.
        jax.config.update("jax_default_prng_impl", config.prng_impl)
    run_dir = Path(fv.run_dir or config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if main_process:
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=str))
        print(f"r1jax demo -> {run_dir} (stages: {config.stages})", flush=True)
    results = recipe.run_recipe(
        config,
        run_dir,
        only=fv.only,
        on_stage=_on_stage(time.perf_counter()) if main_process else None,
    )
    if not main_process:
        return 0
    report = make_report(config, run_dir, results)
    print(f"report: {report}")
    for row, stage in EVALS.items():
        if stage in results:
            print(f"  {row:<18} pass@1 {results[stage]['pass@1']:.3f}")
    return 0
