"""The package's shape, read from its source: no import cycles, and no mode decisions outside
capforge/modes/ (code there asks the mode; it never compares a mode's name)."""

from __future__ import annotations

import ast
from pathlib import Path

from capforge.modes import MODE_CLASSES

PACKAGE = Path(__file__).resolve().parent.parent / "capforge"


def modules() -> dict[str, ast.Module]:
    """Every module of the package (templates excluded), by dotted name."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def top_level_imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package modules ``name`` imports when it is imported (not inside functions, not
    under ``if TYPE_CHECKING``)."""
    found = set()
    for node in tree.body:
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {t for t in targets if t in known and t != name}
    return found


def test_the_package_has_no_import_cycles() -> None:
    trees = modules()
    graph = {name: top_level_imports(name, tree, set(trees)) for name, tree in trees.items()}
    visiting, done, cycles = [], set(), []

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for target in sorted(graph[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert not cycles, cycles


def test_only_the_modes_compare_mode_names() -> None:
    names = set(MODE_CLASSES)
    offenders = []
    for module, tree in modules().items():
        if module.startswith("capforge.modes"):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                constants = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant)]
                if names & {c for c in constants if isinstance(c, str)}:
                    offenders.append(f"{module}:{node.lineno}")
    assert not offenders, offenders
