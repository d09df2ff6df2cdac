"""maj@k over each task's own answers: keys, candidate verdicts, ties, order and time limits."""

import dataclasses
import itertools
import random
import time

import pytest

from r1jax.evaluation.answer_keys import (
    CodeAnswers,
    CountdownAnswers,
    ExactMatchAnswers,
    MathAnswers,
    answer_key_for,
    normalize_program,
)
from r1jax.evaluation.metrics import QuestionResult, summarize
from r1jax.evaluation.voting import (
    PooledEquivalence,
    Vote,
    compare_in_process,
    majority_vote,
    vote_pairs,
)
from r1jax.rewards import countdown_score

F, T = False, True
COUNTDOWN = CountdownAnswers()
NUMBERS_3_4 = {"numbers": [3, 4], "target": 7}


def countdown_verdicts(answers, numbers, target):
    return [
        a is not None and countdown_score(f"<answer>{a}</answer>", numbers, target) == 1.0
        for a in answers
    ]


def test_countdown_votes_over_values_not_math_equivalence():
    # "7" does not use the numbers 3 and 4: an invalid answer, its own (wrong) candidate, even
    # though 3 + 4 = 7. The two "3+4" are the winning candidate (2 votes), judged correct.
    for answers, correct in [(["7", "3+4", "3+4"], [F, T, T]), (["3+4", "3+4", "7"], [T, T, F])]:
        vote = majority_vote(answers, correct, answer_key=COUNTDOWN, example=NUMBERS_3_4)
        assert vote == Vote(answer="3+4", votes=2, correct=True, score=1.0, tied=1)


def test_countdown_keys_follow_the_countdown_reward():
    key = lambda a: COUNTDOWN.key(a, NUMBERS_3_4)  # noqa: E731
    assert key("3+4") == key("4 + 3") == key("(3)+4") == key("$3 + 4 = 7$")
    assert key("3*4") != key("3+4")
    assert key("3+4=8") == ("text", "3+4=8")  # a false stated result: invalid
    assert key("7") == ("text", "7") and key("7 ") == key("  7")
    with pytest.raises(ValueError, match="numbers"):
        COUNTDOWN.key("3+4", {})


def test_countdown_invalid_answers_can_win_and_lose_the_vote():
    answers = ["7", "7", "3+4", "4+3", "7", "3*4"]
    correct = countdown_verdicts(answers, [3, 4], 7)
    assert correct == [F, F, T, T, F, F]
    vote = majority_vote(answers, correct, answer_key=COUNTDOWN, example=NUMBERS_3_4)
    assert (vote.answer, vote.votes, vote.correct) == ("7", 3, False)
    answers[0] = "4+3"
    correct = countdown_verdicts(answers, [3, 4], 7)
    vote = majority_vote(answers, correct, answer_key=COUNTDOWN, example=NUMBERS_3_4)
    assert (vote.answer, vote.votes, vote.correct) == ("4+3", 3, True)


def test_math_groups_equivalent_answers_and_judges_the_candidate_by_its_members():
    # Math equivalence merges "7" and "3+4"; the candidate is correct because most of its
    # members are, not because of whichever sample came first.
    key = MathAnswers(equivalence=lambda a, b: {a, b} == {"7", "3+4"})
    compare = compare_in_process(key.equivalent)
    for answers, correct in [(["7", "3+4", "3+4"], [F, T, T]), (["3+4", "7", "3+4"], [T, F, T])]:
        vote = majority_vote(answers, correct, answer_key=key, compare=compare)
        assert (vote.votes, vote.correct, vote.answer) == (3, True, "3+4")


def test_a_split_candidate_is_wrong():
    vote = majority_vote(["1/2", "0.5", "3"], [T, F, F])
    assert vote.votes == 2 and not vote.correct and vote.score == 0.0
    vote = majority_vote(["1/2", "0.5", "\\frac12", "3"], [T, F, T, F])
    assert vote.votes == 3 and vote.correct


def test_plain_numbers_never_ask_the_engine():
    asked = []
    key = MathAnswers(equivalence=lambda a, b: asked.append((a, b)) or False)
    vote = majority_vote(
        ["1/2", "0.5", "2", "-3", "x = 2"],
        [F] * 5,
        answer_key=key,
        compare=compare_in_process(key.equivalent),
    )
    assert vote.votes == 2 and vote.tied == 2 and asked == []
    assert vote_pairs(["", "$ $", "\\pi"]) == []
    assert vote_pairs(["1/2", "\\sqrt{2}", "2"]) == [("1/2", "\\sqrt{2}"), ("2", "\\sqrt{2}")]


