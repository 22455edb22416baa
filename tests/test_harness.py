"""The harness itself: every test gets a fresh database with the extensions."""

import os
import pwd
from pathlib import Path

import pytest

import dbkit

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("attempt", [1, 2])
def test_fresh_database_per_test(postgresql, attempt):
    # The first run creates a table; the second must not see it.
    exists = postgresql.execute("SELECT to_regclass('public.leftover') IS NOT NULL").fetchone()[0]
    assert exists is False
    postgresql.execute("CREATE TABLE leftover (id int)")
    postgresql.commit()


def test_template_has_the_extensions(postgresql):
    rows = postgresql.execute("SELECT extname FROM pg_extension ORDER BY 1").fetchall()
    assert [r[0] for r in rows] == ["pgcrypto", "plpgsql", "timescaledb", "vector"]
    assert "timescaledb" in postgresql.execute("SHOW shared_preload_libraries").fetchone()[0]
    # the extensions work, not just exist
    assert postgresql.execute("SELECT '[3,4]'::vector <-> '[0,0]'::vector").fetchone()[0] == 5
    postgresql.execute("CREATE TABLE m (t timestamptz NOT NULL, v float)")
    postgresql.execute("SELECT create_hypertable('m', 't')")
    assert len(postgresql.execute("SELECT gen_random_uuid()").fetchone()[0].bytes) == 16


def test_one_server_started_the_way_the_user_can(postgresql, dbkit_postgresql, dbkit_server):
    """The suite's ``postgresql`` and the plugin's fixtures share the plugin's one server: pytest-postgresql's
    process fixture as a normal user, dbkit's embedded cluster run by the ``postgres`` OS user as root."""
    from pytest_postgresql.executors import NoopExecutor, PostgreSQLExecutor

    assert (postgresql.info.host, postgresql.info.port) == (dbkit_server.host, dbkit_server.port)
    assert int(dbkit_postgresql.port) == dbkit_server.port
    if os.environ.get("DBKIT_TEST_SERVER_URL"):
        assert type(dbkit_postgresql) is NoopExecutor
        return
    root = os.geteuid() == 0
    assert type(dbkit_postgresql) is (NoopExecutor if root else PostgreSQLExecutor)
    data_dir = Path(postgresql.execute("SHOW data_directory").fetchone()[0])
    assert data_dir.stat().st_uid == (pwd.getpwnam("postgres").pw_uid if root else os.geteuid())


@pytest.mark.unit
def test_public_surface_is_explicit():
    """Pinned name by name in tests/test_exported_members.py; here: every name resolves."""
    from test_exported_members import EXPECTED

    assert set(dbkit.__all__) == EXPECTED
    for name in dbkit.__all__:
        assert hasattr(dbkit, name)
