"""Issue 14's "Done means" for examples/cleanmatex: the whole lifecycle with the real CLI, then what its
document asks of the database side beyond it: every variable of its .env validated (`dbkit config check`,
`dbkit check`), the health JSON of its document (`dbkit check --format health`), `dbkit reset`, and the
application behind the example's own PgBouncer configuration (transaction pooling, Supabase-style claims)."""

import configparser
import json
import socket
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import start_pgbouncer
from example_harness import example_env  # noqa: F401  (the fixture)

from dbkit.rls import Claims, scoped

pytestmark = pytest.mark.integration

TABLES = ("tenants", "customers", "orders", "order_items", "user_preferences")


def _counts(app, url=None) -> dict[str, int]:
    return {t: app.sql(f"SELECT count(*) FROM public.{t}", url=url)[0][0] for t in TABLES}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_pgbouncer(app, port: int) -> subprocess.Popen:
    """The example's infra/pgbouncer/pgbouncer.ini as shipped, pointed at the test server: only where it
    listens, where PostgreSQL is and where its files are change.  The userlist holds the roles' SCRAM
    verifiers (`dbkit roles userlist`)."""
    run = app.root.parent / "pgbouncer"
    run.mkdir()
    ini = configparser.ConfigParser()
    ini.read(app.root / "infra/pgbouncer/pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction" and ini["pgbouncer"]["auth_type"] == "scram-sha-256"
    ini["databases"] = {app.database.dbname: f"host={app.server.hosts[0]} port={app.server.port} "
                                             f"dbname={app.database.dbname}"}
    ini["pgbouncer"].update(listen_addr="127.0.0.1", listen_port=str(port), auth_file=str(run / "userlist.txt"),
                            logfile=str(run / "pgbouncer.log"), pidfile=str(run / "pgbouncer.pid"))
    with (run / "pgbouncer.ini").open("w") as fh:
        ini.write(fh)
    app.run("roles", "userlist", "--output", str(run / "userlist.txt"))  # as the README says
    users = (run / "userlist.txt").read_text().splitlines()
    assert [u.split()[0] for u in users] == ['"cmx_app"', '"cmx_service"', '"cmx_readonly"']
    assert all("SCRAM-SHA-256$" in u for u in users)
    proc = start_pgbouncer(run / "pgbouncer.ini", port)
    return proc


def test_cleanmatex_end_to_end(example_env):  # noqa: F811
    app = example_env("cleanmatex")
    app.lifecycle()
    # its retention (README, Makefile db-prune): the one backup is kept
    target = f"s3://{app.bucket}/{app.name}"
    app.run("backup", "prune", "--from", target, "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "6",
            "--apply")
    assert len(json.loads(app.run("backup", "list", "--from", target, "--json").stdout)["backups"]) == 1

    # every variable of the document's .env.example is declared; .env.test's fake values are all valid
    checked = app.run("config", "check", "--json")
    report = json.loads(checked.stdout)
    assert report["ok"] and {v["name"] for v in report["variables"]} >= {"REDIS_URL", "JWT_SECRET", "APP_PORT"}
    bad = app.run("config", "check", ok=False, JWT_SECRET="change-me-in-production", APP_PORT="http",
                  REDIS_URL="localhost:6379")
    assert bad.returncode == 2 and "change-me-in-production" not in bad.stdout + bad.stderr
    assert [line.split(" ", 1)[0] for line in bad.stderr.strip().splitlines()] == ["REDIS_URL", "APP_PORT",
                                                                                   "JWT_SECRET"]

    # the application behind the shipped PgBouncer config, as cmx_app with its password: claims per transaction
    port = _free_port()
    proc = _start_pgbouncer(app, port)
    try:
        pooled = f"postgresql://cmx_app:test-app-password@127.0.0.1:{port}/{app.database.dbname}"  # .env.test's
        (tenant, orders), = app.sql("SELECT tenant_org_id, count(*) FROM orders GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1")
        claims = Claims("jwt", jwt_tenant_key="tenant_org_id")  # the example's [tool.dbkit] RLS model
        with psycopg.connect(pooled, prepare_threshold=None) as conn:
            with scoped(conn, tenant_id=tenant, claims=claims):
                assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == orders
                assert conn.execute("SELECT count(DISTINCT tenant_org_id) FROM orders").fetchone()[0] == 1
            assert conn.execute("SELECT count(*) FROM orders").fetchone()[0] == 0  # no claim left behind
            assert conn.execute("SELECT current_user").fetchone()[0] == "cmx_app"
        # dbkit check through the pool as the application's role (its migrations check goes direct), in the
        # health JSON of the document: status, timestamp, services up/down with latency, version
        via_pool = app.run("check", "--format", "health", DATABASE_URL=pooled, DIRECT_DATABASE_URL=app.database.raw,
                           DBKIT_PGBOUNCER_PORTS=str(port), DBKIT_BACKUP_URI=target)
        health = json.loads(via_pool.stdout)
        assert list(health) == ["status", "timestamp", "services", "version"] and health["status"] == "healthy"
        for name in ("database", "storage"):
            assert health["services"][name]["status"] == "up" and health["services"][name]["latency"] >= 0
        assert all(s["status"] == "up" for s in health["services"].values()), health
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    # dbkit reset: drop, recreate, migrate to head, seed (the document's scripts/dev/reset-db.sh)
    before = _counts(app)
    reset = app.run("reset", "--profile", "tiny")
    assert _counts(app) == before and all(before.values()), reset.stdout


@pytest.mark.unit
def test_cleanmatex_ships_its_services_and_documents_every_variable():
    """No Docker here: docker-compose.yml is checked as data; .env.example names every declared variable with a
    placeholder, tests/fake_values.txt gives every required one."""
    import tomllib

    import yaml

    from dbkit.config import parse_dotenv

    root = Path(__file__).resolve().parents[1] / "examples" / "cleanmatex"
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    assert {"postgres", "pgbouncer", "redis", "minio", "minio-init"} <= set(services)
    for name in ("postgres", "pgbouncer", "redis", "minio"):
        assert services[name]["healthcheck"]["test"], name
        assert all(str(p).startswith("127.0.0.1:") for p in services[name]["ports"]), name
    assert "./infra/pgbouncer/pgbouncer.ini:/etc/pgbouncer/pgbouncer.ini:ro" in services["pgbouncer"]["volumes"]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["dbkit"]["variables"]
    example = parse_dotenv((root / ".env.example").read_text())
    assert set(declared) <= set(example)
    test = parse_dotenv((root / "tests" / "fake_values.txt").read_text())
    assert {n for n, d in declared.items() if d.get("required", True) is True} <= set(test)
