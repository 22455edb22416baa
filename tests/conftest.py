"""Test harness: a real PostgreSQL with vector, timescaledb and pgcrypto.

* Not root: pytest-postgresql's own process fixture starts the server.
* Root (CI, these machines): PostgreSQL refuses to run as root, so the server
  is dbkit's own :class:`~dbkit.dev.DevCluster`, which runs it as the
  ``postgres`` OS user, used through pytest-postgresql's noproc fixture.
* ``DBKIT_TEST_SERVER_URL`` set (a superuser URL): that server, started by you
  (docker compose, a CI service container); nothing is started.

Either way a template database with the extensions is built once per session
(``pg_template``) and every test that asks for ``postgresql`` gets a fresh copy
(``CREATE DATABASE … TEMPLATE``: milliseconds, not a migration run).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor

from dbkit import db
from dbkit.dev import DevCluster, find_bindir
from dbkit.urls import DbUrl, parse_database_url

EXTENSIONS = ("vector", "timescaledb", "pgcrypto")
collect_ignore = ["examples"]  # example projects run through pytester, not directly
# Speed over durability for throw-away test clusters, and no TimescaleDB background workers (they
# would connect to template databases and block CREATE DATABASE … TEMPLATE): the plugin's settings.
from dbkit.testing.plugin import TEST_SERVER_CONF  # noqa: E402
IS_ROOT = os.geteuid() == 0


def make_shared_tmpdir(prefix: str) -> Path:
    """A temp dir the ``postgres`` OS user can reach (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


pg_proc = factories.postgresql_proc(
    executable=str(find_bindir() / "pg_ctl"),
    port=None,
    postgres_options=" ".join(f"-c {line.replace(' ', '')}" for line in
                              ("shared_preload_libraries=timescaledb", *TEST_SERVER_CONF)),
)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[NoopExecutor]:
    """The session's PostgreSQL server (host, port, user)."""
    external = os.environ.get("DBKIT_TEST_SERVER_URL")
    if external:  # a server you run (e.g. the docker-compose or CI service container); a superuser URL
        u = parse_database_url(external, variable="DBKIT_TEST_SERVER_URL")
        server = NoopExecutor(host=u.hosts[0] if u.hosts else "127.0.0.1", port=u.port or 5432,
                              user=u.user or "postgres", password=u.password, dbname="tests", options="")
        with db.connect(u.with_dbname("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (server.template_dbname,)).fetchone():
                conn.execute(f'CREATE DATABASE "{server.template_dbname}"')
        yield server
        return
    if not IS_ROOT:
        yield request.getfixturevalue("pg_proc")
        return
    base = make_shared_tmpdir("dbkit-test-pg-")
    cluster = DevCluster(base, extra_conf=TEST_SERVER_CONF)
    status = cluster.up()
    server = NoopExecutor(host="127.0.0.1", port=status.port, user="postgres", password=None,
                          dbname="tests", options="")
    # pg_template clones the server's base template, as pytest-postgresql's process fixture provides.
    cluster.ensure_database(server.template_dbname)
    try:
        yield server
    finally:
        cluster.down(purge=True)
        shutil.rmtree(base, ignore_errors=True)


def _load_extensions(host: str, port: int, user: str, dbname: str, password: str | None, **_: object) -> None:
    url = parse_database_url(f"postgresql://{user}@{host}:{port}/{dbname}")
    with db.connect(url, autocommit=True) as conn:
        db.ensure_extensions(conn, EXTENSIONS)


pg_template = factories.postgresql_noproc(depends_on="pg_server", dbname="dbkit_test", load=[_load_extensions])
postgresql = factories.postgresql("pg_template")


@pytest.fixture
def pg_url(postgresql: psycopg.Connection) -> DbUrl:
    """URL of this test's fresh database (has the extensions, nothing else)."""
    info = postgresql.info
    return parse_database_url(f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}")


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir the postgres OS user can reach, removed afterwards."""
    path = make_shared_tmpdir("dbkit-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is ``unit`` or ``integration``: a test using the database is integration."""
    db_fixtures = {"s3_endpoint", "bucket", "postgresql", "pg_url", "pg_server", "pg_template", "migrated_url", "migrated_template",
                   "dbkit_db", "dbkit_seeded_db", "dbkit_rls_db", "as_role", "dbkit_server"}
    for item in items:
        if item.get_closest_marker("unit") or item.get_closest_marker("integration"):
            continue
        fixtures = set(getattr(item, "fixturenames", ()))
        item.add_marker(pytest.mark.integration if fixtures & db_fixtures else pytest.mark.unit)


def clean_env(**overrides: str) -> dict[str, str]:
    """The process environment without dbkit's variables, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DBKIT_", "DATABASE_URL", "S3_", "AWS_"))}
    env.update(overrides)
    return env


class DbkitRunner:
    """Runs the real ``dbkit`` CLI in a subprocess (real exit codes, real stderr)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120):
        import subprocess
        import sys

        return subprocess.run(
            [sys.executable, "-m", "dbkit", *args], cwd=self.cwd, env=clean_env(**(env or {})),
            capture_output=True, text=True, timeout=timeout,
        )


@pytest.fixture
def dbkit_cli(tmp_path: Path) -> DbkitRunner:
    """``dbkit_cli("check", env={...})`` runs the CLI in an empty project directory."""
    return DbkitRunner(tmp_path)


@pytest.fixture(scope="session")
def dbkit_server(pg_server: NoopExecutor):
    """dbkit's pytest plugin uses this suite's server (one cluster for everything)."""
    from dbkit.testing.plugin import Server

    return Server(pg_server.host, int(pg_server.port), pg_server.user, pg_server.password)


@pytest.fixture(scope="session")
def migrated_template(dbkit_template: str) -> str:
    """A database migrated to head once per session (the plugin's template)."""
    return dbkit_template


@pytest.fixture
def migrated_url(dbkit_db: DbUrl) -> DbUrl:
    """A fresh database at head, dropped after the test."""
    return dbkit_db


# --------------------------------------------------------------------- S3 on loopback (moto's server)

ACCESS_KEY = "AKIADBKITTEST"
SECRET_KEY = "dbkit-test-secret-Sh0uldNeverPrint"
REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint on 127.0.0.1 (moto's threaded server), for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str):
    """A plain boto3 client to set up buckets and inspect what the backend did."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)


@pytest.fixture
def bucket(s3_admin) -> str:
    import uuid

    name = f"dbkit-test-{uuid.uuid4().hex[:12]}"
    s3_admin.create_bucket(Bucket=name)
    return name


