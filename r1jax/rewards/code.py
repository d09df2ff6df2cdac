"""The code reward: the fraction of test cases a generated Python program passes.

Test-case schema (the example field ``tests``; a JSON string of any of these is accepted too):

- a list of cases, each either ``{"stdin": "1 2\\n", "stdout": "3\\n"}`` (the program reads
  stdin and must print the expected output) or ``{"assert": "assert add(1, 2) == 3"}``;
- ``{"inputs": [...], "outputs": [...]}`` (APPS / CodeContests style: stdin/stdout pairs);
- ``{"asserts": [...] or "one assert per line", "setup": "import math"}`` (MBPP style
  ``test_list`` / ``test_setup_code``); a list case may also carry its own ``"setup"``;
- a plain string of assert statements (top-level non-assert statements become the setup).

Judging: stdout is compared in the parent after stripping trailing whitespace on each line and
trailing blank lines, and the program must exit with status 0 within the limits. Assert cases
are judged as described in `r1jax.rewards.code_asserts`. Every run is sandboxed
(`r1jax.rewards.sandbox`); cases run in parallel, each with its own time limit. The reward
refuses to start (`SandboxUnavailable`, saying what is missing and how to enable it) where the
sandbox cannot isolate programs, unless ``allow_unsandboxed=True``: then programs run with only
resource limits, which is safe only for trusted code.

The program is the last fenced code block (```python or ```) of the final answer (after
``</think>``; inside ``<answer>`` when there is one), else the answer block's text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from r1jax.rewards import code_asserts as ca
from r1jax.rewards import incidents
from r1jax.rewards.extract import answer_blocks, final_region
from r1jax.rewards.sandbox import SandboxLimits, check_sandbox, run_python

_FENCE_RE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class StdioCase:
    stdin: str
    stdout: str


@dataclasses.dataclass(frozen=True)
class AssertCase:
    statement: str
    setup: str = ""


TestCase = StdioCase | AssertCase


def _split_assert_script(script: str, setup: str = "") -> list[AssertCase]:
    import ast

    module = ca.parse(script)
    setup_lines = [setup] if setup else []
    asserts = []
    for node in module.body:
        if isinstance(node, ast.Assert):
            asserts.append(ast.unparse(node))
        else:
            setup_lines.append(ast.unparse(node))
    return [AssertCase(a, "\n".join(setup_lines)) for a in asserts]


def parse_tests(tests) -> list[TestCase]:
    """Normalises the ``tests`` field (see the module docstring) into a list of cases."""
    if isinstance(tests, str) and tests.lstrip()[:1] in ("[", "{"):
        try:
            tests = json.loads(tests)
        except ValueError:
            pass
    if isinstance(tests, str):
        return _split_assert_script(tests)
    if isinstance(tests, dict):
        if "inputs" in tests and "outputs" in tests:
            inputs, outputs = tests["inputs"], tests["outputs"]
            if len(inputs) != len(outputs):
                raise ValueError("code tests: `inputs` and `outputs` differ in length")
            return [StdioCase(str(i), str(o)) for i, o in zip(inputs, outputs, strict=True)]
        if "asserts" in tests:
            asserts = tests["asserts"]
            script = asserts if isinstance(asserts, str) else "\n".join(asserts)
            return _split_assert_script(script, tests.get("setup", ""))
    if isinstance(tests, Sequence):
        cases: list[TestCase] = []
        for case in tests:
            if isinstance(case, dict) and "stdin" in case and "stdout" in case:
                cases.append(StdioCase(str(case["stdin"]), str(case["stdout"])))
            elif isinstance(case, dict) and "assert" in case:
                cases.extend(_split_assert_script(case["assert"], case.get("setup", "")))
            elif isinstance(case, str):
                cases.extend(_split_assert_script(case))
            else:
                raise ValueError(f"code tests: unrecognised case {str(case)[:80]!r}")
        return cases
    raise ValueError(f"code tests: unrecognised schema {type(tests).__name__}")


def extract_program(completion: str) -> str | None:
    """The program in the final answer (see the module docstring), or None."""
    region = final_region(completion)
    if region is None:
        return None
    answers = answer_blocks(region)
    if len(answers) > 1:
        return None
    text = answers[0] if answers else region
    blocks = _FENCE_RE.findall(text)
    if blocks:
        return blocks[-1]
    return text.strip() if answers and text.strip() else None


def _normalise_output(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


@dataclasses.dataclass(frozen=True)
class CodeReward:
    """Fraction of ``tests`` passed by the program in the completion (registry name ``"code"``).

    Limits apply per run; `parallel` runs go at once. Worst-case time per item is about
    ``ceil(cases / parallel) * wall_time`` plus one judge run; keep the pool's item time-out above.
    ``allow_unsandboxed``: run without isolation where the sandbox has none (module docstring).
    """

    wall_time: float = 2.0
    cpu_time: int = 2
    memory_mb: int = 512
    processes: int = 16
    file_size_mb: int = 4
    parallel: int = 4
    isolate_network: bool = True
    max_cases: int = 64
    allow_unsandboxed: bool = False

    score_range = (0.0, 1.0)  # every score it gives lies here

    def __post_init__(self):
        check_sandbox(self.limits)  # Refuse to start, not fail on the first completion.

    @property
    def limits(self) -> SandboxLimits:
        return SandboxLimits(
            wall_time=self.wall_time,
            cpu_time=self.cpu_time,
            memory=self.memory_mb * 2**20,
            processes=self.processes,
            file_size=self.file_size_mb * 2**20,
            isolate_network=self.isolate_network,
            allow_unsandboxed=self.allow_unsandboxed,
        )

    def _stdio(self, program: str, case: StdioCase) -> bool:
        result = run_python(program, case.stdin.encode("utf-8"), self.limits)
        if result.timed_out:
            incidents.record("code_timeout")
        if result.timed_out or result.returncode != 0:
            return False
        got = result.stdout.decode("utf-8", errors="replace")
        return _normalise_output(got) == _normalise_output(case.stdout)

    def _stage1(self, program: str, case: AssertCase, names: set[str]):
        """(split, values) of one assert case, or None when the program side failed."""
        test_names = (
            ca._BUILTIN_NAMES | ca.defined_names(case.setup) | ca.imported_names(case.setup)
        )
        split = ca.split_assert(case.statement, names - test_names, test_names)
        if not split.parts:
            return split, []
        source = ca.runner_source(case.setup, program, split.parts)
        result = run_python(source, b"", self.limits)
        if result.timed_out:
            incidents.record("code_timeout")
        if result.timed_out or result.returncode != 0:
            return None
        try:
            values, records = json.loads(result.stdout.decode("utf-8"))
            values = [ca.decode_value(v) for v in (records if split.inline else values)]
        except (ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, RecursionError):
            return None
        return (split, values) if split.inline or len(values) == len(split.parts) else None

    def _asserts(self, program: str, cases: list[AssertCase], pool) -> list[bool]:
        try:
            names = ca.defined_names(program)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return [False] * len(cases)
        stage1 = list(pool.map(lambda c: self._stage1(program, c, names), cases))
        verdicts: list[bool | None] = [None] * len(cases)
        pending: dict[str, list[tuple[int, str]]] = {}
        for i, found in enumerate(stage1):
            if found is None:
                verdicts[i] = False
                continue
            split, values = found
            source = split.judge_source(values)
            verdicts[i] = ca.judge_locally(source)
            if verdicts[i] is None:
                pending.setdefault(cases[i].setup, []).append((i, source))
        for setup, items in pending.items():
            judged = run_python(ca.judge_source(setup, [s for _, s in items]), b"", self.limits)
            results = ca.parse_judge_output(judged.stdout, len(items))
            for (i, _), ok in zip(items, results, strict=True):
                verdicts[i] = ok
        return [bool(v) for v in verdicts]

    def score(self, completion: str, tests) -> float:
        """Fraction of `tests` passed by the program in `completion`."""
        cases = parse_tests(tests)[: self.max_cases]
        program = extract_program(completion)
        if not cases or program is None:
            return 0.0
        stdio = [c for c in cases if isinstance(c, StdioCase)]
        asserts = [c for c in cases if isinstance(c, AssertCase)]
        with ThreadPoolExecutor(max_workers=max(1, self.parallel)) as pool:
            passed = sum(pool.map(lambda c: self._stdio(program, c), stdio))
            passed += sum(self._asserts(program, asserts, pool))
        return passed / len(cases)

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        tests = fields.get("tests")
        if tests is None:
            raise ValueError("code reward needs the `tests` field (see r1jax.rewards.code)")
        return [self.score(c, t) for c, t in zip(completions, tests, strict=True)]
