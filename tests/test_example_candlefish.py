"""examples/candlefish end to end (issue 14): Candlefish RTPM's telemetry on TimescaleDB (community edition),
isolated per organisation through tenant-scoped views, behind PgBouncer in transaction mode, with daily
backups that write Prometheus textfile metrics and prune by the team's retention, and a `dbkit check` a
monitor scrapes."""

from __future__ import annotations

import configparser
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest
from conftest import start_pgbouncer
from example_harness import example_env  # noqa: F401  (the fixture)

from dbkit.rls import scoped

pytestmark = [pytest.mark.community, pytest.mark.integration]

CLAIM = "rtpm.org_id"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(app):
    """The example's settings as its commands see them (DBKIT_ENV=test: the fake passwords of .env.test)."""
    from dbkit.config import load_settings

    return load_settings(environ=app.environ(), cwd=app.root)


def _pgbouncer(app, directory: Path) -> tuple[subprocess.Popen, int]:
    """PgBouncer with the example's own pgbouncer.ini (transaction mode, scram-sha-256), pointed at the example's
    database; its auth_file is what dbkit writes from the role model (the SCRAM verifiers of .env.test's
    passwords).  Only what cannot be the same here changes: the server's address, the port, the files."""
    from dbkit.roles._pgbouncer import userlist, write_userlist

    ini = configparser.ConfigParser()
    ini.read(app.root / "pgbouncer" / "pgbouncer.ini")
    assert ini["pgbouncer"]["pool_mode"] == "transaction" and ini["pgbouncer"]["auth_type"] == "scram-sha-256"
    port = _free_port()
    ini["databases"] = {"rtpm": f"host={app.server.hosts[0]} port={app.server.port} dbname={app.database.dbname}"}
    ini["pgbouncer"].update(listen_addr="127.0.0.1", listen_port=str(port), unix_socket_dir="",
                            auth_file=str(directory / "userlist.txt"), default_pool_size="2",
                            logfile=str(directory / "pgbouncer.log"), pidfile=str(directory / "pgbouncer.pid"))
    write_userlist(directory / "userlist.txt", userlist(_settings(app)))
    with open(directory / "pgbouncer.ini", "w") as f:
        ini.write(f)
    proc = start_pgbouncer(directory / "pgbouncer.ini", port)
    return proc, port


def _per_org(app) -> dict[str, int]:
    return {str(org): n for org, n in app.sql("SELECT org_id, count(*) FROM rtpm.readings GROUP BY 1")}


