"""Safety rails, each proved against a real server with a purpose-built project."""

import json
import os
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from migrate_helpers import make_project, q, revision, settings_for

from dbkit.migrate import _runner as runner
from dbkit.migrate._runner import MigrationFailed

pytestmark = pytest.mark.integration

# Tables go into the app schema: the owner role may not create in public (PostgreSQL 15+).
CREATE_T = revision("0001", None, """
    op.execute('CREATE SCHEMA IF NOT EXISTS app')
    op.execute('CREATE TABLE app.rails_t (id int PRIMARY KEY, v int)')
""", "op.execute('DROP TABLE app.rails_t')", doc="create rails_t")



def test_failing_revision_rolls_back_entirely_and_names_revision_and_statement(tmp_path, pg_url):
    project = make_project(tmp_path, {
        "0001_t.py": CREATE_T,
        "0002_bad.py": revision("0002", "0001", """
            op.execute('CREATE TABLE app.rails_half (id int)')
            op.execute('INSERT INTO app.rails_t (id, v) VALUES (1, 1)')
            op.execute('ALTER TABLE app.rails_t ADD COLUMN broken no_such_type')
        """, doc="half-done revision"),
    })
    settings = settings_for(pg_url, project)
    with pytest.raises(MigrationFailed) as err:
        runner.upgrade(settings)
    msg = str(err.value)
    assert msg.startswith("revision 0002 (0002_bad.py) failed and was rolled back (earlier revisions stay applied)")
    assert 'type "no_such_type" does not exist [SQLSTATE 42704]' in msg
    assert "statement: ALTER TABLE app.rails_t ADD COLUMN broken no_such_type" in msg
    assert runner.status(settings).current == ["0001"]  # the earlier revision stays applied
    assert q(pg_url, "SELECT to_regclass('app.rails_half')") == [(None,)]  # nothing of 0002 is left
    assert q(pg_url, "SELECT count(*) FROM app.rails_t") == [(0,)]


def test_failing_revision_via_cli_is_one_line_exit_1(tmp_path, pg_url, dbkit_cli):
    make_project(tmp_path, {"0001_t.py": CREATE_T,
                            "0002_bad.py": revision("0002", "0001", "op.execute('SELEC 1')", doc="typo")})
    res = dbkit_cli("migrate", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(tmp_path)})
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("dbkit: error: revision 0002 (0002_bad.py) failed and was rolled back")
    assert "statement: SELEC 1" in last and "Traceback" not in res.stderr


def test_lock_timeout_names_the_blocking_session(tmp_path, pg_url):
    project = make_project(tmp_path, {
        "0001_t.py": CREATE_T,
        "0002_alter.py": revision("0002", "0001", "op.execute('ALTER TABLE app.rails_t ADD COLUMN w int')",
                                  doc="needs an ACCESS EXCLUSIVE lock"),
    })
    settings = settings_for(pg_url, project, DBKIT_LOCK_TIMEOUT="1s", DBKIT_MIGRATE_SET_ROLE="false")
    runner.upgrade(settings, "0001")
    blocker = psycopg.connect(pg_url.conninfo)
    try:
        blocker.execute("SELECT * FROM app.rails_t")  # holds ACCESS SHARE until the transaction ends
        blocker_pid = blocker.info.backend_pid
        with pytest.raises(MigrationFailed) as err:
            runner.upgrade(settings)
    finally:
        blocker.close()
    msg = str(err.value)
    assert msg.startswith("revision 0002 (0002_alter.py) could not get a lock within lock_timeout=1s")
    assert f"blocked by pid {blocker_pid}" in msg and "idle in transaction" in msg
    assert "SELECT * FROM app.rails_t" in msg
    assert "DBKIT_LOCK_TIMEOUT" in msg
    assert runner.status(settings).current == ["0001"]
    runner.upgrade(settings)  # once the blocker is gone it goes through
    assert runner.status(settings).current == ["0002"]


