"""Code reward: test-case schema, judging, and the reward hacks the harness must not pay."""

import json

import pytest

from r1jax.rewards import CodeReward, extract_program, parse_tests
from r1jax.rewards.code import AssertCase, StdioCase

REWARD = CodeReward(wall_time=1.5, cpu_time=1, memory_mb=256, parallel=4)
ADD_TESTS = {
    "asserts": [
        "assert add(1, 2) == 3",
        "assert add(-1, 1) == 0",
        "assert add('a', 'b') == 'ab'",
        "assert math.isclose(add(0.1, 0.2), 0.3)",
        "assert all(add(i, i) == 2 * i for i in range(3))",
        "assert add(1, 1) in {2, 3}",
    ],
    "setup": "import math",
}


def _fenced(program: str) -> str:
    return f"<think>t</think><answer>\n```python\n{program}\n```\n</answer>"


def test_schema_variants():
    assert parse_tests([{"stdin": "1", "stdout": "2"}]) == [StdioCase("1", "2")]
    assert parse_tests({"inputs": ["1"], "outputs": ["2"]}) == [StdioCase("1", "2")]
    assert parse_tests(json.dumps({"inputs": ["1"], "outputs": ["2"]})) == [StdioCase("1", "2")]
    assert parse_tests("import math\nassert f(1) == 2\nassert f(2) == 3") == [
        AssertCase("assert f(1) == 2", "import math"),
        AssertCase("assert f(2) == 3", "import math"),
    ]
    assert parse_tests([{"assert": "assert f(1) == 2"}]) == [AssertCase("assert f(1) == 2")]
    with pytest.raises(ValueError, match="unrecognised"):
        parse_tests([42])


def test_program_extraction():
    assert extract_program(_fenced("x = 1")) == "x = 1\n"
    assert extract_program("<think>```python\nx = 1\n```</think> nothing") is None
    assert extract_program("```py\nx = 1\n```\nthen\n```python\nx = 2\n```") == "x = 2\n"
    assert extract_program("<think>t</think><answer>x = 3</answer>") == "x = 3"


def test_stdin_stdout_fraction_passed():
    program = "a, b = map(int, input().split())\nprint(a + b)"
    tests = [
        {"stdin": "1 2\n", "stdout": "3\n"},
        {"stdin": "5 5", "stdout": "10   \n\n"},  # trailing whitespace is not significant
        {"stdin": "1 1", "stdout": "3"},
    ]
    assert REWARD.score(_fenced(program), tests) == pytest.approx(2 / 3)


def test_assert_style_correct_and_partly_wrong_programs():
    assert REWARD.score(_fenced("def add(a, b):\n    return a + b"), ADD_TESTS) == 1.0
    assert REWARD.score(_fenced("def add(a, b):\n    return a * b"), ADD_TESTS) == 0.0
    half = "def add(a, b):\n    return a + b if isinstance(a, int) else None"
    assert REWARD.score(_fenced(half), ADD_TESTS) == pytest.approx(4 / 6)


HACKS = {
    "sys.exit(0) before the tests": "import sys\nsys.exit(0)",
    "os._exit(0) before the tests": "import os\nos._exit(0)",
    "fake success message": "print('All tests passed')\nraise SystemExit(0)",
    "__eq__ always true": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n"
        "    def __bool__(self):\n        return True\n"
        "def add(a, b):\n    return Yes()"
    ),
    "int subclass with a lying __eq__": (
        "class I(int):\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return I(0)"
    ),
    "monkeypatched math.isclose and builtins": (
        "import math, builtins\nmath.isclose = lambda *a, **k: True\n"
        "builtins.all = lambda x: True\ndef add(a, b):\n    return -7"
    ),
    "writes a conftest.py": (
        "open('conftest.py', 'w').write('import pytest\\n')\ndef add(a, b):\n    return -7"
    ),
    "reads expected values from disk": (
        "import glob\nseen = [open(p).read() for p in glob.glob('/tmp/**', recursive=True)[:50]\n"
        "        if p.endswith('.json')]\ndef add(a, b):\n    return -7"
    ),
    # The assertion that binds its own names (all(add(i, i) == 2 * i for i in range(3))) runs
    # next to the program; these passed it before the judge replayed the recorded values.
    "builtins.int made a class equal to everything": (
        "import builtins\nclass X:\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = object.__hash__\nbuiltins.int = X\ndef add(a, b):\n    return X()"
    ),
    "the runner's encoder patched": (
        "import sys\nclass X:\n    def __eq__(self, o):\n        return True\n"
        "    __hash__ = object.__hash__\nm = sys.modules['__main__']\n"
        "m._enc = lambda x, depth=0: ['b', True]\ndef add(a, b):\n    return X()"
    ),
    "writes a verdict to the runner's output descriptor": (
        "import os\nfor fd in range(3, 16):\n    try:\n"
        '        os.write(fd, b\'[[["b", true]], [["b", true]]]\')\n'
        "    except OSError:\n        pass\nos._exit(0)"
    ),
    "atexit prints a result": (
        'import atexit, os\natexit.register(lambda: os.write(1, b\'[["i", "3"]]\'))\n'
        "def add(a, b):\n    return -7"
    ),
}


@pytest.mark.parametrize("program", HACKS.values(), ids=HACKS.keys())
def test_reward_hacks_score_zero(program):
    assert REWARD.score(_fenced(program), ADD_TESTS) == 0.0


def test_stdout_hack_cannot_fake_a_stdin_stdout_case():
    program = "import sys\nprint('3')\nsys.exit(0)"  # right output, but reads nothing
    tests = [{"stdin": "1 2", "stdout": "3"}, {"stdin": "2 2", "stdout": "4"}]
    assert REWARD.score(_fenced(program), tests) == 0.5  # only the lucky case


def test_no_program_or_no_tests_scores_zero():
    assert REWARD.score("no code", ADD_TESTS) == 0.0
    assert REWARD.score(_fenced("x = 1"), []) == 0.0


def test_batched_call_needs_tests_field():
    assert REWARD(["q"], [_fenced("print(1)")], tests=[[{"stdin": "", "stdout": "1"}]]) == [1.0]
    with pytest.raises(ValueError, match="tests"):
        REWARD(["q"], ["x"])


def test_the_code_rewards_ast_parsing_is_serialised_across_its_threads():
    """Cases are judged on a thread pool; CPython 3.11's `ast.parse` is not thread-safe."""
    import inspect

    from r1jax.rewards import code, code_asserts

    for module in (code, code_asserts):
        source = inspect.getsource(module).replace("return ast.parse(source, mode=mode)", "")
        assert "ast.parse(" not in source, module.__name__
    assert code_asserts.parse("assert f(1) == 2").body[0].test.left.func.id == "f"