def test_ties_are_scored_by_the_share_of_correct_candidates():
    vote = majority_vote(["a", "b", "c", "a", "b", "c"], [T, F, F, T, F, F], **exact())
    assert (vote.tied, vote.votes, vote.score, vote.correct) == (3, 2, pytest.approx(1 / 3), F)
    vote = majority_vote(["a", "b"], [T, T], **exact())
    assert (vote.tied, vote.score, vote.correct, vote.answer) == (2, 1.0, True, "a")


def test_none_answers_cast_no_vote():
    vote = majority_vote([None, "b", None, None], [F, T, F, F], **exact())
    assert vote == Vote(answer="b", votes=1, correct=True, score=1.0, tied=1)
    assert majority_vote([None], [T], **exact()) == Vote(None, 0, False, 0.0, 0)
    assert majority_vote([], [], **exact()) == Vote(None, 0, False, 0.0, 0)


def exact(**options):
    return {"answer_key": ExactMatchAnswers(**options)}


def test_exact_match_collapses_whitespace_and_optionally_case():
    answers = ["New  York", "new york", " New York ", "Boston"]
    vote = majority_vote(answers, [T, F, T, F], **exact())
    assert (vote.answer, vote.votes) == ("New  York", 2)
    vote = majority_vote(answers, [T, T, T, F], **exact(ignore_case=True))
    assert vote.votes == 3 and vote.correct


def test_code_votes_over_programs_with_formatting_and_comments_dropped():
    key = CodeAnswers()
    a = "```python\ndef f(x):\n    return x+1  # add one\n```"
    b = "<think>hm</think>\n```python\ndef f( x ):\n\n    return (x + 1)\n```"
    c = "```python\ndef f(x):\n    return 1 + x\n```"
    answers = [key.extract(t) for t in (a, b, c)]
    assert key.key(answers[0], {}) == key.key(answers[1], {}) != key.key(answers[2], {})
    vote = majority_vote(answers, [T, T, F], answer_key=key)
    assert vote.votes == 2 and vote.correct
    assert normalize_program("def (:\n  x   =  1") == "def (:\nx = 1"  # no parse: text
    assert normalize_program("1+" * 10_000 + "1").startswith("1+1+")  # too deep: text


def test_answer_keys_by_correctness_reward():
    assert isinstance(answer_key_for("accuracy"), MathAnswers)
    assert isinstance(answer_key_for("countdown"), CountdownAnswers)
    assert isinstance(answer_key_for("code"), CodeAnswers)
    assert isinstance(answer_key_for("exact_match"), ExactMatchAnswers)
    assert isinstance(answer_key_for("language"), ExactMatchAnswers)


@dataclasses.dataclass(frozen=True)
class NearbyIntegers:
    """Test key: integers, and two within 1 of each other are equivalent (not transitive)."""

    def extract(self, completion):
        return completion

    def key(self, answer, example):
        return int(answer)

    def may_match(self, a, b):
        return True

    def equivalent(self, a, b):
        return abs(int(a) - int(b)) <= 1


def assert_order_invariant(answers, correct, **kwargs):
    expected = majority_vote(answers, correct, **kwargs)
    for order in itertools.permutations(range(len(answers))):
        got = majority_vote([answers[i] for i in order], [correct[i] for i in order], **kwargs)
        assert got == expected, (answers, correct, order)
    return expected


def test_votes_do_not_depend_on_sample_order():
    rng = random.Random(0)
    key = NearbyIntegers()
    for _ in range(15):
        n = rng.randint(1, 6)
        answers = [rng.choice(["1", "2", "3", "5", "6", "9", None]) for _ in range(n)]
        correct = [rng.random() < 0.5 for _ in range(n)]
        assert_order_invariant(
            answers, correct, answer_key=key, compare=compare_in_process(key.equivalent)
        )
    # 1 ~ 2 ~ 3 chain into one candidate (3 votes) however the samples come.
    vote = assert_order_invariant(
        ["1", "3", "2", "9", "9"],
        [T, T, F, F, F],
        answer_key=key,
        compare=compare_in_process(key.equivalent),
    )
    assert (vote.votes, vote.correct, vote.answer) == (3, True, "1")
    answers = ["7", "3+4", "4+3", "3*4", "3*4", None]
    correct = countdown_verdicts(answers, [3, 4], 7)
    vote = assert_order_invariant(answers, correct, answer_key=COUNTDOWN, example=NUMBERS_3_4)
    assert (vote.tied, vote.score) == (2, 0.5)  # {3+4, 4+3} vs {3*4, 3*4}
    answers = ["1/2", "0.5", "2", "2.0", "x=3", "3", "y = 3"]
    assert_order_invariant(answers[:6], [T, T, F, F, F, F])


def hang_on_marker(a, b):
    """Equivalence that never returns when either answer is HANG (a C-level blow-up stand-in)."""
    if "HANG" in (a, b):
        while True:
            time.sleep(1)
    return a == b