def _api_behind_pgbouncer(app, port: int) -> set[int]:
    """Two API clients per organisation share a pool of 2 server connections; each transaction sets its
    organisation (dbkit.rls.scoped) and must see exactly its readings and hourly rows, and nothing after."""
    expected, failures, backends = _per_org(app), [], set()
    password = _settings(app).password_for("rtpm_api")
    assert password and password.startswith("test-only-")

    def client(org: str) -> None:
        with psycopg.connect(host="127.0.0.1", port=port, dbname="rtpm", user="rtpm_api", password=password,
                             prepare_threshold=None, autocommit=True) as conn:  # PgBouncer 1.18: no prepared
            for _ in range(10):
                with scoped(conn, tenant_id=org, tenant_claim=CLAIM):
                    seen = dict(conn.execute("SELECT org_id::text, count(*) FROM rtpm.readings_scoped GROUP BY 1"))
                    hourly = dict(conn.execute("SELECT org_id::text, sum(samples) FROM rtpm.readings_hourly_scoped "
                                               "GROUP BY 1"))
                    backends.add(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
                    if seen != {org: expected[org]} or hourly != {org: expected[org]}:
                        failures.append(f"{org[:8]} saw {seen} and hourly {hourly}")
                left = conn.execute(f"SELECT current_setting('{CLAIM}', true), "
                                    "(SELECT count(*) FROM rtpm.readings_scoped)").fetchone()
                if left[0] not in (None, "") or left[1]:
                    failures.append(f"after {org[:8]}'s transaction: claim {left[0]!r}, {left[1]} readings visible")

    threads = [threading.Thread(target=client, args=(org,)) for org in sorted(expected) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not failures, "\n".join(failures[:10])
    return backends


def test_candlefish_end_to_end(example_env, tmp_path):  # noqa: F811
    app = example_env("candlefish")
    app.lifecycle()

    # the audit covers the scoped views and every relation TimescaleDB made (chunks, the aggregate)
    audit = app.run("rls", "audit").stdout.strip().splitlines()[-1]
    assert "checked in rtpm (enforce role rtpm_api)" in audit and "0 errors, 0 warnings" in audit, audit
    assert app.sql("SELECT count(*) FROM rtpm.readings")[0][0] == 3000
    assert len(_per_org(app)) == 3

    # the API behind the example's PgBouncer (transaction mode, its password checked against the verifier dbkit
    # set): organisations never see each other
    shared = Path(str(app.root.parent))  # reachable by the postgres OS user
    bouncer_dir = shared / "pgbouncer"
    bouncer_dir.mkdir()
    proc, port = _pgbouncer(app, bouncer_dir)
    try:
        assert 1 <= len(_api_behind_pgbouncer(app, port)) <= 2
        with pytest.raises(psycopg.OperationalError):  # PgBouncer checks the password, not just the name
            psycopg.connect(host="127.0.0.1", port=port, dbname="rtpm", user="rtpm_api", password="wrong",
                            connect_timeout=5).close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    # a week later: TimescaleDB's policies run (CALL run_job: the scheduler fails on this machine's
    # PostgreSQL 15.20, see the example's README); older chunks are compressed, nothing is past retention
    for (job,) in app.sql("SELECT job_id FROM timescaledb_information.jobs WHERE job_id >= 1000 ORDER BY 1"):
        app.sql(f"CALL run_job({job})")
    compressed = app.sql("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = 'rtpm' "
                         "AND hypertable_name = 'readings' AND is_compressed")[0][0]
    assert compressed >= 20

    # the daily backup as cron runs it (the example's Makefile): to S3 with textfile metrics, then retention
    target = f"s3://{app.bucket}/{app.name}"
    (first,) = [b["id"] for b in json.loads(app.run("backup", "list", "--from", target, "--json").stdout)["backups"]]
    metrics = tmp_path / "textfile" / "rtpm_db_backup.prom"
    daily = subprocess.run(["make", "-s", "db-backup-daily", f"DBKIT={sys.executable} -m dbkit",
                            f"METRICS_FILE={metrics}"], cwd=app.root, env=app.environ(DBKIT_BACKUP_URI=target),
                           capture_output=True, text=True, timeout=300)
    assert daily.returncode == 0, daily.stdout + daily.stderr
    prom = metrics.read_text()
    assert "dbkit_backup_status 1.0" in prom and "dbkit_backup_last_success_timestamp_seconds" in prom, prom
    # two backups (the lifecycle's and this one): on the same day (UTC), the daily retention keeps the newest
    listed = [b["id"] for b in json.loads(app.run("backup", "list", "--from", target, "--json").stdout)["backups"]]
    assert listed[0] != first and listed == ([listed[0]] if listed[0][:8] == first[:8] else [listed[0], first])

    # the compressed database and its aggregate restore identically
    into = f"{app.database.dbname}_daily"
    app.created.append(into)
    app.run("restore", "latest", "--from", target, "--into", into)
    restored = app.database.with_dbname(into)
    assert app.tables(restored) == app.tables()
    assert app.sql("SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'readings' "
                   "AND is_compressed", url=restored)[0][0] == compressed
    assert app.sql("SELECT sum(samples) FROM rtpm.readings_hourly", url=restored)[0][0] == 3000

    # what the monitor scrapes: healthy, with the newest backup's age
    out = app.run("check", "--prometheus", DBKIT_BACKUP_URI=target).stdout
    assert "dbkit_health_status 0.0" in out and "dbkit_backup_age_seconds" in out, out
