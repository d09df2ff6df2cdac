"""Built-in tasks: determinism, knobs, and every answer checked by an independent solver."""

from __future__ import annotations

import ast
import itertools
import re
from fractions import Fraction

import pytest

from r1jax.data import (
    ArithmeticTask,
    CountdownTask,
    TaskDataset,
    get_task,
    iter_examples,
    task_names,
)

N = 300


def eval_int_expression(text: str) -> int:
    """Python's own evaluation of a + - * expression (ints only)."""
    tree = ast.parse(text, mode="eval")
    allowed = (ast.Expression, ast.BinOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.UnaryOp)
    assert all(isinstance(n, (*allowed, ast.USub)) for n in ast.walk(tree)), text
    return eval(compile(tree, "<expr>", "eval"))


def eval_countdown(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of a + - * / expression and the numbers it uses."""
    used = []

    def ev(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            used.append(node.value)
            return Fraction(node.value)
        assert isinstance(node, ast.BinOp), ast.dump(node)
        a, b = ev(node.left), ev(node.right)
        ops = {ast.Add: a + b, ast.Sub: a - b, ast.Mult: a * b}
        if isinstance(node.op, ast.Div):
            return a / b
        return ops[type(node.op)]

    return ev(ast.parse(expression, mode="eval").body), used


def reachable(numbers: list[int]) -> set[Fraction]:
    """Every value reachable with each number exactly once (brute-force search)."""
    if len(numbers) == 1:
        return {Fraction(numbers[0])}
    out = set()
    for r in range(1, len(numbers)):
        for left_idx in itertools.combinations(range(len(numbers)), r):
            left = [numbers[i] for i in left_idx]
            right = [numbers[i] for i in range(len(numbers)) if i not in left_idx]
            for a in reachable(left):
                for b in reachable(right):
                    out |= {a + b, a - b, a * b}
                    if b:
                        out.add(a / b)
    return out


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_same_seed_same_data_and_seeds_differ(name):
    task = get_task(name)
    a = list(itertools.islice(iter_examples(task, seed=3), 50))
    b = [task.example(i, seed=3) for i in range(50)]
    assert a == b
    c = [task.example(i, seed=4) for i in range(50)]
    assert sum(x["prompt"] != y["prompt"] for x, y in zip(a, c, strict=True)) > 40
    assert len({x["prompt"] for x in a}) > 40  # not a constant stream
    far = task.example(10**12, seed=3)  # infinite: any index works
    assert far["task"] == name and far["prompt"]


def test_arithmetic_answers_and_every_cot_step_are_correct():
    task = ArithmeticTask()
    for i in range(N):
        ex = task.example(i)
        expression = ex["prompt"].removeprefix("Compute ")
        assert int(ex["answer"]) == eval_int_expression(expression)
        steps = re.findall(r"(-?\d+) ([+\-*]) (\d+) = (-?\d+)\.", ex["gold_cot"])
        assert len(steps) == expression.count(" ") // 2  # one step per operator
        for a, op, b, c in steps:
            assert eval_int_expression(f"({a}) {op} {b}") == int(c)
        assert steps[-1][3] == ex["answer"]
        assert len(ex["gold_cot"]) < 300
    assert task.rewards == ("accuracy", "format")


def test_arithmetic_knobs():
    hard = ArithmeticTask(min_operands=5, max_operands=5, max_digits=3, ops="*")
    for i in range(50):
        ex = hard.example(i)
        nums = [int(x) for x in re.findall(r"\d+", ex["prompt"])]
        assert len(nums) == 5 and max(nums) < 1000 and "+" not in ex["prompt"]
        assert int(ex["answer"]) == eval_int_expression(ex["expression"])
    with pytest.raises(ValueError):
        ArithmeticTask(min_operands=1)
    with pytest.raises(ValueError):
        ArithmeticTask(ops="/")


def test_arithmetic_hasty_examples_have_no_working_and_a_guess_that_ignores_the_question():
    clean, mixed = ArithmeticTask(), ArithmeticTask(hasty_rate=0.4)  # max_digits 2
    hasty, guesses, right = 0, set(), 0
    for i in range(N):
        ex, gold = mixed.example(i), clean.example(i)
        assert ex["prompt"] == gold["prompt"]  # same questions as the clean stream
        if ex["hasty"]:
            hasty += 1
            assert ex["gold_cot"] == ""
            guesses.add(int(ex["answer"]))
            right += int(ex["answer"]) == eval_int_expression(ex["expression"])
        else:
            assert ex["answer"] == gold["answer"] and ex["gold_cot"] == gold["gold_cot"]
    assert 0.25 * N < hasty < 0.55 * N
    assert min(guesses) >= -100 and max(guesses) <= 200 and len(guesses) > 0.5 * hasty
    assert right < 0.1 * hasty
    assert "hasty" not in clean.example(0)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="hasty_rate"):
            ArithmeticTask(hasty_rate=bad)


@pytest.mark.parametrize("num_numbers", [3, 4])
def test_countdown_gold_answers_are_verified_by_search(num_numbers):
    task = CountdownTask(num_numbers=num_numbers)
    for i in range(N if num_numbers == 3 else 40):
        ex = task.example(i)
        numbers, target = ex["numbers"], ex["target"]
        assert len(numbers) == num_numbers and 1 <= target <= 100
        assert all(1 <= n <= 99 for n in numbers)
        assert f"[{', '.join(map(str, numbers))}]" in ex["prompt"] and str(target) in ex["prompt"]
        value, used = eval_countdown(ex["answer"])
        assert value == target and sorted(used) == sorted(numbers)
        assert Fraction(target) in reachable(numbers)
        for a, op, b, c in re.findall(r"(\d+) ([+\-*/]) (\d+) = (\d+)\.", ex["gold_cot"]):
            assert eval_countdown(f"{a} {op} {b}")[0] == int(c)
        assert len(ex["gold_cot"]) < 300
    assert task.rewards == ("countdown", "format")


def test_registry_and_task_dataset():
    assert {"arithmetic", "countdown"} <= set(task_names())
    assert get_task("countdown", num_numbers=4) == CountdownTask(num_numbers=4)
    with pytest.raises(KeyError, match="unknown task"):
        get_task("sudoku")
    ds = TaskDataset(get_task("arithmetic"), seed=5)
    assert ds[7]["prompt"] == get_task("arithmetic").example(7, seed=5)["prompt"]
    assert ds[7]["_origin"] == "task:arithmetic/5#7"
    finite = TaskDataset(get_task("arithmetic"), seed=5, num_examples=10)
    assert len(finite) == 10 and finite[12]["prompt"] == finite[2]["prompt"]


def test_gold_completions_get_full_reward_from_the_rewards_package():
    """Cross-check with the rewards package: every gold completion earns full reward."""
    from r1jax.data import format_completion, format_r1_zero
    from r1jax.rewards import get_reward as get

    for task in (ArithmeticTask(), CountdownTask()):
        exs = [task.example(i) for i in range(20)]
        prompts = [format_r1_zero(e["prompt"]) for e in exs]
        completions = [format_completion(e["gold_cot"], e["answer"]) for e in exs]
        fields = {k: [e.get(k) for e in exs] for k in exs[0]}
        for name in task.rewards:
            assert get(name)(prompts, completions, **fields) == [1.0] * 20, name


def test_arithmetic_in_chinese_and_mixed_asks_the_same_questions_in_its_language():
    """zh: Chinese prompt and working, fully consistent as zh, the gold answer still earns the
    accuracy reward; mixed: both languages, each example tagged; en is unchanged."""
    from r1jax.data import format_completion, format_r1_zero
    from r1jax.rewards import get_reward, language_consistency

    en, zh, mixed = (ArithmeticTask(language=x) for x in ("en", "zh", "mixed"))
    for i in range(40):
        e, z, m = en.example(i), zh.example(i), mixed.example(i)
        assert "language" not in e and z["language"] == "zh" and m["language"] in ("en", "zh")
        assert z["expression"] == e["expression"] and z["answer"] == e["answer"]
        assert z["prompt"] == f"计算 {e['expression']}"
        assert language_consistency(z["gold_cot"], "zh") == 1.0
        assert re.findall(r"-?\d+", z["gold_cot"]) == re.findall(r"-?\d+", e["gold_cot"])
        assert m == (z if m["language"] == "zh" else {**e, "language": "en"})
    assert {mixed.example(i)["language"] for i in range(40)} == {"en", "zh"}
    exs = [zh.example(i) for i in range(10)]
    prompts = [format_r1_zero(x["prompt"], "zh") for x in exs]
    completions = [format_completion(x["gold_cot"], x["answer"]) for x in exs]
    fields = {k: [x.get(k) for x in exs] for k in exs[0]}
    assert get_reward("accuracy")(prompts, completions, **fields) == [1.0] * 10
    assert get_reward("language")(prompts, completions, **fields) == [1.0] * 10
    with pytest.raises(ValueError, match="language must be"):
        ArithmeticTask(language="fr")


def test_reward_route_sets_the_reward_field_without_changing_the_questions():
    from r1jax.data import get_task

    plain = get_task("arithmetic")
    mixed = get_task("arithmetic", reward_route="mixed")
    routes = [mixed.example(i)["reward"] for i in range(200)]
    assert 70 < routes.count("model") < 130 and set(routes) == {"rules", "model"}
    for i in range(20):
        a, b = plain.example(i), mixed.example(i)
        assert "reward" not in a and {k: v for k, v in b.items() if k != "reward"} == a
    assert get_task("arithmetic", reward_route="model").example(3)["reward"] == "model"
    with pytest.raises(ValueError, match="reward_route"):
        get_task("arithmetic", reward_route="judge")
