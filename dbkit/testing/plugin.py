"""dbkit's pytest plugin (registered through the ``pytest11`` entry point).

One test-server harness, built on pytest-postgresql's factories and janitor (``pip install 'dbkit[testing]'``).
This module imports nothing from pytest-postgresql: pytest starts without it, and the fixtures then fail with
one line saying what to install.

``dbkit_postgresql``      the session's PostgreSQL server, started once, as pytest-postgresql's executor (so it can
                          be the ``depends_on`` of pytest-postgresql's ``postgresql_noproc`` factory):
                          ``DBKIT_TEST_SERVER_URL`` set (a superuser URL): that server, nothing is started;
                          a normal user: pytest-postgresql's process fixture (``postgresql_proc``);
                          root (PostgreSQL refuses to run as root): dbkit's embedded cluster, run as the
                          ``postgres`` OS user, used as pytest-postgresql's no-process server
``dbkit_server``          the same server as a :class:`Server` (``.url(dbname, user=…)``); the dbkit fixtures below
                          use it: override it in conftest.py to bring your own
``dbkit_settings``        the project's settings (``[tool.dbkit]`` of the rootdir)
``dbkit_template``        a database migrated to head once per session, used as a TEMPLATE
``dbkit_db``              a fresh copy of it per test (a ``DbUrl``)
``dbkit_seeded_template`` / ``dbkit_seeded_db``  the same, seeded with the tiny profile (several tenants); a project
                          without a ``seeds/`` directory has nothing to seed: they are the migrated database
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
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dbkit._urls import DbUrl, parse_database_url

TEST_SERVER_CONF = (
    "fsync = off",
    "synchronous_commit = off",
    "full_page_writes = off",
    "timescaledb.max_background_workers = 0",  # its workers would hold connections to template databases
)
MISSING_PYTEST_POSTGRESQL = "dbkit's pytest fixtures need pytest-postgresql: pip install 'dbkit[testing]'"
PROC_FIXTURE = "dbkit_postgresql_proc"


def _require_pytest_postgresql() -> None:
    """Fail the fixture with one line when pytest-postgresql cannot be imported."""
    try:
        import pytest_postgresql  # noqa: F401
    except ImportError:
        pass
    else:
        return
    pytest.fail(MISSING_PYTEST_POSTGRESQL, pytrace=False)  # outside the except: no chained ModuleNotFoundError


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """dbkit's own errors (no server programs, a malformed URL) as one line, not a traceback."""
    from dbkit.errors import DbkitError

    try:
        yield
    except DbkitError as exc:
        failure = str(exc)
    else:
        return
    pytest.fail(f"dbkit's test server: {failure}", pytrace=False)


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


def _register_proc_fixture(config: pytest.Config, settings) -> str:
    """pytest-postgresql's process fixture, made when first needed (its ``pg_ctl`` and whether TimescaleDB can be
    preloaded come from the settings and the installed server) and registered as a plugin; returns its name."""
    if config.pluginmanager.get_plugin(PROC_FIXTURE) is None:
        from pytest_postgresql import factories

        from dbkit._dev import find_bindir, server_layout

        layout = server_layout(find_bindir(settings.pg_bindir))
        preload = ("shared_preload_libraries = timescaledb", "timescaledb.telemetry_level = off") \
            if layout.has_extension("timescaledb") else ()
        options = " ".join(f"-c {line.replace(' ', '')}" for line in (*preload, *TEST_SERVER_CONF))  # pg_ctl -o
        holder = types.ModuleType(PROC_FIXTURE)
        setattr(holder, PROC_FIXTURE, factories.postgresql_proc(
            executable=str(layout.bindir / "pg_ctl"), port=None, postgres_options=options))
        config.pluginmanager.register(holder, PROC_FIXTURE)
    return PROC_FIXTURE


def _noproc_executor(request: pytest.FixtureRequest, host: str, port: int, user: str, password: str | None):
    """pytest-postgresql's no-process executor for a server started elsewhere, with its base template database
    (the one pytest-postgresql's ``postgresql_noproc(depends_on=…)`` clones), as its process fixture provides."""
    from psycopg import sql
    from pytest_postgresql.config import get_config
    from pytest_postgresql.executors import NoopExecutor

    from dbkit import _db as db

    server = NoopExecutor(host=host, port=port, user=user, password=password, options="",
                          dbname=get_config(request).dbname)
    with db.connect(Server(host, port, user, password).url(server.maintenance_dbname), autocommit=True) as conn:
        if not db.database_exists(conn, server.template_dbname):  # kept: other sessions may share the server
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(server.template_dbname)))
    return server


