"""Answer checking on a regression corpus: public graders' test suites plus known reward hacks.

`answer_corpus.jsonl` holds one case a line: ``source`` (repository and path it comes from),
``gold`` (the reference answer), ``completion`` (what the policy wrote), ``expected`` (the verdict
from mathematics and the boxed-answer rules, not from any grader's output) and an optional
``note``. Sources: huggingface/Math-Verify tests, MARIO_EVAL's ``test_is_equiv.py``, Qwen2.5-Math's
grader tests, hendrycks/math ``math_equivalence_test.py``, rules of openai/prm800k's grader, and
hacks reported against RL graders (boxes in the thinking, hedges, tautologies, lookalike boxes
and tags, explosive inputs).

Every case is scored by `AccuracyReward` once (about 10 s on two busy cores); the tests then
assert no wrong answer is paid, at least 98% of verdicts are right, and every check, the hard
limit of the equivalence engine included, returns within 1 s of wall time.
"""

import collections
import json
import pathlib
import time

import pytest

from r1jax.rewards import AccuracyReward, hard_limit

CORPUS = pathlib.Path(__file__).with_name("answer_corpus.jsonl")
UPSTREAM = (
    "huggingface/Math-Verify",
    "MARIO-Math-Reasoning/MARIO_EVAL",
    "QwenLM/Qwen2.5-Math",
    "hendrycks/math",
    "openai/prm800k",
)


def load_corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def scored():
    assert hard_limit.warm_up(), "the hard-limit worker did not start"
    reward = AccuracyReward()
    out = []
    for row in load_corpus():
        start = time.monotonic()
        score = reward.score(row["completion"], row["gold"])
        out.append((row, score == 1.0, time.monotonic() - start))
    return out


def describe(row: dict, seconds: float | None = None) -> str:
    took = "" if seconds is None else f" ({seconds:.2f} s)"
    return f"{row['source']}: {row['gold']!r} vs {row['completion'][-120:]!r}{took}"


def test_corpus_is_well_formed():
    rows = load_corpus()
    assert len(rows) >= 300
    for row in rows:
        assert set(row) <= {"source", "gold", "completion", "expected", "note"}
        assert row["source"] and row["gold"] and isinstance(row["expected"], bool)
    counts = collections.Counter(src for row in rows for src in UPSTREAM if src in row["source"])
    assert set(counts) == set(UPSTREAM), counts


def test_no_wrong_answer_is_paid(scored):
    paid_wrong = [describe(row) for row, paid, _ in scored if paid and not row["expected"]]
    assert not paid_wrong, "\n".join(paid_wrong)


def test_at_least_98_percent_of_verdicts_are_right(scored):
    wrong = [describe(row) for row, paid, _ in scored if paid != row["expected"]]
    assert 1 - len(wrong) / len(scored) >= 0.98, "\n".join(wrong)


def test_every_check_returns_within_one_second(scored):
    slow = [describe(row, s) for row, _, s in scored if s >= 1.0]
    assert not slow, "\n".join(slow)
