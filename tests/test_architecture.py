"""ARCHITECTURE.md's import direction, enforced on every import of etlctl's own
modules (module-level and inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "etlctl"

# layer -> the layers it may import. Base is errors.py and the package itself.
ALLOWED = {
    "base": {"base"},
    "core": {"base", "core"},
    "store": {"base", "core", "store"},
    "broker": {"base", "core", "broker"},
    "actions": {"base", "core", "store", "broker", "actions"},
    "oncall": {"base", "core", "store", "broker", "oncall"},
    "views": {"base", "core", "views"},
    "cli": {"base", "core", "store", "broker", "actions", "oncall", "views", "cli"},
    "main": {"base", "cli"},  # errors.py: the quiet Ctrl-C before the CLI is imported
}
FOLDERS = {"core", "store", "broker", "actions", "oncall", "views", "cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "etlctl.__main__":
        return "main"
    if len(parts) > 1 and parts[1] in FOLDERS:
        return parts[1]
    if len(parts) > 1 and parts[1] == "sql":
        return "base"  # data files, shipped as a package
    return "base"


def imports(path: Path) -> set[str]:
    """Every etlctl module that `path` imports, anywhere in the file."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "etlctl"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "etlctl":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if _is_module(candidate) else node.module)
    return found


def _is_module(dotted: str) -> bool:
    relative = Path(*dotted.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").exists() or (PACKAGE / relative / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_known_layer():
    strays = [m for m in graph() if layer(m) == "base" and m not in ("etlctl", "etlctl.errors")
              and not m.startswith("etlctl.sql")]
    assert strays == [], f"modules outside the layer folders (see ARCHITECTURE.md): {strays}"


@pytest.mark.parametrize("module", sorted(graph()))
def test_imports_follow_the_layers(module):
    wrong = sorted(target for target in graph()[module] if layer(target) not in ALLOWED[layer(module)])
    assert wrong == [], f"{module} ({layer(module)}) must not import {wrong}: see ARCHITECTURE.md"


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every circle found by a depth-first walk of the import graph."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    found: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if target == node or target not in edges:
                continue
            if state.get(target) == 1:
                found.append(path[path.index(target):] + [target])
            elif state.get(target) is None:
                visit(target, path + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    return found


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_a_circle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_checker_catches_a_wrong_import(tmp_path):
    """The rule must be able to fail: a view that reads the database is refused."""
    assert "store" not in ALLOWED[layer("etlctl.views.jobs")]
    assert layer("etlctl.store.connection") == "store"
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from etlctl.store import connection\n")
    assert imports(source) == {"etlctl.store.connection"}