def test_a_pathological_answer_cannot_hang_the_vote():
    key = MathAnswers(equivalence=hang_on_marker)
    start = time.monotonic()
    with PooledEquivalence(key.equivalent, timeout=0.5, num_workers=1) as compare:
        vote = majority_vote(
            ["\\sqrt{2}", "HANG", "HANG", "\\sqrt{2}", "\\sqrt{2}"],
            [T, F, F, T, T],
            answer_key=key,
            compare=compare,
        )
    assert time.monotonic() - start < 15
    assert compare.timeouts == 1  # the pair counts as two different answers
    assert (vote.answer, vote.votes, vote.correct) == ("\\sqrt{2}", 3, True)


def slow_warm_up():
    time.sleep(1.5)


def equal_strings(a, b):
    return a == b


def test_workers_warm_up_outside_the_pair_limit():
    # Loading the engine must not eat a pair's limit: each worker warms up once, first.
    with PooledEquivalence(equal_strings, timeout=1.0, warm_up=slow_warm_up) as compare:
        assert compare([("a", "a"), ("a", "b"), ("b", "b")] * 2) == [T, F, T] * 2
        assert compare.timeouts == 0 and compare.errors == 0


def test_a_pooled_equivalence_must_be_picklable():
    with pytest.raises(TypeError, match="picklable"):
        PooledEquivalence(lambda a, b: a == b)
    PooledEquivalence(lambda a, b: a == b, num_workers=0).close()  # inline: anything goes


def test_default_math_vote_runs_the_engine_out_of_process():
    answers = ["\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", "1", "2^{2^{2^{2^{100}}}}"]
    start = time.monotonic()
    vote = majority_vote(answers, [T, T, F, F])
    assert time.monotonic() - start < 60
    assert vote.votes == 2 and vote.correct and vote.answer == "\\sqrt{3}/2"


def test_summarize_asks_every_pair_once_in_one_batch():
    batches = []
    key = NearbyIntegers()

    def compare(pairs):
        batches.append(list(pairs))
        return [key.equivalent(a, b) for a, b in pairs]

    results = [
        QuestionResult((T, T, F, F), ("1", "2", "5", "5"), (T,) * 4, (1,) * 4),
        QuestionResult((F, F, T, T), ("9", "9", "1", "2"), (T,) * 4, (1,) * 4),
    ]
    s = summarize(results, ks=(1, 2, 4), answer_key=key, compare=compare)
    assert len(batches) == 1 and len(batches[0]) == len(set(batches[0])) == 5
    # maj@2: q1 {1, 2} one candidate, correct; q2 "9" twice, wrong. maj@4: a tie in q1 (1~2 vs
    # 5, 5), then q2 {9, 9} vs {1, 2}: both ties of a correct and a wrong candidate.
    assert (s["maj@1"], s["maj@2"], s["maj@4"]) == (0.5, 0.5, 0.5)


def test_summarize_reads_each_questions_fields_for_countdown():
    results = [
        QuestionResult((F, T, T), ("7", "3+4", "4+3"), (T,) * 3, (1,) * 3, NUMBERS_3_4),
        QuestionResult((F, F, T), ("7", "7", "3+4"), (T,) * 3, (1,) * 3, NUMBERS_3_4),
    ]
    assert summarize(results, ks=(3,), answer_key=COUNTDOWN)["maj@3"] == 0.5


def test_question_results_vote_on_the_tasks_answers():
    from r1jax.evaluation.judge import JudgedSample, question_results

    def sample(i, completion, correct):
        fields = {"numbers": [3, 4], "target": 7, "tests": []}
        return JudgedSample(0, i, "p", completion, None, correct, T, 5, "stop", fields)

    samples = [sample(0, "```python\nprint(1)\n```", T), sample(1, "```\nprint( 1 )\n```", T)]
    (result,) = question_results(samples, 2, CodeAnswers())
    assert result.answers == ("print(1)\n", "print( 1 )\n") and result.example["target"] == 7
    assert majority_vote(result.answers, result.correct, answer_key=CodeAnswers()).votes == 2
    (plain,) = question_results(samples, 2)
    assert plain.answers == (None, None)


def test_answers_that_normalise_to_nothing_cast_no_vote():
    vote = majority_vote(["$ $", "\\text{}", "7"], [F, F, T])  # both keyed "": they won 2-1
    assert (vote.answer, vote.votes, vote.correct) == ("7", 1, True)


def test_a_percentage_does_not_chain_a_number_and_its_hundredth_into_one_candidate():
    """The reward reads 50\\% as 0.5 or 50; voting reads it as 0.5 only, so one 50\\% could
    not join 50 and 0.5 (never equivalent to each other) into a 5-vote candidate."""
    answers = ["3"] * 4 + ["0.5"] * 2 + ["50"] * 2 + ["50\\%"]
    vote = majority_vote(answers, [T] * 4 + [F] * 5)
    assert (vote.answer, vote.votes, vote.correct) == ("3", 4, True)
