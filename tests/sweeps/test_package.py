"""tl.sweeps is a graph without cycles: no module imports, at its top or inside a function,
one that imports it back."""

import ast
from pathlib import Path

import tl.sweeps

PACKAGE = Path(tl.sweeps.__file__).parent


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "tl.sweeps":
                found |= {a.name for a in node.names}
            elif node.module.startswith("tl.sweeps."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("tl.sweeps.")}
    return found - {path.stem}


def test_the_sweeps_modules_import_each_other_without_a_cycle():
    graph = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle: {' -> '.join(path + [module])}"
        if module in done:
            return
        path.append(module)
        for dep in graph.get(module, ()):
            visit(dep)
        path.pop()
        done.add(module)

    for module in graph:
        visit(module)
    assert graph["state"] == set() and "sweep" not in graph["launchers"] | graph["stopping"]
