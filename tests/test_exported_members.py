"""The public surface of ``import dbkit`` is pinned (as httpx's tests/test_exported_members.py does)."""

from __future__ import annotations

import subprocess
import sys

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
