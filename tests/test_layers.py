"""tl's packages import one way: no package imports, at its top or inside a function, one
that imports it back (tl.sweeps checks its own modules in tests/sweeps/test_package.py)."""

import ast
from pathlib import Path

import tl

ROOT = Path(tl.__file__).parent


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        here = _package(".".join(path.relative_to(ROOT.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("tl.") and _package(name) != here:
                    graph.setdefault(here, set()).add(_package(name))
    return graph


def test_no_package_of_tl_imports_one_that_imports_it_back():
    graph = _graph()
    done: set[str] = set()

    def visit(pkg: str, path: list[str]) -> None:
        assert pkg not in path, f"import cycle: {' -> '.join(path + [pkg])}"
        if pkg in done:
            return
        for dep in sorted(graph.get(pkg, ())):
            visit(dep, path + [pkg])
        done.add(pkg)

    for pkg in sorted(graph):
        visit(pkg, [])


def test_errors_and_masking_are_the_bottom_layer():
    graph = _graph()
    assert graph.get("tl.masking", set()) == set()
    assert graph.get("tl.errors", set()) <= {"tl.masking"}
