"""dbkit's pytest plugin in projects other than this one (pytester, a pytest subprocess each):
without pytest-postgresql, without a seeds/ directory, and with pytest-postgresql's own factories on the
plugin's server."""

import shutil
import textwrap
from pathlib import Path

import pytest

from dbkit.testing.plugin import MISSING_PYTEST_POSTGRESQL

pytest_plugins = ["pytester"]

LEAKY = Path(__file__).parent / "examples" / "leaky"
PYPROJECT = """\
[project]
name = "plugin-example"
version = "0"

[tool.dbkit]
extensions = ["pgcrypto"]
schema = "app"
"""
# One table with row-level security and correct policies (the leaky example, without the leak).
MIGRATION = '''\
"""notes with RLS

Revision ID: 0001
"""

from alembic import op

import dbkit.migrate

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = dbkit.migrate.settings()
    op.apply_roles()
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    op.execute("CREATE TABLE app.notes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
               "tenant_id uuid NOT NULL, body text NOT NULL)")
    op.enable_rls("notes", schema="app")
    claim = f"tenant_id = (SELECT NULLIF(current_setting('{s.tenant_claim}', true), '')::uuid)"
    op.create_policy("notes_all", "notes", schema="app", roles=[s.role_enforce], using=claim, with_check=claim)
    op.grant(["USAGE"], "app", object_type="SCHEMA", roles=[s.role_enforce, s.role_bypass, s.role_readonly])
    op.grant(["SELECT", "INSERT", "UPDATE", "DELETE"], "notes", schema="app", roles=[s.role_enforce, s.role_bypass])


def downgrade() -> None:
    op.execute("DROP SCHEMA app CASCADE")
'''
# Imported through `-p` before any entry-point plugin (dbkit's included): pytest-postgresql cannot be
# imported, as when it is not installed (its own plugin is left out with `-p no:pytest_postgresql`).
BLOCKER = '''\
import sys


class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name == "pytest_postgresql" or name.startswith("pytest_postgresql."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


for _name in [m for m in sys.modules if m == "pytest_postgresql" or m.startswith("pytest_postgresql.")]:
    del sys.modules[_name]
sys.meta_path.insert(0, _NotInstalled())
'''


