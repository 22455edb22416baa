"""`dbkit check` against real servers: the dev cluster, a test database, nothing at all."""

import json
import re
import socket
from pathlib import Path

import pytest

from dbkit import health
from dbkit.config import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dev_dir():
    """One dev cluster for this module, started by `dbkit check` itself."""
    from conftest import make_shared_tmpdir

    from dbkit.dev import DevCluster

    base = make_shared_tmpdir("dbkit-test-check-")
    yield base / "dev"
    DevCluster(base / "dev").down(purge=True)
    import shutil

    shutil.rmtree(base, ignore_errors=True)


def test_check_starts_and_reports_the_dev_cluster(dbkit_cli, dev_dir: Path):
    res = dbkit_cli("check", env={"DBKIT_DEV_DIR": str(dev_dir)})
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "status: healthy" in out
    assert re.search(r"database\s+ok\s+postgresql://postgres@127\.0\.0\.1:", out)
    assert "PostgreSQL 15" in out or "PostgreSQL 1" in out
    for ext in ("vector", "timescaledb", "pgcrypto"):
        assert f"extension {ext}" in out
    assert "; preloaded" in out
    assert re.search(rf"DBKIT_DEV_DIR\s+{re.escape(str(dev_dir))}\s+env", out)


def test_check_json_against_dev_cluster(dbkit_cli, dev_dir: Path):
    res = dbkit_cli("check", "--json", env={"DBKIT_DEV_DIR": str(dev_dir)})
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["status"] == "healthy" and report["version"]
    db = report["services"]["database"]
    assert db["status"] == "ok" and db["embedded"] is True and db["latency_ms"] >= 0
    assert db["server_version_num"] >= 150000 and db["database"] == "dbkit"
    ext = {i["name"]: i for i in report["services"]["extensions"]["items"]}
    assert set(ext) == {"vector", "timescaledb", "pgcrypto"}
    assert all(i["installed"] for i in ext.values())
    assert report["services"]["extensions"]["timescaledb_preloaded"] is True


def test_check_against_database_url(pg_url, dbkit_cli):
    res = dbkit_cli("check", "--json", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test"})
    assert res.returncode == 0, res.stdout
    report = json.loads(res.stdout)
    assert report["services"]["database"]["database"] == pg_url.dbname
    assert report["services"]["database"]["embedded"] is False


def test_extension_available_but_not_created_is_still_healthy(pg_url, tmp_path):
    import psycopg

    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        conn.execute("DROP EXTENSION pgcrypto")
    settings = load_settings(environ={"DATABASE_URL": pg_url.raw}, cwd=tmp_path)
    report = health.check(settings)
    item = next(i for i in report.services["extensions"]["items"] if i["name"] == "pgcrypto")
    assert item["installed"] is None and "migrations create it" in item["note"]
    assert report.status == "healthy"


def test_unavailable_extension_is_unhealthy_with_the_fix(pg_url, dbkit_cli):
    res = dbkit_cli("check", env={"DATABASE_URL": pg_url.raw, "DBKIT_EXTENSIONS": "vector,postgis_nonexistent"})
    assert res.returncode == 2
    assert "extension postgis_nonexistent  fail" in res.stdout
    assert "fix: install the 'postgis_nonexistent' extension on the database server" in res.stdout
    assert "status: unhealthy" in res.stdout


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_is_unhealthy_and_masked(dbkit_cli):
    url = f"postgresql://app:hunter2@127.0.0.1:{_closed_port()}/app"
    res = dbkit_cli("check", env={"DATABASE_URL": url})
    assert res.returncode == 2
    assert "hunter2" not in res.stdout + res.stderr
    assert "database    fail    cannot connect to postgresql://app:***@127.0.0.1:" in res.stdout
    assert "Connection refused" in res.stdout and "status: unhealthy" in res.stdout

    res = dbkit_cli("check", "--json", env={"DATABASE_URL": url})
    report = json.loads(res.stdout)
    assert res.returncode == 2 and report["status"] == "unhealthy"
    assert report["services"]["database"]["status"] == "fail"
    assert "hunter2" not in res.stdout


def test_dev_commands_via_cli(dbkit_cli, dev_dir: Path):
    env = {"DBKIT_DEV_DIR": str(dev_dir)}
    up = dbkit_cli("dev", "up", "--json", env=env)
    assert up.returncode == 0, up.stderr
    port = json.loads(up.stdout)["port"]
    status = dbkit_cli("dev", "status", env=env)
    assert status.returncode == 0 and status.stdout.startswith(f"running  postgresql://postgres@127.0.0.1:{port}/dbkit")
    url = dbkit_cli("dev", "url", env=env)
    assert url.stdout.strip() == f"postgresql://postgres@127.0.0.1:{port}/dbkit"
    psql = dbkit_cli("dev", "psql", "-At", "-c", "SELECT extname FROM pg_extension ORDER BY 1", env=env)
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.split() == ["pgcrypto", "plpgsql", "timescaledb", "vector"]
    down = dbkit_cli("dev", "down", env=env)
    assert down.returncode == 0 and down.stdout.startswith("stopped")
    stopped = dbkit_cli("dev", "status", "--json", env=env)
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False
