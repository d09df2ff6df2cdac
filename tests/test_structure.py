"""The package's shape: no import cycles (top-level or deferred imports alike), no module over
400 lines, a median module of at most 150 lines, no function over 60 lines unless its docstring
says why ("long because ...")."""

import ast
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "r1jax"
MAX_LINES, MAX_MEDIAN, MAX_FUNCTION = 400, 150, 60


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """r1jax modules ``path`` imports anywhere (deferred imports included), with the packages
    importing them runs (``a.b.c`` runs ``a.b``'s ``__init__`` first)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    typing_only = {  # ``if TYPE_CHECKING:`` imports never run
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # the packages on the way, then the module
                if ".".join(parts[:i]) in known:
                    found.add(".".join(parts[:i]))
    found.discard(name)
    return {m for m in found if not name.startswith(m + ".")}  # a package's own parents


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    mods = modules()
    graph = {name: imports_of(path, name, set(mods)) for name, path in mods.items()}
    assert graph["r1jax.train.loop"] >= {"r1jax.train.sft_job", "r1jax.train.grpo_job"}
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_module_sizes():
    lines = {name: len(p.read_text().splitlines()) for name, p in modules().items()}
    assert {n: c for n, c in lines.items() if c > MAX_LINES} == {}
    assert statistics.median(lines.values()) <= MAX_MEDIAN


def test_long_functions_say_why():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if size > MAX_FUNCTION and "long because" not in doc.lower():
                    long.append(f"{name}.{node.name}: {size} lines")
    assert long == []