def _project(pytester: pytest.Pytester, monkeypatch, *, seeds: bool = False) -> None:
    (pytester.path / "pyproject.toml").write_text(PYPROJECT)
    shutil.copytree(LEAKY / "migrations", pytester.path / "migrations",
                    ignore=shutil.ignore_patterns("versions", "__pycache__"))
    (pytester.path / "migrations" / "versions").mkdir()
    (pytester.path / "migrations" / "versions" / "0001_notes.py").write_text(MIGRATION)
    if seeds:
        shutil.copytree(LEAKY / "seeds", pytester.path / "seeds")
    for name in ("DATABASE_URL", "DBKIT_ENV", "DBKIT_PROJECT_DIR", "DBKIT_TEST_SERVER_URL",
                 "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)  # the project's pytest is not an xdist worker


@pytest.mark.unit
def test_without_pytest_postgresql_the_fixtures_say_so_in_one_line(pytester: pytest.Pytester, monkeypatch):
    _project(pytester, monkeypatch)
    (pytester.path / "blocker.py").write_text(BLOCKER)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_app.py").write_text(textwrap.dedent("""\
        import sys


        def test_plain(dbkit_settings):
            assert dbkit_settings.schema == "app"  # the plugin is loaded and works
            assert "pytest_postgresql" not in sys.modules


        def test_db(dbkit_db):
            pass


        def test_role(as_role):
            pass
        """))
    result = pytester.runpytest_subprocess("-p", "blocker", "-p", "no:pytest_postgresql", "-p", "no:cacheprovider",
                                           "-q", "tests/test_app.py")
    out = result.stdout.str() + result.stderr.str()
    result.assert_outcomes(passed=1, errors=2)
    assert out.count(MISSING_PYTEST_POSTGRESQL) >= 2, out
    assert "ModuleNotFoundError" not in out and "Traceback" not in out, out
    # the one line is all a failing setup says: no fixture source, no chained exception
    lines = result.stdout.lines
    at = next(i for i, line in enumerate(lines) if "ERROR at setup of test_db" in line)
    assert lines[at + 1] == MISSING_PYTEST_POSTGRESQL and "ERROR at setup of test_role" in lines[at + 2], out


@pytest.mark.unit
def test_a_malformed_server_url_is_one_line(pytester: pytest.Pytester, monkeypatch):
    _project(pytester, monkeypatch)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_app.py").write_text("def test_db(dbkit_db):\n    pass\n")
    monkeypatch.setenv("DBKIT_TEST_SERVER_URL", "mysql://root@localhost/x")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "tests/test_app.py")
    out = result.stdout.str()
    result.assert_outcomes(errors=1)
    assert "dbkit's test server: DBKIT_TEST_SERVER_URL" in out and "Traceback" not in out, out


@pytest.mark.integration
def test_the_seeded_fixtures_work_without_a_seeds_directory(pytester: pytest.Pytester, monkeypatch, dbkit_server):
    _project(pytester, monkeypatch)
    monkeypatch.setenv("DBKIT_TEST_SERVER_URL", dbkit_server.url("postgres").raw)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_app.py").write_text(textwrap.dedent("""\
        import uuid

        import psycopg


        def test_seeded_db(dbkit_seeded_db, as_role, dbkit_rls_tables):
            assert [(t.schema, t.name, t.tenants) for t in dbkit_rls_tables] == [("app", "notes", [])]
            a, b = uuid.uuid4(), uuid.uuid4()
            with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
                assert admin.execute("SELECT count(*) FROM app.notes").fetchone()[0] == 0  # nothing seeded
                admin.execute("INSERT INTO app.notes (tenant_id, body) VALUES (%s, 'a'), (%s, 'b')", (a, b))
            with as_role("enforce", tenant=a) as conn:
                assert conn.execute("SELECT body FROM app.notes").fetchall() == [("a",)]
            with as_role("enforce") as conn:
                assert conn.execute("SELECT count(*) FROM app.notes").fetchone()[0] == 0


        def test_rls_db(dbkit_rls_db):
            with psycopg.connect(dbkit_rls_db.conninfo) as conn:
                assert conn.execute("SELECT to_regclass('app.notes') IS NOT NULL").fetchone()[0]
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "tests/test_app.py")
    result.assert_outcomes(passed=2)


@pytest.mark.integration
def test_a_project_gets_one_server_for_the_plugin_and_pytest_postgresql(pytester: pytest.Pytester, monkeypatch,
                                                                        dbkit_server):
    """No DBKIT_TEST_SERVER_URL: the plugin starts its own server (as root here: the embedded cluster), once;
    pytest-postgresql's factories can use it (``depends_on="dbkit_postgresql"``)."""
    _project(pytester, monkeypatch)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "conftest.py").write_text(textwrap.dedent("""\
        from pytest_postgresql import factories

        base = factories.postgresql_noproc(depends_on="dbkit_postgresql", dbname="app_base")
        postgresql = factories.postgresql("base")
        """))
    (pytester.path / "tests" / "test_app.py").write_text(textwrap.dedent(f"""\
        import psycopg


        def test_one_server(postgresql, dbkit_db, dbkit_server, dbkit_postgresql):
            assert (postgresql.info.host, postgresql.info.port) == (dbkit_server.host, dbkit_server.port)
            assert dbkit_db.port == dbkit_server.port != {dbkit_server.port}  # not the outer session's server
            with psycopg.connect(dbkit_db.conninfo) as conn:
                assert conn.execute("SELECT to_regclass('app.notes') IS NOT NULL").fetchone()[0]
            # every database on it is one of this session's: the plugin's template, pytest-postgresql's ones
            with psycopg.connect(dbkit_server.url("postgres").conninfo) as conn:
                names = {{r[0] for r in conn.execute("SELECT datname FROM pg_database")}}
            assert {{dbkit_postgresql.template_dbname, "app_base_tmpl", "app_base", dbkit_db.dbname}} <= names
        """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "tests/test_app.py")
    result.assert_outcomes(passed=1)
