"""Sample k completions per question and judge each one with the task's rule-based rewards.

``sample_and_judge`` does the work for ``r1jax eval`` (``r1jax.evaluation.job.evaluate``),
rejection sampling (``r1jax.evaluation.rejection``) and the demo: the correctness reward
(`EvalConfig.correctness_reward`) decides `JudgedSample.correct` through `is_correct`, the
format reward `JudgedSample.well_formed`. ``question_results`` groups the judged samples per
question for `summarize`, with the answers that vote read by the task's answer key
(``r1jax.evaluation.answer_keys.answer_key_for``: math, Countdown, exact match, code).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import jax

from r1jax import multihost
from r1jax.config import EvalConfig
from r1jax.data import PromptFormatter, encode_prompt
from r1jax.evaluation.answer_keys import AnswerKey
from r1jax.evaluation.metrics import QuestionResult, is_correct
from r1jax.model import ModelConfig
from r1jax.rewards import CompositeReward, RewardSpec, extract_answer
from r1jax.sampling import Sampler, get_sampler


@dataclasses.dataclass(frozen=True)
class JudgedSample:
    """One sampled completion of question ``question`` (its ``sample``-th) and its verdicts.

    ``correct``: `is_correct` of the correctness reward; ``well_formed``: the format reward is
    full; ``length``: completion tokens; ``fields``: the example's fields but its prompt.
    """

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


def _default_rewards(settings: EvalConfig) -> CompositeReward:
    """The correctness reward (key ``correct``) and the format reward, time-limited per item."""
    return CompositeReward(
        [RewardSpec(settings.correctness_reward, key="correct"), RewardSpec("format", weight=0.0)],
        item_timeout=settings.reward_timeout,
    )


def _judge(questions, chunk, texts, out, k, rewards) -> tuple[list[JudgedSample], int]:
    """Runs the rewards (in their time-limited process pool) over the ``len(chunk) * k``
    completions ``texts`` of one sampler call ``out``; returns the judged samples and the
    reward time-outs."""
    rows = [chunk[i // k] for i in range(len(texts))]
    fields = {f: [r.get(f) for r in rows] for f in rows[0] if f != "prompt"}
    result = rewards.evaluate([r["prompt"] for r in rows], texts, **fields)
    correct = is_correct(result.components["correct"])
    formatted = result.components["format"]
    samples = [
        JudgedSample(
            question=questions[row // k],
            sample=row % k,
            prompt=rows[row]["prompt"],
            completion=text,
            extracted=extract_answer(text),
            correct=bool(correct[row]),
            well_formed=bool(formatted[row] >= 1.0),
            length=int(out.lengths[row]),
            finish_reason=str(out.finish_reason[row]),
            fields={f: v for f, v in rows[row].items() if f != "prompt"},
        )
        for row, text in enumerate(texts)
    ]
    return samples, result.timeouts


def _sample(sampler, params, prompts, key, settings: EvalConfig, stops):
    """One sampler call: ``settings.num_samples`` completions of each prompt."""
    return sampler(
        params,
        prompts,
        rng=key,
        num_samples=settings.num_samples,
        max_new_tokens=settings.max_new_tokens,
        greedy=settings.temperature <= 0,
        temperature=settings.temperature if settings.temperature > 0 else 1.0,
        top_k=settings.top_k,
        top_p=settings.top_p,
        stop_token_ids=stops,
    )


def sample_and_judge(
    params,
    model_config: ModelConfig,
    tokenizer,
    examples: Sequence[dict],
    settings: EvalConfig,
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
      rewards: default: the correctness reward (key ``correct``) and the format reward.
      mesh: rows are split over its batch axes (``params`` must already be on it). A mesh that
        spans several processes (a pod): every process calls this with the same ``examples``,
        samples and judges its share of the questions, and gets back all of them.
    Returns:
      ``(samples, timing)``, ``len(examples) * num_samples`` samples in (question, sample)
      order; ``timing`` has ``tokens_per_second`` and ``seconds_per_completion`` (generation
      only) and ``reward_timeouts``.
    """
    # The shared sampler: stages evaluating same-shaped models reuse its compiled programs.
    sampler = sampler or get_sampler(model_config, mesh=mesh, pad_id=tokenizer.pad_id)
    shard = multihost.data_shard(sampler.mesh) if sampler.multi_process else None
    splits = multihost.batch_splits(sampler.mesh) if sampler.mesh is not None else 1
    plan = sampling_plan(len(examples), settings.prompts_per_batch, shard, splits)
    own_rewards = rewards is None
    rewards = _default_rewards(settings) if own_rewards else rewards
    formatter = PromptFormatter(settings.template, tokenizer)
    stops = tuple(i for i in (tokenizer.eos_id, tokenizer.answer_end_id) if i is not None)
    rng = jax.random.key(settings.seed)
    samples: list[JudgedSample] = []
    gen_seconds, timeouts = 0.0, 0
    try:
        for questions in plan:
            chunk = [examples[q % len(examples)] for q in questions]
            prompts = [encode_prompt(tokenizer, formatter(e)) for e in chunk]
            rng, key = jax.random.split(rng)
            t0 = time.perf_counter()
            out = _sample(sampler, params, prompts, key, settings, stops)
            gen_seconds += time.perf_counter() - t0
            texts = [tokenizer.decode(ids) for ids in out.completions()]
            judged, chunk_timeouts = _judge(
                questions, chunk, texts, out, settings.num_samples, rewards
            )
            samples += judged
            timeouts += chunk_timeouts
    finally:
        if own_rewards:
            rewards.close()
    if shard is not None:  # every process gets every process's samples
        samples, timeouts = _gather(samples, timeouts, sampler.mesh, len(examples))
    else:
        samples = [s for s in samples if s.question < len(examples)]  # no padding questions
    return samples, _timing(samples, gen_seconds, timeouts)


def _gather(samples, timeouts: int, mesh, num_examples: int) -> tuple[list[JudgedSample], int]:
    """Every process's judged samples (`_merge_processes`) and their reward time-outs."""
    owners = multihost.shard_owners(mesh)
    gathered = multihost.gather_objects([dataclasses.asdict(s) for s in samples])
    total = int(multihost.gather_shards([timeouts], mesh).sum())
    return _merge_processes(gathered, owners, num_examples), total


def _timing(samples: Sequence[JudgedSample], gen_seconds: float, timeouts: int) -> dict:
    """Generation throughput (sampler calls only) and reward time-outs of a judged run."""
    gen_tokens = sum(s.length for s in samples)
    return {
        "generation_seconds": gen_seconds,
        "tokens_per_second": gen_tokens / max(gen_seconds, 1e-9),
        "seconds_per_completion": gen_seconds / max(len(samples), 1),
        "reward_timeouts": float(timeouts),
    }


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
