"""Sample k completions per question, judge them with the task's rule-based reward, report the
R1 paper's metrics (pass@1 over k samples, pass@k, maj@k), format rate, length and throughput.

maj@k votes over the task's own answers: the answer key of the correctness reward
(`r1jax.answer_keys.answer_key_for`: math, Countdown, exact match, code), its equivalence checks
in worker processes under the per-item time limit.

Shared by ``r1jax eval``, rejection sampling and the demo: ``sample_and_judge`` does the work,
``evaluate`` adds the summary and the files.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path

import jax
import numpy as np

from r1jax import distributed, multihost
from r1jax.answer_keys import AnswerKey, answer_key_for
from r1jax.data import PromptFormatter, encode_prompt
from r1jax.evaluation import QuestionResult, summarize
from r1jax.model import ModelConfig
from r1jax.rewards import CompositeReward, RewardSpec, extract_answer
from r1jax.sampling import Sampler, get_sampler
from r1jax.voting import PooledEquivalence


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How to sample and judge. Defaults follow the R1 paper (T = 0.6, top-p = 0.95)."""

    num_samples: int = 8
    temperature: float = 0.6  # 0: greedy decoding
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 256
    ks: tuple[int, ...] = ()  # extra pass@k / maj@k values; k = num_samples is always reported
    prompts_per_batch: int = 32
    template: str = "r1_zero"
    correctness_reward: str = "accuracy"  # "countdown" for Countdown, "exact_match", ...
    reward_timeout: float = 5.0
    seed: int = 0

    @property
    def all_ks(self) -> tuple[int, ...]:
        return tuple(sorted({1, *self.ks, self.num_samples}))


@dataclasses.dataclass(frozen=True)
class JudgedSample:
    question: int
    sample: int
    prompt: str
    completion: str
    extracted: str | None
    correct: bool
    well_formed: bool
    length: int
    finish_reason: str
    fields: dict


