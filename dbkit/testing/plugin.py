"""dbkit's pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, built on pytest-postgresql's DatabaseJanitor:

``dbkit_server``          the PostgreSQL server (session): ``DBKIT_TEST_SERVER_URL`` (a superuser URL) or a
                          throw-away embedded cluster started for the session; override it in conftest.py
``dbkit_settings``        the project's settings (``[tool.dbkit]`` of the rootdir)
``dbkit_template``        a database migrated to head once per session, used as a TEMPLATE
``dbkit_db``              a fresh copy of it per test (a ``DbUrl``)
``dbkit_seeded_template`` / ``dbkit_seeded_db``  the same, seeded with the tiny profile (several tenants)
``dbkit_rls_db``          one seeded copy for the session (the RLS matrix rolls every check back)
``dbkit_rls_tables``      the tables with RLS in it, two tenants' rows sampled (for the matrix)
``as_role``               ``with as_role("enforce", tenant=t) as conn:`` a connection of that role with the claims
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbkit.urls import DbUrl, parse_database_url

TEST_SERVER_CONF = (
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
    "timescaledb.max_background_workers = 0",  # its workers would hold connections to template databases
)


@dataclasses.dataclass(frozen=True)
class Server:
    host: str
    port: int
    user: str
    password: str | None = None

    def url(self, dbname: str, user: str | None = None, password: str | None = None) -> DbUrl:
        from urllib.parse import quote

        who = quote(user or self.user, safe="")
        secret = password if user else self.password
        auth = f"{who}:{quote(secret, safe='')}" if secret else who
        return parse_database_url(f"postgresql://{auth}@{self.host}:{self.port}/{dbname}")


@pytest.fixture(scope="session")
def dbkit_server() -> Iterator[Server]:
    """The server the dbkit fixtures use.  Override this fixture to bring your own."""
    env_url = os.environ.get("DBKIT_TEST_SERVER_URL")
    if env_url:
        u = parse_database_url(env_url, variable="DBKIT_TEST_SERVER_URL")
        yield Server(u.hosts[0] if u.hosts else "127.0.0.1", u.port or 5432, u.user or "postgres", u.password)
        return
    from dbkit.dev import DevCluster

    base = Path(tempfile.mkdtemp(prefix="dbkit-pytest-", dir="/tmp"))
    base.chmod(0o755)  # the postgres OS user must reach it when we run as root
    cluster = DevCluster(base / "pg", extra_conf=TEST_SERVER_CONF)
    status = cluster.up()
    try:
        yield Server("127.0.0.1", status.port, "postgres")
    finally:
        cluster.down(purge=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dbkit_settings(request: pytest.FixtureRequest):
    from dbkit.config import load_settings

    return load_settings(cwd=Path(str(request.config.rootpath)))


def settings_for(settings, url: DbUrl):
    """``settings`` pointed at ``url`` (DBKIT_ENV=test)."""
    return dataclasses.replace(settings, database_url=url, env="test")


def _janitor(server: Server, name: str, template: str | None):
    from pytest_postgresql.janitor import DatabaseJanitor

    return DatabaseJanitor(user=server.user, host=server.host, port=server.port, dbname=name,
                           template_dbname=template, password=server.password)


def _mark_template(server: Server, name: str, on: bool) -> None:
    from dbkit import db

    with db.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH is_template = {"true" if on else "false"}')


@contextlib.contextmanager
def _template(server: Server, name: str, source: str | None, build) -> Iterator[str]:
    janitor = _janitor(server, name, source)
    janitor.drop()
    janitor.init()
    try:
        build(server.url(name))
        _mark_template(server, name, True)
        yield name
    finally:
        with contextlib.suppress(Exception):
            _mark_template(server, name, False)
        janitor.drop()


@pytest.fixture(scope="session")
def dbkit_template(dbkit_server: Server, dbkit_settings) -> Iterator[str]:
    """Name of a database migrated to head once per session (a TEMPLATE)."""
    from dbkit.migrate import runner

    name = f"dbkit_tmpl_{os.getpid()}"
    with _template(dbkit_server, name, None, lambda url: runner.upgrade(settings_for(dbkit_settings, url))):
        yield name


@pytest.fixture(scope="session")
def dbkit_seeded_template(dbkit_server: Server, dbkit_settings, dbkit_template: str) -> Iterator[str]:
    """Name of a TEMPLATE at head seeded with the tiny profile (several tenants, every tenant table)."""
    from dbkit.seed import engine

    name = f"dbkit_seeded_{os.getpid()}"

    def build(url: DbUrl) -> None:
        engine.run(settings_for(dbkit_settings, url), profile="tiny", seed=0)

    with _template(dbkit_server, name, dbkit_template, build):
        yield name


def _copy(server: Server, template: str, request: pytest.FixtureRequest) -> Iterator[DbUrl]:
    name = f"dbkit_t_{abs(hash(request.node.nodeid)) % 10**10}_{os.getpid()}"
    janitor = _janitor(server, name, template)
    janitor.drop()
    with janitor:
        yield server.url(name)


@pytest.fixture
def dbkit_db(dbkit_server: Server, dbkit_template: str, request: pytest.FixtureRequest) -> Iterator[DbUrl]:
    """A fresh database at head for this test, dropped afterwards."""
    yield from _copy(dbkit_server, dbkit_template, request)


@pytest.fixture
def dbkit_seeded_db(dbkit_server: Server, dbkit_seeded_template: str,
                    request: pytest.FixtureRequest) -> Iterator[DbUrl]:
    """A fresh seeded database (tiny profile) for this test."""
    yield from _copy(dbkit_server, dbkit_seeded_template, request)


@pytest.fixture(scope="session")
def dbkit_rls_db(dbkit_server: Server, dbkit_seeded_template: str, request: pytest.FixtureRequest) -> Iterator[DbUrl]:
    """One seeded database for the whole session; only for checks that roll back."""
    yield from _copy(dbkit_server, dbkit_seeded_template, request)


def role_name(settings, role: str) -> str:
    """``enforce`` / ``bypass`` / ``readonly`` / ``owner`` -> the configured role name; other names as given."""
    return getattr(settings, f"role_{role}", role) if role in ("owner", "enforce", "bypass", "readonly") else role


def connect_as(server: Server, url: DbUrl, settings, role: str):
    """A psycopg connection logged in as ``role`` (password from DBKIT_PASSWORD_<ROLE> when set)."""
    import psycopg

    name = role_name(settings, role)
    target = server.url(url.dbname, user=name, password=settings.password_for(name))
    return psycopg.connect(target.conninfo, connect_timeout=10)


@pytest.fixture
def as_role(dbkit_server: Server, dbkit_seeded_db: DbUrl, dbkit_settings):
    """``with as_role("enforce", tenant=t, user=u) as conn:`` a transaction of that role with the claims
    set, rolled back at the end.  Roles that cannot log in (the owner) are entered with SET ROLE."""
    import psycopg

    from dbkit.rls import scoped

    opened: list[Any] = []

    @contextlib.contextmanager
    def enter(role: str, tenant: Any = None, user: Any = None) -> Iterator[Any]:
        name = role_name(dbkit_settings, role)
        with psycopg.connect(dbkit_server.url("postgres").conninfo) as admin:
            can_login = admin.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        if can_login and can_login[0]:
            conn, set_role = connect_as(dbkit_server, dbkit_seeded_db, dbkit_settings, name), None
        else:
            conn, set_role = psycopg.connect(dbkit_seeded_db.conninfo), name
        opened.append(conn)
        try:
            with scoped(conn, tenant_id=tenant, user_id=user, role=set_role,
                        tenant_claim=dbkit_settings.tenant_claim, user_claim=dbkit_settings.user_claim):
                yield conn
                raise _Rollback
        except _Rollback:
            pass

    yield enter
    for conn in opened:
        conn.close()


class _Rollback(Exception):
    """Raised inside the scoped transaction so that as_role never commits."""


@pytest.fixture(scope="session")
def dbkit_rls_tables(dbkit_rls_db: DbUrl, dbkit_settings):
    """The tables with RLS in the seeded session database, with two tenants' rows sampled."""
    import psycopg

    from dbkit.testing.matrix import discover

    with psycopg.connect(dbkit_rls_db.conninfo, autocommit=True) as admin:
        return discover(admin, dbkit_settings)
