"""Which TimescaleDB edition the tests run on: the files say it, the server agrees, and the community
edition's features really work here (CI builds it from the vendored source: .ci/run)."""

import psycopg
import pytest

from tests.conftest import timescale_edition


def test_the_server_reports_the_installed_edition(pg_url):
    with psycopg.connect(pg_url.conninfo) as conn:
        license_ = conn.execute("SHOW timescaledb.license").fetchone()[0]
    assert license_ == {"community": "timescale", "apache": "apache"}[timescale_edition()]


@pytest.mark.community
def test_compression_works_on_the_community_edition(pg_url):
    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE readings (time timestamptz NOT NULL, sensor int NOT NULL, value float8)")
        conn.execute("SELECT create_hypertable('readings', by_range('time', INTERVAL '1 day'))")
        conn.execute("INSERT INTO readings SELECT t, (random() * 10)::int, random() "
                     "FROM generate_series(now() - INTERVAL '5 days', now(), INTERVAL '1 minute') t")
        conn.execute("ALTER TABLE readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor')")
        before = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        compressed = conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c").fetchone()[0]
        assert compressed >= 5
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == before
        stats = conn.execute("SELECT number_compressed_chunks FROM hypertable_compression_stats('readings')")
        assert stats.fetchone()[0] == compressed


# --------------------------------------------------------------------- a server of each edition of its own

import contextlib  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from migrate_helpers import REPO, q, settings_for  # noqa: E402

from dbkit import _health as health  # noqa: E402
from dbkit._dev import DevCluster  # noqa: E402
from dbkit._urls import parse_database_url  # noqa: E402
from tests.conftest import make_shared_tmpdir  # noqa: E402


