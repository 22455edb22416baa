"""Test harness: a real PostgreSQL with vector, timescaledb and pgcrypto.

The server is the one of dbkit's own pytest plugin (``dbkit_postgresql`` in dbkit/testing/plugin.py),
started once per session: ``DBKIT_TEST_SERVER_URL`` (a superuser URL: nothing is started), else
pytest-postgresql's process fixture as a normal user, else (root: CI, these machines) dbkit's embedded
cluster run as the ``postgres`` OS user.  The plugin's fixtures (``dbkit_db``, ``dbkit_seeded_db``,
``as_role`` …) and the suite's ``postgresql`` below all use it.

On top of it, pytest-postgresql's factories build a template database with the extensions once per
session (``pg_template``), and every test that asks for ``postgresql`` gets a fresh copy
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

from dbkit import _db as db
from dbkit._urls import DbUrl
from dbkit.testing.plugin import Server

EXTENSIONS = ("vector", "timescaledb", "pgcrypto")
collect_ignore = ["examples"]  # example projects run through pytester, not directly


def make_shared_tmpdir(prefix: str) -> Path:
    """A temp dir the ``postgres`` OS user can reach (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def _load_extensions(host: str, port: int, user: str, dbname: str, password: str | None, **_: object) -> None:
    with db.connect(Server(host, int(port), user, password).url(dbname), autocommit=True) as conn:
        db.ensure_extensions(conn, EXTENSIONS)


pg_template = factories.postgresql_noproc(depends_on="dbkit_postgresql", dbname="dbkit_test", load=[_load_extensions])
postgresql = factories.postgresql("pg_template")


@pytest.fixture
def pg_url(postgresql: psycopg.Connection) -> DbUrl:
    """URL of this test's fresh database (has the extensions, nothing else)."""
    info = postgresql.info
    return Server(info.host, info.port, info.user, info.password).url(info.dbname)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir the postgres OS user can reach, removed afterwards."""
    path = make_shared_tmpdir("dbkit-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def timescale_edition() -> str:
    """``community`` when the installed TimescaleDB has its TSL module (compression, policies, continuous
    aggregates, jobs), else ``apache``; read from the files, no server needed."""
    from dbkit._dev_binaries import find_bindir, server_layout

    layout = server_layout(find_bindir())
    return "community" if any(layout.pkglibdir.glob("timescaledb-tsl-*.so")) else "apache"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "community: needs TimescaleDB's community edition (compression, policies, "
                                       "continuous aggregates, jobs); skipped on the Apache edition")


def _community_tests(items: list[pytest.Item]) -> None:
    """Tests marked ``community`` skip on an Apache build, with the reason, unless DBKIT_TIMESCALEDB_SOURCE says the
    community edition was to be built (CI): then skipping them would hide that they never ran, so the run fails."""
    marked = [item for item in items if item.get_closest_marker("community")]
    if not marked or timescale_edition() == "community":
        return
    if os.environ.get("DBKIT_TIMESCALEDB_SOURCE"):
        raise pytest.UsageError(
            f"DBKIT_TIMESCALEDB_SOURCE is set but the installed TimescaleDB is the Apache edition: {len(marked)} "
            "tests need the community edition; run scripts/bootstrap (it builds it from that source)")
    skip = pytest.mark.skip(reason="needs TimescaleDB's community edition (this is the Apache build); set "
                                   "DBKIT_TIMESCALEDB_SOURCE to its full source and run scripts/bootstrap")
    for item in marked:
        item.add_marker(skip)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test is ``unit`` or ``integration``: a test using the database is integration."""
    _community_tests(items)
    db_fixtures = {"s3_endpoint", "bucket", "postgresql", "pg_url", "pg_template", "migrated_url", "migrated_template",
                   "dbkit_db", "dbkit_seeded_db", "dbkit_rls_db", "as_role", "dbkit_server", "dbkit_postgresql"}
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
            [sys.executable, "-m", "dbkit", *args], check=False, cwd=self.cwd, env=clean_env(**(env or {})),
            capture_output=True, text=True, timeout=timeout,
        )


@pytest.fixture
def dbkit_cli(tmp_path: Path) -> DbkitRunner:
    """``dbkit_cli("check", env={...})`` runs the CLI in an empty project directory."""
    return DbkitRunner(tmp_path)


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


# --------------------------------------------------------------------- PgBouncer (Debian's package)

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def start_pgbouncer(ini: Path, port: int):
    """Start PgBouncer with ``ini`` (its files beside it) and wait until it listens on ``port``; as root it runs
    as ``postgres`` (it refuses root).  Returns the process; the test stops it."""
    import socket
    import subprocess
    import time

    cmd = [PGBOUNCER, str(ini)]
    if os.geteuid() == 0:
        for path in (ini.parent, *ini.parent.iterdir()):
            shutil.chown(path, "postgres")
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"pgbouncer did not start: {proc.stdout.read().decode()[-800:]}")
