"""Assert-style code tests, judged so that the program cannot fake a pass.

A test such as ``assert add(1, 2) == 3`` is split in two. The *program-rooted* parts (the maximal
sub-expressions rooted at a name the program defines, here ``add(1, 2)``) are evaluated in a
sandbox that holds the program; each value must be a plain builtin (``None``, bool, int, float,
str, list, tuple, dict, set, frozenset; checked by exact type, so an object whose ``__eq__`` is
always true is refused) and comes back as tagged JSON. The rest of the assertion, with those
values substituted as literals, is judged by the parent (plain literal comparisons) or by a
second sandbox that never sees the program. The program never sees the expected values, and
``sys.exit(0)``, ``os._exit(0)``, printing "All tests passed" or writing files decide nothing.

When a program-rooted part uses names bound inside the test (a comprehension variable in
``all(f(i) == i * i for i in range(5))``), the whole assertion runs next to the program only to
record, in order, the plain value of each program-rooted call it makes; the judge then
evaluates the assertion without the program, each such call replaced by the next recorded
value, and it must be exactly ``True`` with every value used. A program that patches builtins
or the runner can at most forge the values, never the verdict. The program runs next to the
whole assertion there, so one that inspects its interpreter could read the expected values:
write tests as comparisons where that matters.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import json
import math
import operator
import threading

_BUILTIN_NAMES = frozenset(dir(builtins))
_AST_LOCK = threading.Lock()


def parse(source: str, mode: str = "exec") -> ast.AST:
    """`ast.parse` that is safe to call from several threads at once.

    The code reward judges a completion's test cases on a thread pool, and CPython 3.11 keeps
    the AST converter's recursion depth in state shared by threads (gh-106905): two threads
    parsing at once can fail with "SystemError: AST constructor recursion depth mismatch".
    """
    with _AST_LOCK:
        return ast.parse(source, mode=mode)


# Stage-1 runner: defined before the program runs, so it holds its own references.
_RUNNER = r"""
import json as _json, os as _os
_type, _write, _exit, _str, _hex = type, _os.write, _os._exit, str, float.hex
def _enc(x, depth=0):
    t = _type(x)
    if depth > 64:
        raise ValueError("too deep")
    if x is None:
        return ["n"]
    if t is bool:
        return ["b", x]
    if t is int:
        return ["i", _str(x)]
    if t is float:
        return ["f", _hex(x)]
    if t is str:
        return ["s", x]
    if t is list or t is tuple or t is set or t is frozenset:
        tag = {list: "l", tuple: "t", set: "S", frozenset: "F"}[t]
        return [tag, [_enc(v, depth + 1) for v in x]]
    if t is dict:
        return ["d", [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in x.items()]]
    raise TypeError("not a plain value: %s" % t.__name__)
_out = _os.dup(1)
_null = _os.open(_os.devnull, _os.O_RDWR)
_os.dup2(_null, 0)
_os.dup2(_null, 1)
import builtins as _builtins
_pristine = dict(_builtins.__dict__)
_ns = {"__name__": "__solution__"}
exec(compile(SETUP + "\n" + PROGRAM, "solution.py", "exec"), _ns)
_rec = []
def _chk(x):
    _rec.append(_enc(x))
    return x
_vals = []
for _e in EXPRESSIONS:
    _g = dict(_ns)
    _g["__builtins__"], _g["__chk"] = dict(_pristine), _chk
    _vals.append(_enc(eval(compile(_e, "<test>", "eval"), _g)))
_write(_out, _json.dumps([_vals, _rec]).encode())
_exit(0)
"""

_JUDGE = r"""
import json as _json
_results = []
for _e in EXPRESSIONS:
    try:
        _results.append(bool(eval(compile(_e, "<test>", "eval"), dict(_G))))
    except BaseException:
        _results.append(False)
print(_json.dumps(_results))
"""


def decode_value(tagged):
    """Inverse of the runner's `_enc`: plain Python values from tagged JSON."""
    tag = tagged[0]
    if tag == "n":
        return None
    if tag in ("b", "s"):
        value = tagged[1]
        if type(value) is not (bool if tag == "b" else str):
            raise ValueError("bad tagged value")
        return value
    if tag == "i":
        return int(tagged[1])
    if tag == "f":
        return float.fromhex(tagged[1])
    if tag == "d":
        return {decode_value(k): decode_value(v) for k, v in tagged[1]}
    items = [decode_value(v) for v in tagged[1]]
    return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)


def value_source(value) -> str:
    """Python source that rebuilds a plain `value` (for the judge)."""
    t = type(value)
    if t is float and not math.isfinite(value):
        return f"float({str(value)!r})"
    if t in (list, tuple):
        inner = ", ".join(value_source(v) for v in value)
        return f"[{inner}]" if t is list else f"({inner}{',' if len(value) == 1 else ''})"
    if t in (set, frozenset):
        inner = ", ".join(value_source(v) for v in value)
        return f"{t.__name__}([{inner}])"
    if t is dict:
        return (
            "{" + ", ".join(f"{value_source(k)}: {value_source(v)}" for k, v in value.items()) + "}"
        )
    return repr(value)


