"""The shape of nfutils: no import cycles, and the size rules of a thin library.

* no cycle among nfutils' modules (every ``import`` walked with ``ast``; imports under
  ``if TYPE_CHECKING:`` are for type hints only and never run);
* at most 3,300 lines of code in all (blank, comment and docstring lines not counted);
* no module over 400 lines in all, no function or method over 80 lines in all;
* no module that knows a result file's path (``data/results``), mentions the README or is
  written for one part of the series (names a part by its number).
"""

import ast
import re
from pathlib import Path

import pytest

NFUTILS = Path(__file__).resolve().parent.parent / "nfutils"
# The design target: a thin library of shared building blocks.
MAX_CODE_LINES = 3300
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of nfutils."""
    modules = {}
    for path in sorted(NFUTILS.rglob("*.py")):
        parts = path.relative_to(NFUTILS.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _is_type_checking_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Name)
            and node.test.id == "TYPE_CHECKING")


def _runtime_imports(tree: ast.AST):
    """The Import / ImportFrom nodes of a module, skipping ``if TYPE_CHECKING:`` blocks."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if _is_type_checking_block(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _resolve(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute dotted module a ``from ... import`` names."""
    if node.level == 0:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the nfutils modules it imports, at the top or inside a function (``from . import
    x`` imports the module x, not the package, which Python has imported before x anyway)."""
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:  # ``from m import x``: the module m.x when there is one, else m itself
                module = _resolve(name, path, node)
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules
                           else module for alias in node.names]
            edges.update(t for t in targets if t in modules and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def code_lines(source: str) -> int:
    """Lines that are not blank, a comment or part of a docstring."""
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            first = node.body[0] if node.body else None
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    return sum(1 for number, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and number not in docstrings)


def test_the_helpers_find_a_cycle_and_count_code_lines():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = '"""Doc.\n\nMore."""\n\n# comment\nx = 1\n\n\ndef f():\n    """Doc."""\n    return x\n'
    assert code_lines(source) == 3
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .vae import VAE\n")
    assert [type(node).__name__ for node in _runtime_imports(tree)] == ["ImportFrom"]


def test_no_import_cycle():
    graph = import_graph(_modules())
    assert graph["nfutils.vae"] >= {"nfutils.bounds"}  # the walk sees relative imports
    assert "nfutils.potentials" in graph["nfutils.plotting.common"]  # and `from .. import x`
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_nfutils_is_thin():
    sources = {name: path.read_text() for name, path in _modules().items()}
    total = sum(code_lines(source) for source in sources.values())
    assert total <= MAX_CODE_LINES, f"nfutils has {total} lines of code, more than {MAX_CODE_LINES}"
    too_long = {name: len(source.splitlines()) for name, source in sources.items()
                if len(source.splitlines()) > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_no_function_over_80_lines():
    too_long = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name} ({length} lines)")
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"


@pytest.mark.parametrize("word", ["data/results", "README"])
def test_no_module_knows_result_files_or_the_readme(word):
    mentioning = [name for name, path in _modules().items() if word in path.read_text()]
    assert not mentioning, f"modules mentioning {word}: {mentioning}"


def test_no_module_names_a_part_of_the_series():
    part = re.compile(r"\bparts?[ _-]?[1-4]\b|\bpart[ _-]?(one|two|three|four)\b|notebooks/0[1-4]",
                      re.IGNORECASE)
    naming = {name: part.search(path.read_text()).group(0) for name, path in _modules().items()
              if part.search(path.read_text())}
    assert not naming, f"modules that name a part: {naming}"