def _judge(examples, completions, num_samples, settings, rewards):
    """Runs the correctness and format rewards in the (time-limited) process pool."""
    rows = [examples[i // num_samples] for i in range(len(completions))]
    fields = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    result = rewards.evaluate([r["prompt"] for r in rows], completions, **fields)
    return result.components["correct"], result.components["format"], result


def sampling_plan(
    num_examples: int, prompts_per_batch: int, shard=None, splits: int = 1
) -> list[list[int]]:
    """The question indices this process samples in each sampler call.

    The same global calls on any number of processes (so the same questions meet the same
    sampler keys): the questions are padded to a multiple of the mesh's ``splits`` batch shards
    with indices ``>= num_examples`` (repeats of earlier questions, sampled and then dropped),
    cut into global chunks of ``prompts_per_batch`` rounded up to a multiple of ``splits``, and
    each process takes its data shard's rows (``shard.rows``; ``shard`` None: every row) of
    every chunk. Every process thus makes the same calls with the same number of prompts.
    """
    padded = -(-num_examples // splits) * splits
    chunk = -(-prompts_per_batch // splits) * splits
    plan = []
    for start in range(0, padded, chunk):
        rows = list(range(start, min(start + chunk, padded)))
        plan.append(rows if shard is None else rows[shard.rows(len(rows))])
    return plan


def _merge_processes(
    gathered: list[list[dict]], owners: list[int], num_examples: int
) -> list[JudgedSample]:
    """All processes' judged samples in (question, sample) order: those of each data shard's
    first process (``multihost.shard_owners``; processes that share a shard sampled the same
    rows) without the padding questions."""
    rows = [s for p in owners for s in gathered[p] if s["question"] < num_examples]
    samples = [JudgedSample(**s) for s in rows]
    return sorted(samples, key=lambda s: (s.question, s.sample))


def sample_and_judge(
    params,
    model_config: ModelConfig,
    tokenizer,
    examples: Sequence[dict],
    settings: EvalSettings,
    *,
    sampler: Sampler | None = None,
    rewards: CompositeReward | None = None,
    mesh=None,
) -> tuple[list[JudgedSample], dict[str, float]]:
    """Samples ``settings.num_samples`` completions per example and judges each one.

    Args:
      examples: records with ``prompt`` (untemplated), ``answer`` and any fields the
        correctness reward reads (``numbers``/``target`` for Countdown).
      sampler: default: the shared sampler of ``model_config`` on ``mesh``.
      mesh: rows are split over its batch axes (``params`` must already be on it). A mesh that
        spans several processes (a pod): every process calls this with the same ``examples``,
        samples and judges its share of the questions, and gets back all of them.
    Returns:
      ``(samples, timing)``, samples in question order; ``timing`` has ``tokens_per_second``
      and ``seconds_per_completion`` (generation only) and reward incident counts.
    """
    # The shared sampler: stages evaluating same-shaped models reuse its compiled programs.
    sampler = sampler or get_sampler(model_config, mesh=mesh, pad_id=tokenizer.pad_id)
    shard = multihost.data_shard(sampler.mesh) if sampler.multi_process else None
    splits = multihost.batch_splits(sampler.mesh) if sampler.mesh is not None else 1
    plan = sampling_plan(len(examples), settings.prompts_per_batch, shard, splits)
    own_rewards = rewards is None
    if own_rewards:
        rewards = CompositeReward(
            [
                RewardSpec(settings.correctness_reward, key="correct"),
                RewardSpec("format", weight=0.0),
            ],
            item_timeout=settings.reward_timeout,
        )
    formatter = PromptFormatter(settings.template, tokenizer)
    stops = tuple(i for i in (tokenizer.eos_id, tokenizer.answer_end_id) if i is not None)
    rng = jax.random.key(settings.seed)
    k = settings.num_samples
    samples: list[JudgedSample] = []
    gen_seconds, timeouts = 0.0, 0
    try:
        for questions in plan:
            chunk = [examples[q % len(examples)] for q in questions]
            prompts = [encode_prompt(tokenizer, formatter(e)) for e in chunk]
            rng, key = jax.random.split(rng)
            t0 = time.perf_counter()
            out = sampler(
                params,
                prompts,
                rng=key,
                num_samples=k,
                max_new_tokens=settings.max_new_tokens,
                greedy=settings.temperature <= 0,
                temperature=settings.temperature if settings.temperature > 0 else 1.0,
                top_k=settings.top_k,
                top_p=settings.top_p,
                stop_token_ids=stops,
            )
            gen_seconds += time.perf_counter() - t0
            texts = [tokenizer.decode(ids) for ids in out.completions()]
            correct, formatted, result = _judge(chunk, texts, k, settings, rewards)
            timeouts += result.timeouts
            for row, text in enumerate(texts):
                q = row // k
                samples.append(
                    JudgedSample(
                        question=questions[q],
                        sample=row % k,
                        prompt=chunk[q]["prompt"],
                        completion=text,
                        extracted=extract_answer(text),
                        correct=bool(correct[row] >= 1.0),
                        well_formed=bool(formatted[row] >= 1.0),
                        length=int(out.lengths[row]),
                        finish_reason=str(out.finish_reason[row]),
                        fields={f: v for f, v in chunk[q].items() if f != "prompt"},
                    )
                )
    finally:
        if own_rewards:
            rewards.close()
    if shard is not None:  # every process gets every process's samples
        owners = multihost.shard_owners(sampler.mesh)
        gathered = multihost.gather_objects([dataclasses.asdict(s) for s in samples])
        samples = _merge_processes(gathered, owners, len(examples))
        timeouts = int(multihost.gather_shards([timeouts], sampler.mesh).sum())
    else:
        samples = [s for s in samples if s.question < len(examples)]  # no padding questions
    gen_tokens = sum(s.length for s in samples)
    timing = {
        "generation_seconds": gen_seconds,
        "tokens_per_second": gen_tokens / max(gen_seconds, 1e-9),
        "seconds_per_completion": gen_seconds / max(len(samples), 1),
        "reward_timeouts": float(timeouts),
    }
    return samples, timing


def question_results(
    samples: Sequence[JudgedSample], num_samples: int, answer_key: AnswerKey | None = None
) -> list[QuestionResult]:
    """Groups judged samples (in question order, ``num_samples`` each) per question.

    The answers that vote are ``answer_key.extract`` of the completions (the code task votes on
    programs), or the samples' ``extracted`` answers without a key; each result carries its
    question's fields (Countdown's ``numbers``) for the key.
    """
    out = []
    for q in range(0, len(samples), num_samples):
        group = samples[q : q + num_samples]
        if answer_key is None:
            answers = tuple(s.extracted for s in group)
        else:
            answers = tuple(answer_key.extract(s.completion) for s in group)
        out.append(
            QuestionResult(
                correct=tuple(s.correct for s in group),
                answers=answers,
                well_formed=tuple(s.well_formed for s in group),
                lengths=tuple(s.length for s in group),
                example=dict(group[0].fields),
            )
        )
    return out


def evaluate(
    params,
    model_config: ModelConfig,
    tokenizer,
    examples: Sequence[dict],
    settings: EvalSettings,
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
    if output_dir is not None and distributed.is_main_process():
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        with open(output_dir / "samples.jsonl", "w") as f:
            for s in samples:
                f.write(json.dumps(dataclasses.asdict(s), default=str) + "\n")
        (output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
