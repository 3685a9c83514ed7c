"""The shape of ``nfutils.flows`` as code: no import cycle among its modules (a flow inverts
itself, so the shared base needs no flow by name; the fast path depends on the reference, not
the other way round), modules of at most 400 lines and functions of at most 80."""

import ast
from pathlib import Path

import pytest

import nfutils.flows

FLOWS = Path(nfutils.flows.__file__).parent
MODULES = sorted(p for p in FLOWS.glob("*.py") if p.name != "__init__.py")


def imported_siblings(path: Path) -> set[str]:
    """The modules of nfutils.flows that ``path`` imports anywhere (top level or inside a
    function), found by reading the code, not by running it."""
    siblings = {p.stem for p in MODULES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 1:  # from .x import y, from . import x
                names = [module] if module else [alias.name for alias in node.names]
            elif module.startswith("nfutils.flows"):
                names = [module.removeprefix("nfutils.flows").lstrip(".")] or []
                names = names if names[0] else [alias.name for alias in node.names]
            else:
                continue
            found.update(name.split(".")[0] for name in names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nfutils.flows."):
                    found.add(alias.name.split(".")[2])
    return found & siblings


def test_no_import_cycle_among_the_flow_modules():
    graph = {p.stem: imported_siblings(p) for p in MODULES}
    finished: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = path[path.index(name):] + [name]
            pytest.fail("import cycle in nfutils.flows: " + " -> ".join(cycle))
        if name in finished:
            return
        for other in sorted(graph[name]):
            visit(other, path + [name])
        finished.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert "fast_planar" not in graph["planar"]  # the reference knows nothing of the speed code
    assert "planar" in graph["fast_planar"]
    assert not graph["base"] & {"planar", "radial", "coupling", "fast_planar"}


def test_the_walker_finds_imports_inside_functions(tmp_path, monkeypatch):
    source = "def f():\n    from . import planar\n    from .radial import RadialFlow\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    assert imported_siblings(path) == {"planar", "radial"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_modules_and_functions_are_short(path):
    lines = path.read_text().splitlines()
    assert len(lines) <= 400, f"{path.name} has {len(lines)} lines (at most 400)"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{path.name}: {node.name} has {length} lines (at most 80)"
