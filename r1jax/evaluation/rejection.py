"""Rejection sampling (R1 stage 3): sample k completions per prompt, keep the correct, well-formed,
readable, non-degenerate ones, at most N distinct per prompt, and write SFT-ready JSONL.

Readable as R1 filters it: the chain of thought is in the example's language (its ``language``
field, else the run's), and has no code block and no overlong paragraph. Each rejection reason
is counted in the stage's statistics (``rejected/<reason>``).

Correct means `JudgedSample.correct` (``r1jax.evaluation.metrics.is_correct`` of the
correctness reward), the same verdict pass@1 averages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from r1jax import distributed, multihost
from r1jax.config import EvalConfig, RejectionConfig
from r1jax.evaluation.judge import JudgedSample, sample_and_judge
from r1jax.rewards import language_consistency, thinking_region
from r1jax.rewards.language import script_word_counts
from r1jax.rewards.shaping import repetition_fraction
from r1jax.sampling import get_sampler


def _dedup_key(text: str) -> str:
    return " ".join(text.split())


def rejection_reason(sample: JudgedSample, settings: RejectionConfig) -> str | None:
    """Why ``sample`` is rejected (``None`` when it is kept, before the per-prompt cap)."""
    if settings.require_correct and not sample.correct:
        return "incorrect"
    if settings.require_well_formed and not sample.well_formed:
        return "malformed"
    if settings.drop_truncated and sample.finish_reason == "length":
        return "truncated"
    think = thinking_region(sample.completion)
    # Traces made only of numbers and symbols (arithmetic) have no language to check.
    has_words = sum(script_word_counts(think).values()) > 0
    language = sample.fields.get("language") or settings.language
    if has_words and language_consistency(think, language) < settings.min_language_consistency:
        return "language"
    if repetition_fraction(sample.completion, settings.repetition_ngram) > settings.max_repetition:
        return "degenerate"
    if settings.drop_code_blocks and "```" in think:
        return "code_block"
    if settings.max_paragraph_words and longest_paragraph(think) > settings.max_paragraph_words:
        return "long_paragraph"
    return None


def longest_paragraph(text: str) -> int:
    """Words (``script_word_counts``: a Chinese character is one) of the longest paragraph of
    ``text``, paragraphs being separated by blank lines."""
    paragraphs = re.split(r"\n\s*\n", text)
    return max(sum(script_word_counts(p).values()) for p in paragraphs)


def select(
    samples: Sequence[JudgedSample], settings: RejectionConfig
) -> tuple[list[JudgedSample], dict[str, int]]:
    """Kept samples (at most ``max_per_prompt`` distinct per question, first come first kept)
    and counts of every rejection reason (``duplicate`` and ``over_cap`` included)."""
    kept: list[JudgedSample] = []
    per_question: dict[int, set[str]] = {}
    counts: dict[str, int] = {}
    for s in samples:
        reason = rejection_reason(s, settings)
        if reason is None:
            seen = per_question.setdefault(s.question, set())
            key = _dedup_key(s.completion)
            if key in seen:
                reason = "duplicate"
            elif len(seen) >= settings.max_per_prompt:
                reason = "over_cap"
            else:
                seen.add(key)
                kept.append(s)
                continue
        counts[reason] = counts.get(reason, 0) + 1
    return kept, counts


# The example's fields that would stand in for the kept sample as an SFT target.
_TARGET_FIELDS = ("prompt", "completion", "think", "gold_cot", "messages", "_origin")


def kept_row(sample) -> dict:
    """A kept sample as a ``prompt_answer`` SFT record: its prompt and completion, with the
    example's other fields (``answer``, metadata) but none that is a target of its own."""
    fields = {k: v for k, v in sample.fields.items() if k not in _TARGET_FIELDS}
    return fields | {"prompt": sample.prompt, "completion": sample.completion.strip()}


def rejection_sample(
    params,
    model_config,
    tokenizer,
    examples: Sequence[dict],
    eval_settings: EvalConfig,
    settings: RejectionConfig,
    output_path: str | Path,
    *,
    sampler=None,
    mesh=None,
) -> dict[str, float]:
    """Samples, filters and writes ``{"prompt", "answer", "completion", ...}`` JSONL rows (the
    ``prompt_answer`` SFT format of ``r1jax.data``). Returns statistics (also written next to the
    output as ``<name>.stats.json``). On a mesh spanning processes every process samples its
    share (see ``sample_and_judge``), process 0 writes, and all return once the file is there."""
    sampler = sampler or get_sampler(model_config, mesh=mesh, pad_id=tokenizer.pad_id)
    samples, timing = sample_and_judge(
        params, model_config, tokenizer, examples, eval_settings, sampler=sampler
    )
    kept, rejected = select(samples, settings)
    output_path = Path(output_path)
    questions = len(examples)
    covered = len({s.question for s in kept})
    stats = {
        "questions": questions,
        "samples": len(samples),
        "kept": len(kept),
        "questions_with_a_kept_sample": covered,
        "acceptance_rate": len(kept) / max(len(samples), 1),
        **{f"rejected/{k}": v for k, v in sorted(rejected.items())},
        **timing,
    }
    if distributed.is_main_process():
        output_path.parent.mkdir(parents=True, exist_ok=True)
        with open(output_path, "w") as f:
            for s in kept:
                f.write(json.dumps(kept_row(s), default=str) + "\n")
        output_path.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2))
    if sampler.multi_process:
        multihost.barrier("rejection_sample:written")
    return stats
