"""dbkit.testing._templates.seal: a template database that nobody can connect to stays copyable, also on a server
that preloads TimescaleDB (whose launcher starts a scheduler in every database that allows connections)."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from dbkit.testing._templates import seal


@pytest.fixture
def admin(dbkit_server):
    with psycopg.connect(dbkit_server.url("postgres").conninfo, autocommit=True) as conn:
        yield conn


@pytest.fixture
def names(admin):
    made: list[str] = []

    def new() -> str:
        made.append(f"dbkit_seal_{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield new
    for name in reversed(made):
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_sealed_template_ends_its_connections_and_refuses_new_ones(admin, names, dbkit_server):
    template = names()
    admin.execute(f'CREATE DATABASE "{template}"')
    lingering = psycopg.connect(dbkit_server.url(template).conninfo, autocommit=True)
    lingering.execute("CREATE TABLE t AS SELECT 1 AS x")
    assert seal(admin, template) >= 1  # the lingering session (and any TimescaleDB scheduler) is ended
    with pytest.raises(psycopg.OperationalError):
        lingering.execute("SELECT 1")
    lingering.close()
    assert admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (template,)).fetchone() == (False,)
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        psycopg.connect(dbkit_server.url(template).conninfo).close()
    # nothing gets in again, so copies never meet "source database … is being accessed by other users"
    assert admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (template,)).fetchone() == (0,)
    for _ in range(3):
        copy = names()
        admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{template}"')
        with psycopg.connect(dbkit_server.url(copy).conninfo) as conn:  # a copy allows connections again
            assert conn.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_sealing_a_database_without_connections_ends_none(admin, names):
    template = names()
    admin.execute(f'CREATE DATABASE "{template}" ALLOW_CONNECTIONS false')
    assert seal(admin, template) == 0
    assert seal(admin, template) == 0  # idempotent
