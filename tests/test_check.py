"""`dbkit check` against real servers: the dev cluster, a test database, nothing at all."""

import json
import re
import socket
from pathlib import Path

import pytest

from dbkit import _health as health
from dbkit.config import load_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dev_dir():
    """One dev cluster for this module, started by `dbkit check` itself."""
    from conftest import make_shared_tmpdir

    from dbkit._dev import DevCluster

    base = make_shared_tmpdir("dbkit-test-check-")
    yield base / "dev"
    DevCluster(base / "dev").down(purge=True)
    import shutil

    shutil.rmtree(base, ignore_errors=True)


REPO = Path(__file__).resolve().parents[1]


def test_check_starts_the_dev_cluster_degraded_then_healthy(dbkit_cli, dev_dir: Path):
    env = {"DBKIT_DEV_DIR": str(dev_dir), "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": str(dev_dir.parent / "backups")}
    res = dbkit_cli("check", env=env)
    out = res.stdout
    assert res.returncode == 1, out + res.stderr  # degraded: not migrated, no backup yet
    assert re.search(r"database\s+ok\s+postgresql://postgres@127\.0\.0\.1:", out)
    assert "PostgreSQL 1" in out and "; preloaded" in out
    for ext in ("vector", "timescaledb", "pgcrypto"):
        assert f"extension {ext}" in out
    assert re.search(r"migrations\s+warn\s+database at base, your migrations \(migrations\) at 0006; 6 pending; "
                     r"fix: run `dbkit migrate`", out)
    assert re.search(r"backups\s+warn\s+none complete", out)
    assert re.search(rf"DBKIT_DEV_DIR\s+{re.escape(str(dev_dir))}\s+env", out)
    assert "status: degraded" in out
    assert dbkit_cli("migrate", env=env).returncode == 0
    assert dbkit_cli("backup", env=env).returncode == 0
    healthy = dbkit_cli("check", "--json", env=env)
    assert healthy.returncode == 0, healthy.stdout
    report = json.loads(healthy.stdout)
    assert report["status"] == "healthy" and report["version"] and report["timestamp"]
    assert set(report["services"]) == {"environment", "database", "extensions", "connections", "roles", "migrations", "rls",
                                       "timescaledb", "storage", "backups"}
    assert all(s["status"] == "ok" for s in report["services"].values())
    db = report["services"]["database"]
    assert db["embedded"] is True and db["latency_ms"] >= 0 and db["server_version_num"] >= 150000
    assert report["services"]["extensions"]["timescaledb_preloaded"] is True
    assert report["services"]["migrations"]["current"] == ["0006"]
    assert report["services"]["rls"]["tables_checked"] == 6
    assert report["services"]["backups"]["complete"] == 1
    assert report["services"]["backups"]["last_status"] == "complete"
    # a later attempt without a manifest (failed or running) degrades it
    leftover = dev_dir.parent / "backups" / "29990101T000000Z-dead"
    leftover.mkdir()
    (leftover / "dump.pgdump.zst").write_bytes(b"partial")
    failed = json.loads(dbkit_cli("check", "--json", env=env).stdout)
    assert failed["status"] == "degraded"
    assert failed["services"]["backups"]["last_status"].startswith("incomplete (29990101T000000Z-dead, started ")
    assert failed["services"]["backups"]["unfinished"] == "29990101T000000Z-dead"
    leftover.joinpath("dump.pgdump.zst").unlink()
    leftover.rmdir()
    # an old backup makes it degraded; the Prometheus text format has the same verdict
    old = dbkit_cli("check", "--max-backup-age", "0.00001", "--prometheus", env=env)
    assert old.returncode == 1
    from prometheus_client.parser import text_string_to_metric_families

    samples = {(s.name, s.labels.get("service")): s.value
               for family in text_string_to_metric_families(old.stdout) for s in family.samples}
    assert samples[("dbkit_health_status", None)] == 1 and samples[("dbkit_service_status", "backups")] == 1
    assert samples[("dbkit_service_status", "database")] == 0 and samples[("dbkit_database_latency_ms", None)] >= 0


def test_check_against_database_url(pg_url, dbkit_cli):
    res = dbkit_cli("check", "--json", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test",
                                            "DBKIT_PROJECT_DIR": str(REPO)})
    assert res.returncode == 1, res.stdout  # reachable, but nothing migrated and no backup: degraded
    report = json.loads(res.stdout)
    assert report["services"]["migrations"]["status"] == "warn"
    assert report["services"]["rls"]["note"] == "not checked: migrations are pending"
    assert report["services"]["database"]["database"] == pg_url.dbname
    assert report["services"]["database"]["embedded"] is False


def test_extension_available_but_not_created_is_still_healthy(pg_url, tmp_path):
    import psycopg

    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        conn.execute("DROP EXTENSION pgcrypto")
    settings = load_settings(environ={"DATABASE_URL": pg_url.raw}, cwd=tmp_path)
    report = health.check(settings)
    extensions = report.services["extensions"]
    assert isinstance(extensions, health.Extensions)
    item = next(i for i in extensions.items if i.name == "pgcrypto")
    assert item.installed is None and "migrations create it" in item.note
    assert item.status == "ok" and extensions.status == "ok"


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
    assert re.search(r"database\s+fail\s+cannot connect to postgresql://app:\*\*\*@127\.0\.0\.1:", res.stdout)
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
    provisioned = json.loads(up.stdout)
    port = provisioned["port"]
    assert list(provisioned) == ["running", "base_dir", "data_dir", "socket_dir", "log_file", "port", "pid", "url",
                                 "version", "initialized", "notes", "database", "database_created",
                                 "extensions_created"]
    assert provisioned["running"] is True and provisioned["database"] == "dbkit"
    assert isinstance(provisioned["database_created"], bool) and isinstance(provisioned["extensions_created"], list)
    status = dbkit_cli("dev", "status", env=env)
    assert status.returncode == 0 and status.stdout.startswith(f"running  postgresql://postgres@127.0.0.1:{port}/dbkit")
    url = dbkit_cli("dev", "url", env=env)
    assert url.stdout.strip() == f"postgresql://postgres@127.0.0.1:{port}/dbkit"
    psql = dbkit_cli("dev", "psql", "-At", "-c", "SELECT extname FROM pg_extension ORDER BY 1", env=env)
    assert psql.returncode == 0, psql.stderr
    assert psql.stdout.split() == ["pgcrypto", "plpgsql", "timescaledb", "vector"]
    from dbkit._dev import DevCluster, provision

    again = provision(DevCluster(dev_dir), ("vector",))  # typed result; its as_dict() is `dev up --json`
    assert again.as_dict() == {**again.status.as_dict(), "database": "dbkit", "database_created": False,
                               "extensions_created": []}
    same = ("running", "base_dir", "data_dir", "socket_dir", "log_file", "port", "pid", "url", "database")
    assert {k: again.as_dict()[k] for k in same} == {k: provisioned[k] for k in same}
    down = dbkit_cli("dev", "down", env=env)
    assert down.returncode == 0 and down.stdout.startswith("stopped")
    stopped = dbkit_cli("dev", "status", "--json", env=env)
    assert stopped.returncode == 1 and json.loads(stopped.stdout)["running"] is False
