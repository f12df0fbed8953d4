"""The package's shape, read from its source: no import cycles (counting imports inside
functions), capforge.data below the modes, and no mode decisions outside
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


def imports(name: str, tree: ast.Module, known: set[str]) -> set[str]:
    """The package modules ``name`` imports anywhere, inside functions too (an import there is
    a dependency all the same); only those under ``if TYPE_CHECKING`` (annotations) are left out."""
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING"
                 for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {t for t in targets if t in known and t != name}
    return found


def graph() -> dict[str, set[str]]:
    trees = modules()
    return {name: imports(name, tree, set(trees)) for name, tree in trees.items()}


def test_the_package_has_no_import_cycles() -> None:
    edges = graph()
    visiting, done, cycles = [], set(), []

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for target in sorted(edges[node]):
            visit(target)
        visiting.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)
    assert not cycles, cycles


def test_data_sits_wholly_below_the_modes() -> None:
    """capforge.data (images, labels, charset, records, generator) is what the modes build on: it
    imports nothing of the package but itself and the bottom modules."""
    bottom = {"capforge", "capforge.errors", "capforge.version", "capforge.options"}
    offenders = {f"{name} -> {target}" for name, targets in graph().items() if name.startswith("capforge.data")
                 for target in targets if not target.startswith("capforge.data") and target not in bottom}
    assert not offenders, sorted(offenders)


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


def test_every_step_in_the_table_has_its_handler() -> None:
    from capforge import steps
    from capforge.step_table import STEPS

    assert all(callable(getattr(steps, f"cmd_{command}", None)) for command in STEPS)
    handlers = {name[len("cmd_"):] for name in vars(steps) if name.startswith("cmd_")}
    assert handlers == set(STEPS)  # no handler that no step runs
