"""``evaluate``: one evaluation job, the R1 paper's metrics (pass@1 over k samples, pass@k,
maj@k), format rate, length and throughput of a model on a set of questions, written to
``summary.json`` and ``samples.jsonl``.

maj@k votes over the task's own answers: the answer key of the correctness reward
(``r1jax.evaluation.answer_keys.answer_key_for``), its equivalence checks in worker processes
under the per-item time limit.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from r1jax import distributed
from r1jax.config import EvalConfig
from r1jax.evaluation.answer_keys import answer_key_for
from r1jax.evaluation.judge import question_results, sample_and_judge
from r1jax.evaluation.metrics import summarize
from r1jax.evaluation.voting import PooledEquivalence
from r1jax.model import ModelConfig
from r1jax.sampling import Sampler

MIXED_BELOW = 0.95  # a chain of thought with less of its words in its language is "mixed"


def language_mixing(samples: Sequence) -> float:
    """The fraction of samples whose chain of thought (``thinking_region``) has under
    ``MIXED_BELOW`` of its words in the example's ``language`` (default English), among those
    whose chain of thought has words at all: R1's language-mixing rate, what its
    language-consistency reward lowers."""
    from r1jax.rewards.extract import thinking_region
    from r1jax.rewards.language import language_consistency, script_word_counts

    mixed = []
    for s in samples:
        thought = thinking_region(s.completion)
        if script_word_counts(thought):
            language = s.fields.get("language") or "en"
            mixed.append(language_consistency(thought, language) < MIXED_BELOW)
    return float(np.mean(mixed)) if mixed else 0.0


def evaluate(
    params,
    model_config: ModelConfig,
    tokenizer,
    examples: Sequence[dict],
    settings: EvalConfig,
    *,
    output_dir: str | Path | None = None,
    sampler: Sampler | None = None,
    mesh=None,
) -> dict[str, float]:
    """``sample_and_judge`` + ``summarize``; writes ``samples.jsonl`` and ``summary.json``
    (process 0 only, when the mesh spans processes; every process returns the summary).

    maj@k groups answers with the task's answer key (``answer_key_for`` the correctness
    reward); its equivalence checks run in worker processes, each under ``reward_timeout``
    seconds, and ``vote_timeouts`` counts those that ran out (counted as different answers).
    """
    samples, timing = sample_and_judge(
        params, model_config, tokenizer, examples, settings, sampler=sampler, mesh=mesh
    )
    answer_key = answer_key_for(settings.correctness_reward)
    results = question_results(samples, settings.num_samples, answer_key)
    with PooledEquivalence.for_key(answer_key, timeout=settings.reward_timeout) as compare:
        summary = summarize(results, ks=settings.all_ks, answer_key=answer_key, compare=compare)
    summary["vote_timeouts"] = float(compare.timeouts)
    summary.update(timing)
    summary["truncation_rate"] = float(np.mean([s.finish_reason == "length" for s in samples]))
    summary["language_mixing"] = language_mixing(samples)
    if output_dir is not None and distributed.is_main_process():
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "samples.jsonl", "w") as f:
            for s in samples:
                f.write(json.dumps(dataclasses.asdict(s), default=str) + "\n")
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