@pytest.fixture(scope="session")
def dbkit_postgresql(request: pytest.FixtureRequest, dbkit_settings) -> Iterator[Any]:
    """The session's PostgreSQL server as pytest-postgresql's executor (host, port, user, password,
    template_dbname), started once: DBKIT_TEST_SERVER_URL, else pytest-postgresql's process fixture as a normal
    user, else (root) dbkit's embedded cluster run as the ``postgres`` OS user."""
    _require_pytest_postgresql()
    env_url = os.environ.get("DBKIT_TEST_SERVER_URL")
    if env_url:
        with _one_line_errors():
            u = parse_database_url(env_url, variable="DBKIT_TEST_SERVER_URL")
            server = _noproc_executor(request, u.hosts[0] if u.hosts else "127.0.0.1", u.port or 5432,
                                      u.user or "postgres", u.password)
        yield server
        return
    if os.geteuid() != 0:
        with _one_line_errors():
            name = _register_proc_fixture(request.config, dbkit_settings)
        yield request.getfixturevalue(name)
        return
    from dbkit._dev import DevCluster

    base = Path(tempfile.mkdtemp(prefix="dbkit-pytest-", dir="/tmp"))
    base.chmod(0o755)  # the postgres OS user must reach it
    cluster = DevCluster(base / "pg", bindir=dbkit_settings.pg_bindir, extra_conf=TEST_SERVER_CONF)
    try:
        with _one_line_errors():
            status = cluster.up()
        yield _noproc_executor(request, "127.0.0.1", status.port, "postgres", None)
    finally:
        with contextlib.suppress(Exception):
            cluster.down(purge=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dbkit_server(dbkit_postgresql) -> Server:
    """The server the dbkit fixtures use (``dbkit_postgresql``).  Override this fixture to bring your own."""
    p = dbkit_postgresql
    return Server(str(p.host), int(p.port), p.user, p.password or None)


@pytest.fixture(scope="session")
def dbkit_settings(request: pytest.FixtureRequest):
    from dbkit.config import load_settings

    return load_settings(cwd=Path(str(request.config.rootpath)))


def settings_for(settings, url: DbUrl):
    """``settings`` pointed at ``url`` (DBKIT_ENV=test)."""
    return dataclasses.replace(settings, database_url=url, env="test")


def _janitor(server: Server, name: str, template: str | None, *, as_template: bool = False):
    _require_pytest_postgresql()
    from pytest_postgresql.janitor import DatabaseJanitor

    return DatabaseJanitor(user=server.user, host=server.host, port=server.port, dbname=name,
                           template_dbname=template, password=server.password, as_template=as_template)


@contextlib.contextmanager
def _template(server: Server, name: str, source: str | None, build) -> Iterator[str]:
    janitor = _janitor(server, name, source, as_template=True)
    janitor.drop()
    with janitor:
        build(server.url(name))
        import psycopg

        from dbkit.testing._templates import seal

        with psycopg.connect(server.url("postgres").conninfo, autocommit=True) as admin:
            seal(admin, name)  # TimescaleDB's scheduler would connect to it and make copies fail (55006)
        yield name


@pytest.fixture(scope="session")
def dbkit_template(dbkit_server: Server, dbkit_settings) -> Iterator[str]:
    """Name of a database migrated to head once per session (a TEMPLATE)."""
    from dbkit.migrate import _runner as runner

    name = f"dbkit_tmpl_{os.getpid()}"
    with _template(dbkit_server, name, None, lambda url: runner.upgrade(settings_for(dbkit_settings, url))):
        yield name


@pytest.fixture(scope="session")
def dbkit_seeded_template(dbkit_server: Server, dbkit_settings, dbkit_template: str) -> Iterator[str]:
    """Name of a TEMPLATE at head seeded with the tiny profile (several tenants, every tenant table).

    A project without ``seeds/`` has nothing to seed: this is then ``dbkit_template`` itself."""
    from dbkit.seed import _engine as engine

    if not (dbkit_settings.project_dir / "seeds").is_dir():
        yield dbkit_template
        return
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
    """``enforce`` / ``bypass`` / ``readonly`` / ``owner`` -> the (first) configured role of that kind;
    other names as given."""
    if role not in ("owner", "enforce", "bypass", "readonly"):
        return role
    names = getattr(settings, f"role_{role}")
    if isinstance(names, str):
        return names
    if not names:
        pytest.skip(f"the project has no {role} role (DBKIT_ROLE_{role.upper()}=none)")
    return names[0]


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

    from dbkit.rls import claims, scoped

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
        with scoped(conn, tenant_id=tenant, user_id=user, role=set_role, claims=claims(dbkit_settings)):
            yield conn
            raise psycopg.Rollback  # ends scoped's transaction with a rollback: as_role never commits

    yield enter
    for conn in opened:
        conn.close()


@pytest.fixture(scope="session")
def dbkit_rls_tables(dbkit_rls_db: DbUrl, dbkit_settings):
    """The tables with RLS in the seeded session database, with two tenants' rows sampled."""
    import psycopg

    from dbkit.testing._matrix import discover

    with psycopg.connect(dbkit_rls_db.conninfo, autocommit=True) as admin:
        return discover(admin, dbkit_settings)
