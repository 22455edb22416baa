"""dbkit's modules import one way, top to bottom (DESIGN.md, "Layers"): no circles, no upward imports,
and the features do not import each other.  Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1] / "dbkit"

#: lowest first; a module may import its own layer's package and any layer below it
LAYERS = [
    {"dbkit.errors", "dbkit._urls", "dbkit._render"},
    {"dbkit.config", "dbkit._config_types", "dbkit._config_files", "dbkit._env_check"},
    {"dbkit._db"},
    {"dbkit._dev", "dbkit._dev_binaries"},
    {"dbkit._target"},
    {"dbkit.roles", "dbkit.rls"},  # the access model: migrations apply it, revisions read it
    {"dbkit.migrate", "dbkit.seed", "dbkit.backup"},  # features: they do not import each other
    {"dbkit._lifecycle", "dbkit._health", "dbkit._health_types", "dbkit._reset", "dbkit.init"},  # flows across features
    {"dbkit.cli", "dbkit.testing", "dbkit", "dbkit.__main__"},
]
FEATURES = {"dbkit.migrate", "dbkit.seed", "dbkit.backup"}


def unit(module: str) -> str:
    """``dbkit.backup._restore`` -> ``dbkit.backup``: the package or top-level module a name belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def layer(module: str) -> int:
    name = unit(module)
    for i, members in enumerate(LAYERS):
        if name in members:
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py: add it")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dbkit"):
            if node.module == "dbkit":
                found |= {f"dbkit.{a.name}" for a in node.names if a.name != "__version__"}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dbkit")}
    return found


def modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        yield name, path


def test_imports_go_one_way():
    problems = []
    for name, path in modules():
        for imported in imports(path):
            if unit(imported) == unit(name):
                continue
            if layer(imported) > layer(name):
                problems.append(f"{name} imports {imported} (upward)")
            elif unit(name) in FEATURES and unit(imported) in FEATURES:
                problems.append(f"{name} imports {imported} (features do not import each other)")
    assert problems == []


def test_every_module_has_a_layer():
    for name, _ in modules():
        layer(name)


def test_every_layer_member_exists():
    """A module that was merged away leaves the table too."""
    existing = {unit(name) for name, _ in modules()}
    assert [m for members in LAYERS for m in sorted(members) if m not in existing] == []