def defined_names(source: str) -> set[str]:
    """Top-level names bound by `source`, excluding imported modules (not the program's own)."""
    names: set[str] = set()
    for node in parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def imported_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(parse(source)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Substitute(ast.NodeTransformer):
    """Replaces each placeholder name ``__v{i}`` with the expression ``source_of(i)``."""

    def __init__(self, source_of):
        self.source_of = source_of

    def visit_Name(self, node):
        if node.id.startswith("__v") and node.id[3:].isdigit():
            return parse(self.source_of(int(node.id[3:])), mode="eval").body
        return node


@dataclasses.dataclass(frozen=True)
class SplitAssert:
    """One assertion: program-rooted parts to evaluate, and a template to judge them with."""

    parts: tuple[str, ...]  # Sources evaluated next to the program.
    template: ast.Expression  # Test expression with parts replaced by `__v{i}` names.
    inline: bool = False  # The parts use names bound in the test: record and replay.

    def judge_source(self, values: list) -> str:
        """The assertion's expression with the program's values substituted as literals; an
        inline one's ``values`` are the recorded calls, replayed in order (each placeholder
        takes the next), and all of them must be used."""
        fresh = parse(ast.unparse(self.template), mode="eval")
        if not self.inline:
            return ast.unparse(_Substitute(lambda i: value_source(values[i])).visit(fresh))
        body = ast.unparse(_Substitute(lambda i: "__r.pop(0)").visit(fresh))
        return f"(lambda __r: ({body}) is True and not __r)({value_source(list(values))})"


def split_assert(statement: str, program_names: set[str], test_names: set[str]) -> SplitAssert:
    """Splits ``assert <expr>`` into program-rooted parts and a judging template.

    `program_names` are names the program defines; `test_names` are names available to the test
    without the program (setup definitions and builtins).
    """
    tree = parse(statement.strip())
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        raise ValueError(f"not a single assert statement: {statement[:80]!r}")
    test = tree.body[0].test
    parts: list[str] = []
    inline = False

    class _Cut(ast.NodeTransformer):
        def generic_visit(self, node):
            nonlocal inline
            if isinstance(node, ast.expr) and _root_name(node) in program_names:
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                if used - program_names - test_names:
                    inline = True  # Uses a name bound inside the test expression.
                parts.append(ast.unparse(node))
                return ast.Name(id=f"__v{len(parts) - 1}", ctx=ast.Load())
            return super().generic_visit(node)

    template = ast.fix_missing_locations(_Cut().visit(ast.Expression(body=test)))
    if inline:  # `__chk` records each program value (exact plain types) for the judge
        fresh = parse(ast.unparse(template), mode="eval")
        checked = _Substitute(lambda i: f"__chk({parts[i]})").visit(fresh)
        return SplitAssert(parts=(ast.unparse(checked),), template=template, inline=True)
    return SplitAssert(parts=tuple(parts), template=template)


def runner_source(setup: str, program: str, expressions: tuple[str, ...]) -> str:
    """Stage-1 program: setup + solution, then the program-rooted expressions, as tagged JSON."""
    header = f"SETUP = {setup!r}\nPROGRAM = {program!r}\nEXPRESSIONS = {list(expressions)!r}\n"
    return header + _RUNNER


def judge_source(setup: str, expressions: list[str]) -> str:
    """Stage-2 program (no solution in it): truth of each substituted assertion, as JSON."""
    return f"{setup}\n_G = dict(globals())\nEXPRESSIONS = {expressions!r}\n" + _JUDGE


_COMPARE_OPS = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,  # Literals only: None, True and False are singletons.
    ast.IsNot: operator.is_not,
}


def judge_locally(source: str) -> bool | None:
    """Decides a substituted assertion made only of literals; None if it needs the judge."""
    expr = parse(source, mode="eval").body
    try:
        if isinstance(expr, ast.Compare) and all(type(op) in _COMPARE_OPS for op in expr.ops):
            values = [ast.literal_eval(expr.left)] + [ast.literal_eval(c) for c in expr.comparators]
            return all(
                bool(_COMPARE_OPS[type(op)](a, b))
                for op, a, b in zip(expr.ops, values[:-1], values[1:], strict=True)
            )
        return bool(ast.literal_eval(expr))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def parse_judge_output(stdout: bytes, n: int) -> list[bool]:
    try:
        results = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return [False] * n
    if not isinstance(results, list) or len(results) != n:
        return [False] * n
    return [r is True for r in results]
