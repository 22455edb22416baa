"""The public surface of ``import dbkit`` is pinned (as httpx's tests/test_exported_members.py does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import dbkit

pytestmark = pytest.mark.unit

EXPECTED = {
    "__version__",
    "DbkitError", "OperationFailed", "ConfigError", "UsageError", "DatabaseUnavailable", "MissingDependency",
    "Refused",
    "scoped", "scoped_session", "seeder", "load_settings", "Settings", "run_migrations", "migration_settings",
    "role_model",
}


def test_exported_names_are_pinned():
    assert set(dbkit.__all__) == EXPECTED
    assert len(dbkit.__all__) == len(EXPECTED)


def test_every_exported_name_resolves():
    for name in dbkit.__all__:
        assert getattr(dbkit, name) is not None, name
    from dbkit.rls import scoped
    from dbkit.seed import seeder

    assert dbkit.scoped is scoped and dbkit.seeder is seeder
    with pytest.raises(AttributeError):
        dbkit.nothing_here  # noqa: B018


def test_import_dbkit_stays_light():
    code = ("import sys, dbkit; heavy = {'sqlalchemy', 'alembic', 'psycopg', 'boto3', 'rich', 'numpy', 'faker', 'pydantic', 'obstore', 'pglast'}; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


#: the modules an application (or its migrations/env.py, or pytest) imports by name; packages are namespaces
PUBLIC_MODULES = {
    "dbkit", "dbkit.__main__", "dbkit.errors", "dbkit.config", "dbkit.cli", "dbkit.init",
    "dbkit.migrate", "dbkit.migrate.env", "dbkit.rls", "dbkit.seed", "dbkit.roles", "dbkit.backup",
    "dbkit.testing", "dbkit.testing.plugin",
}


def test_every_other_module_is_private():
    """What is not on the public list is named ``_module.py``, so a reader sees where the API ends."""
    root = Path(dbkit.__file__).parent
    named = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(p for p in parts if p != "__init__")
        named.add(name)
        if name not in PUBLIC_MODULES:
            assert parts[-1].startswith("_"), f"{name} is neither public (PUBLIC_MODULES) nor private (_{parts[-1]}.py)"
    assert PUBLIC_MODULES <= named, PUBLIC_MODULES - named