def test_two_concurrent_migrations_one_waits_both_succeed(tmp_path, pg_url):
    """The first run stays inside its revision (blocked on a gate the test holds) until the second has said it
    waits: no fixed sleep, so a loaded machine cannot make the second arrive after the first is done."""
    gate = 424242
    make_project(tmp_path, {
        "0001_slow.py": revision("0001", None, f"""
            op.execute("SET LOCAL lock_timeout = 0")
            op.execute("SET LOCAL statement_timeout = 0")
            op.execute("SELECT pg_advisory_xact_lock({gate})")
            op.execute('CREATE SCHEMA IF NOT EXISTS app')
            op.execute('CREATE TABLE app.rails_once (id int)')
        """, doc="slow"),
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBKIT_", "DATABASE_URL"))}
    env.update(DATABASE_URL=pg_url.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(tmp_path))
    cmd = [sys.executable, "-m", "dbkit", "migrate", "--json"]

    def wait_for(what, condition):
        for _ in range(1200):
            if condition():
                return
            time.sleep(0.05)
        pytest.fail(f"timed out waiting for {what}")

    err2_lines: list[str] = []

    def read_second_stderr():
        for line in second.stderr:
            err2_lines.append(line)  # noqa: PERF402 - one by one: the test reads them while the run goes on

    with psycopg.connect(pg_url.raw, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (gate,))
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # the first holds dbkit's lock and is inside 0001, waiting on the gate
        wait_for("the first run to reach its revision", lambda: q(
            pg_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")[0][0])
        second = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        reader = threading.Thread(target=read_second_stderr, daemon=True)
        reader.start()
        wait_for("the second run to say it waits", lambda: any("waiting for it to finish" in line
                                                                for line in err2_lines) or second.poll() is not None)
        holder.execute("SELECT pg_advisory_unlock(%s)", (gate,))
    out1, err1 = first.communicate(timeout=60)
    out2 = second.stdout.read()
    second.wait(timeout=60)
    reader.join(timeout=60)
    err2 = "".join(err2_lines)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "another migration is running (pid" in err2 and "waiting for it to finish" in err2
    assert [r["revision"] for r in json.loads(out1)["applied"]] == ["0001"]
    assert json.loads(out2)["applied"] == []  # found nothing to do
    assert q(pg_url, "SELECT version_num FROM dbkit.alembic_version") == [("0001",)]


def test_advisory_lock_is_session_level_across_autocommit_blocks(tmp_path, pg_url):
    """A concurrent index build commits mid-revision; the advisory lock must survive it."""
    seen = {}
    make_project(tmp_path, {
        "0001_t.py": CREATE_T,
        "0002_idx.py": revision("0002", "0001", """
            op.create_index_concurrently("rails_t_v_idx", "rails_t", ["v"], schema="app")
            op.execute("CREATE TABLE app.rails_after AS SELECT count(*) AS n FROM pg_locks "
                       "WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted")
        """, doc="concurrent index"),
    })
    settings = settings_for(pg_url, tmp_path)
    runner.upgrade(settings)
    seen["locks_after_autocommit"] = q(pg_url, "SELECT n FROM app.rails_after")[0][0]
    assert seen["locks_after_autocommit"] == 1
    assert q(pg_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0  # released at the end


def test_edited_revision_is_reported_by_check(tmp_path, pg_url, dbkit_cli):
    project = make_project(tmp_path, {"0001_t.py": CREATE_T})
    settings = settings_for(pg_url, project)
    runner.upgrade(settings)
    assert runner.check(settings).edited == []
    path = project / "migrations" / "versions" / "0001_t.py"
    path.write_text(path.read_text().replace("v int", "v bigint"))
    result = runner.check(settings)
    assert [(d.revision, d.filename) for d in result.edited] == [("0001", "versions/0001_t.py")]
    res = dbkit_cli("migrate", "check", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test",
                                             "DBKIT_PROJECT_DIR": str(project)})
    assert res.returncode == 1
    assert "revision 0001 (versions/0001_t.py) was edited after it was applied" in res.stdout


def test_lint_flags_non_concurrent_index(tmp_path, pg_url):
    project = make_project(tmp_path, {
        "0001_t.py": CREATE_T,
        "0002_idx.py": revision("0002", "0001", 'op.create_index("rails_t_v_idx", "rails_t", ["v"], schema="app")',
                                'op.drop_index("rails_t_v_idx", schema="app")', doc="blocking index"),
        "0003_ok.py": revision("0003", "0002", 'op.create_index_concurrently("rails_t_v2_idx", "rails_t", ["v"], schema="app")',
                               doc="concurrent index"),
    })
    settings = settings_for(pg_url, project)
    revs, violations = runner.lint(settings)
    assert [r.revision for r in revs] == ["0001", "0002", "0003"]
    flagged = [(v.revision, v.rule) for v in violations]
    assert ("0002", "require-concurrent-index-creation") in flagged
    assert all(rev != "0003" for rev, _ in flagged)
    v = next(v for v in violations if v.rule == "require-concurrent-index-creation")
    assert v.statement.startswith("CREATE INDEX rails_t_v_idx ON app.rails_t (v)")
    ignoring = settings_for(pg_url, project, DBKIT_LINT_IGNORE="require-concurrent-index-creation")
    assert all(v.rule != "require-concurrent-index-creation" for v in runner.lint(ignoring)[1])


def test_new_revision_and_autogenerate(tmp_path, pg_url):
    settings = settings_for(pg_url)
    runner.upgrade(settings)
    # a copy of the reference project whose models gained a column
    from migrate_helpers import copy_reference_project

    project = copy_reference_project(tmp_path / "proj")
    models = project / "migrations" / "models.py"
    models.write_text(models.read_text().replace(
        'Column("slug", Text, nullable=False, unique=True),',
        'Column("slug", Text, nullable=False, unique=True),\n    Column("plan", Text),\n'
        '    Column("profile_embedding", Vector(8)),'))
    proj_settings = settings_for(pg_url, project)
    diffs = runner.check(proj_settings).schema_diffs
    assert len(diffs) == 2 and all("add_column" in d for d in diffs) and "plan" in diffs[0]
    path = runner.new(proj_settings, "add tenants.plan", autogenerate=True)
    text = path.read_text()
    assert "op.add_column('tenants', sa.Column('plan', sa.Text()" in text and "schema=schema" in text
    assert "from pgvector.sqlalchemy import VECTOR" in text, "the generated revision imports what it uses"
    assert "sa.Column('profile_embedding', VECTOR(dim=8), nullable=True)" in text
    assert "down_revision: str | Sequence[str] | None = '0006'" in text
    runner.upgrade(proj_settings)
    assert runner.check(proj_settings).clean


def test_statement_timeout_is_reported(tmp_path, pg_url):
    project = make_project(tmp_path, {
        "0001_slow.py": revision("0001", None, "op.execute('SELECT pg_sleep(5)')", doc="too slow"),
    })
    settings = settings_for(pg_url, project, DBKIT_STATEMENT_TIMEOUT="300ms")
    with pytest.raises(MigrationFailed, match=r"revision 0001 \(0001_slow.py\) exceeded statement_timeout=300ms "
                                              r"and was rolled back; statement: SELECT pg_sleep\(5\)"):
        runner.upgrade(settings)
    assert runner.status(settings).current == []


def test_untrusted_extension_refused_for_a_non_superuser(tmp_path, pg_url):
    """A deploy role that owns its database but is no superuser cannot create pgvector."""
    from dbkit.errors import MissingDependency

    q(pg_url, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rails_deployer') "
              "THEN CREATE ROLE rails_deployer LOGIN CREATEROLE; END IF; END $$")
    q(pg_url, "DROP DATABASE IF EXISTS rails_noext")
    q(pg_url, "CREATE DATABASE rails_noext OWNER rails_deployer TEMPLATE template0")
    try:
        url = pg_url.with_dbname("rails_noext")
        deployer = url.raw.replace("postgres@", "rails_deployer@", 1)
        from dbkit._urls import parse_database_url

        settings = settings_for(parse_database_url(deployer), make_project(tmp_path, {"0001_t.py": CREATE_T}))
        with pytest.raises(MissingDependency) as err:
            runner.upgrade(settings)
        assert "may not create the extension 'vector' (it is not a trusted extension)" in str(err.value)
        assert "CREATE EXTENSION vector" in str(err.value)
        assert q(url, "SELECT to_regclass('dbkit.alembic_version')") == [(None,)]  # no DDL ran
    finally:
        q(pg_url, "DROP DATABASE IF EXISTS rails_noext WITH (FORCE)")