@contextlib.contextmanager
def _cluster(*conf: str):
    base = make_shared_tmpdir("dbkit-edition-")
    cluster = DevCluster(base / "pg", extra_conf=conf)
    try:
        status = cluster.up()
        yield parse_database_url(f"postgresql://postgres@127.0.0.1:{status.port}/postgres")
    finally:
        with contextlib.suppress(Exception):
            cluster.down(purge=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def apache_server():
    """A server started with timescaledb.license = apache: what Debian's package (and any Apache-only build) is."""
    with _cluster("timescaledb.license = 'apache'") as url:
        yield url


def _fresh(server, name: str):
    q(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    q(server, f'CREATE DATABASE "{name}"')
    return server.with_dbname(name)


COMMUNITY_REVISION = '''\
"""compress readings after a week

Revision ID: 0002
"""
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE app.readings SET (timescaledb.compress)")
    op.add_compression_policy("readings", compress_after="7 days", schema="app")


def downgrade() -> None:
    pass
'''
FIRST_REVISION = '''\
"""readings

Revision ID: 0001
"""
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    op.execute("CREATE TABLE app.readings (time timestamptz NOT NULL, value float8)")
    op.create_hypertable("readings", "time", schema="app")


def downgrade() -> None:
    op.execute("DROP SCHEMA app CASCADE")
'''


def _project(root: Path) -> Path:
    (root / "pyproject.toml").write_text('[tool.dbkit]\nextensions = ["timescaledb"]\n')
    versions = root / "migrations" / "versions"
    versions.mkdir(parents=True)
    (root / "migrations" / "env.py").write_text("from dbkit.migrate.env import run\n\nrun(target_metadata=None)\n")
    shutil.copy(REPO / "migrations" / "script.py.mako", root / "migrations" / "script.py.mako")
    (versions / "0001_readings.py").write_text(FIRST_REVISION)
    (versions / "0002_compress.py").write_text(COMMUNITY_REVISION)
    return root


def _dbkit(project: Path, url, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url.raw, "DBKIT_ENV": "test", "HOME": str(project)}
    return subprocess.run([sys.executable, "-m", "dbkit", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)


def test_a_community_revision_on_an_apache_server_is_refused_before_any_ddl(apache_server, tmp_path):
    url = _fresh(apache_server, "edition_refusal")
    project = _project(tmp_path)
    out = _dbkit(project, url, "migrate")
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert "revision 0002 (0002_compress.py) uses TimescaleDB's community edition" in lines[0]
    assert "Apache-2 edition" in lines[0] and "DBKIT_TIMESCALEDB_SOURCE" in lines[0] and "Traceback" not in out.stderr
    # before any DDL: not even revision 0001, the roles or dbkit's schema
    assert q(url, "SELECT to_regclass('app.readings'), to_regnamespace('dbkit')") == [(None, None)]
    # up to the revision before it is fine
    assert _dbkit(project, url, "migrate", "--to", "0001").returncode == 0
    assert q(url, "SELECT to_regclass('app.readings') IS NOT NULL") == [(True,)]


def test_the_reference_schema_works_on_the_apache_edition(apache_server):
    url = _fresh(apache_server, "edition_reference")
    settings = settings_for(url)
    from dbkit.migrate import _runner as runner

    assert [r.revision for r in runner.upgrade(settings).applied] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    service = health.check(settings).services["timescaledb"]
    assert (service.status, service.edition, service.jobs) == ("ok", "apache", ())
    assert "Apache-2 edition" in service.note


JOB_PROC = """
CREATE PROCEDURE public.flaky(job_id int, config jsonb) LANGUAGE plpgsql AS $$
BEGIN
  IF (config->>'fail')::bool THEN RAISE EXCEPTION 'flaky job failed on purpose'; END IF;
END $$
"""


@pytest.mark.community
def test_check_shows_the_edition_and_failed_jobs():
    """A community server with its job scheduler running (the test server has none): a job that fails shows."""
    with _cluster() as server:
        url = _fresh(server, "edition_jobs")
        q(url, "CREATE EXTENSION timescaledb")
        q(url, JOB_PROC)
        # the scheduler never runs the good job (run by hand): it cannot fail behind the test's back
        ok = q(url, "SELECT add_job('public.flaky', INTERVAL '1 hour', config => '{\"fail\": false}', "
                    "scheduled => false)")[0][0]
        bad = q(url, "SELECT add_job('public.flaky', INTERVAL '1 second', config => '{\"fail\": true}')")[0][0]
        q(url, f"CALL run_job({ok})")

        def bad_job(what: str) -> bool:
            return q(url, f"SELECT coalesce(bool_or({what}), false) FROM timescaledb_information.job_stats "
                          f"WHERE job_id = {bad}")[0][0]

        deadline = time.monotonic() + 120  # the scheduler runs it within seconds; the bound only ends a hang
        while not bad_job("total_failures > 0"):
            assert time.monotonic() < deadline, "the job scheduler never ran the failing job"
            time.sleep(0.5)
        # then paused, and read once its last run has ended: the library's check and the CLI's see one state
        q(url, f"SELECT alter_job({bad}, scheduled => false)")
        while not bad_job("job_status = 'Paused' AND last_run_status = 'Failed'"):
            assert time.monotonic() < deadline, "the failing job's last run never ended"
            time.sleep(0.2)
        settings = settings_for(url, DBKIT_EXTENSIONS="timescaledb")
        service = health.check(settings).services["timescaledb"]
        assert (service.status, service.edition) == ("warn", "community")
        jobs = {j.job_id: j for j in service.jobs}
        assert {ok, bad} <= set(jobs) and jobs[bad].last_run_status == "Failed" and jobs[bad].total_failures >= 1
        assert jobs[bad].last_successful_finish is None  # never succeeded (TimescaleDB says -infinity)
        failed = sorted(j.job_id for j in service.jobs if j.last_run_status == "Failed")
        assert service.hint.startswith(f"job {failed[0]} (User-Defined Action [{failed[0]}]) failed its last run")
        assert "timescaledb_information.job_errors" in service.hint
        out = _dbkit(REPO, url, "check")
        assert f"community edition; {len(service.jobs)} jobs, {len(failed)} failed" in out.stdout, out.stdout
