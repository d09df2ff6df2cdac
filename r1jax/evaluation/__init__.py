"""Evaluation of the R1 paper: sample k completions per question, judge them with the task's
rule-based rewards, and report pass@1 over k samples, unbiased pass@k and maj@k; rejection
sampling keeps the correct, readable samples as SFT data.

  metrics.py      `is_correct` / `pass_at_1` (the one definition), `pass_at_k`, `summarize`
  answer_keys.py  what "the same answer" means per task (math, Countdown, exact match, code)
  voting.py       majority vote over a question's answers (maj@k), equivalence under a limit
  judge.py        `sample_and_judge`: sampling plan over processes, per-sample verdicts
  job.py          `evaluate`: judge + summarize, writes ``summary.json`` / ``samples.jsonl``
  rejection.py    `rejection_sample`: filters judged samples into SFT JSONL
"""

from r1jax.config import EvalConfig, RejectionConfig
from r1jax.evaluation.answer_keys import (
    ANSWER_KEYS,
    MATH_ANSWERS,
    AnswerKey,
    CodeAnswers,
    CountdownAnswers,
    ExactMatchAnswers,
    MathAnswers,
    answer_key_for,
    normalize_program,
)
from r1jax.evaluation.job import evaluate
from r1jax.evaluation.judge import JudgedSample, question_results, sample_and_judge, sampling_plan
from r1jax.evaluation.metrics import (
    CORRECT_REWARD,
    QuestionResult,
    is_correct,
    pass_at_1,
    pass_at_k,
    summarize,
)
from r1jax.evaluation.rejection import rejection_reason, rejection_sample, select
from r1jax.evaluation.voting import (
    Comparator,
    PooledEquivalence,
    Vote,
    compare_in_process,
    majority_vote,
    vote_pairs,
)

__all__ = [
    "ANSWER_KEYS",
    "CORRECT_REWARD",
    "MATH_ANSWERS",
    "AnswerKey",
    "CodeAnswers",
    "Comparator",
    "CountdownAnswers",
    "EvalConfig",
    "ExactMatchAnswers",
    "JudgedSample",
    "MathAnswers",
    "PooledEquivalence",
    "QuestionResult",
    "RejectionConfig",
    "Vote",
    "answer_key_for",
    "compare_in_process",
    "evaluate",
    "is_correct",
    "majority_vote",
    "normalize_program",
    "pass_at_1",
    "pass_at_k",
    "question_results",
    "rejection_reason",
    "rejection_sample",
    "sample_and_judge",
    "sampling_plan",
    "select",
    "summarize",
    "vote_pairs",
]
