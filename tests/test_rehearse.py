"""`dbkit migrate rehearse`: pending revisions on a scratch copy, traced (locks, rewrites, scans), judged.

A copy of the reference project gets extra revisions on top of its head (0006); the rehearsal runs them
on a clone of a seeded database.  Tiny tables, so the threshold is 0 bytes; the verdict rests on locks,
modes, scans and rewrites, never on time (``max_lock`` is an hour).
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from dbkit.migrate import _rehearse as rh
from tests.conftest import clean_env
from tests.migrate_helpers import REPO, copy_reference_project, make_project, q, revision, settings_for

HOUR = 3600.0
#: Backfills run as the owner role, which FORCE ROW LEVEL SECURITY limits to no rows (no tenant claim is set).
NO_FORCE = ("op.execute('ALTER TABLE app.audit_log NO FORCE ROW LEVEL SECURITY')\n"
            "op.execute('ALTER TABLE app.documents NO FORCE ROW LEVEL SECURITY')")

def ex(sql: str) -> str:
    return f"op.execute({sql!r})"


def chain(*bodies: tuple[str, str], first: int = 7) -> dict[str, tuple[str, str, str]]:
    """Revision files on top of 0006, in order: ``{"0007_name.py": ("0007", "0006", body), ...}``."""
    out = {}
    for i, (name, body) in enumerate(bodies):
        rev, down = f"{first + i:04d}", f"{first + i - 1:04d}"
        out[f"{rev}_{name}.py"] = (rev, down, body)
    return out


FK = ("ALTER TABLE app.audit_log ADD CONSTRAINT audit_log_target_fkey FOREIGN KEY (target_id) "
      "REFERENCES app.documents (id)")
UNSAFE = chain(
    ("volatile_default", ex("ALTER TABLE app.audit_log ADD COLUMN r float8 DEFAULT random()")),
    ("set_not_null", ex("ALTER TABLE app.audit_log ALTER COLUMN actor_id SET NOT NULL")),
    ("index", ex("CREATE INDEX audit_log_action_idx ON app.audit_log (action)")),
    ("type", ex("ALTER TABLE app.document_chunks ALTER COLUMN chunk_index TYPE bigint")),
    ("fk", f"op.execute_unfiltered({FK!r})"),  # validated against every row: as the (superuser) connecting role
)
SAFE = chain(
    ("add_nullable", NO_FORCE + "\n" + ex("ALTER TABLE app.audit_log ADD COLUMN r float8") + "\n"
     + ex("ALTER TABLE app.audit_log ADD COLUMN c int DEFAULT 1")),
    ("backfill", ex("UPDATE app.audit_log SET r = random() WHERE r IS NULL")),
    ("check_not_valid", ex("ALTER TABLE app.audit_log ADD CONSTRAINT actor_nn CHECK (actor_id IS NOT NULL) NOT VALID")),
    ("validate", ex("ALTER TABLE app.audit_log VALIDATE CONSTRAINT actor_nn")),
    ("set_not_null", ex("ALTER TABLE app.audit_log ALTER COLUMN actor_id SET NOT NULL") + "\n"
     + ex("ALTER TABLE app.audit_log DROP CONSTRAINT actor_nn")),
    ("index", "op.create_index_concurrently('audit_log_action_idx', 'audit_log', ['action'], schema='app')"),
    ("new_column", ex("ALTER TABLE app.document_chunks ADD COLUMN chunk_index_big bigint")),
    ("fk_not_valid", ex(FK + " NOT VALID")),
    ("fk_validate", ex("ALTER TABLE app.audit_log VALIDATE CONSTRAINT audit_log_target_fkey")),
)


def project(root: Path, revisions: dict[str, tuple[str, str, str]]) -> Path:
    copy_reference_project(root)
    for name, (rev, down, body) in revisions.items():
        (root / "migrations" / "versions" / name).write_text(revision(rev, down, body, doc=name[5:-3]))
    return root


def checksum(url) -> str:
    """Schema and rows of the application's tables, and the version table."""
    with psycopg.connect(url.conninfo) as conn:
        h = hashlib.sha256()
        for (ddl,) in conn.execute("SELECT string_agg(table_name || '.' || column_name || ':' || data_type || "
                                   "is_nullable, ',' ORDER BY table_name, column_name) FROM information_schema.columns "
                                   "WHERE table_schema IN ('app', 'dbkit')"):
            h.update(ddl.encode())
        for (name,) in conn.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables "
                                    "WHERE schemaname IN ('app', 'dbkit') ORDER BY 1").fetchall():
            for (digest,) in conn.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {name} t"):
                h.update(f"{name}:{digest}".encode())
        idx = conn.execute("SELECT string_agg(indexdef, ';' ORDER BY indexdef) FROM pg_indexes "
                           "WHERE schemaname = 'app'").fetchone()[0]
        h.update(idx.encode())
        return h.hexdigest()


def scratch_dbs(url) -> list[str]:
    return [r[0] for r in q(url.with_dbname("postgres"), "SELECT datname FROM pg_database "
                            "WHERE datname LIKE %s", (f"{url.dbname[:30]}%_rehearse_%",))]


@pytest.fixture
def unsafe(tmp_path, dbkit_seeded_db):
    return settings_for(dbkit_seeded_db, project(tmp_path, UNSAFE))


def test_every_unsafe_revision_is_flagged_and_the_source_is_untouched(unsafe, dbkit_seeded_db):
    before = checksum(dbkit_seeded_db)
    report = rh.rehearse(unsafe, min_size=0, max_lock=HOUR)
    assert report.failed is None, report.failed
    assert [r.revision for r in report.revisions] == ["0007", "0008", "0009", "0010", "0011"]
    found = [(f.revision, f.rule, f.relation, f.mode) for f in report.findings]
    # (the FK's check may also scan app.documents, depending on its plan: also a finding, then)
    assert [x for x in found if x[2] != "app.documents"] == [
        ("0007", "rewrite", "app.audit_log", "ACCESS EXCLUSIVE"), ("0008", "scan", "app.audit_log", "ACCESS EXCLUSIVE"),
        ("0009", "scan", "app.audit_log", "SHARE"), ("0010", "rewrite", "app.document_chunks", "ACCESS EXCLUSIVE"),
        ("0011", "scan", "app.audit_log", "SHARE ROW EXCLUSIVE")]
    assert not report.ok
    by_rev = {f.revision: f for f in report.findings}
    assert "CONCURRENTLY" in by_rev["0009"].alternative
    assert "NOT VALID" in by_rev["0011"].alternative and "NOT VALID" in by_rev["0008"].alternative
    assert "backfill" in by_rev["0007"].alternative
    assert by_rev["0008"].file == "0008_set_not_null.py" and by_rev["0008"].line
    assert checksum(dbkit_seeded_db) == before
    assert scratch_dbs(dbkit_seeded_db) == []


def test_the_safe_forms_pass(tmp_path, dbkit_seeded_db):
    settings = settings_for(dbkit_seeded_db, project(tmp_path, SAFE))
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert report.failed is None, report.failed
    assert [r.revision for r in report.revisions] == [f"{n:04d}" for n in range(7, 16)]
    assert report.findings == [], [f.describe() for f in report.findings]
    assert report.ok
    stmts = {r.revision: r.statements for r in report.revisions}
    # what made them safe, as the tracer saw it: no rewrite, the scans ran under modes that let writes through
    touched = [t for r in report.revisions for s in r.statements for t in s.touched]
    assert not any(t.rewritten for t in touched)
    backfill = next(t for t in stmts["0008"][0].touched if t.relation == "app.audit_log")
    assert backfill.scans and backfill.rows_read == 24 and backfill.modes_held == ["RowExclusiveLock"]
    validate = next(t for t in stmts["0010"][0].touched if t.relation == "app.audit_log")
    assert validate.scans and validate.modes_held == ["ShareUpdateExclusiveLock"]
    set_not_null = next(t for t in stmts["0011"][0].touched if t.relation == "app.audit_log")
    assert "AccessExclusiveLock" in set_not_null.modes_held and set_not_null.scans == 0  # the valid CHECK proves it
    concurrently = [s for s in stmts["0012"] if "CONCURRENTLY" in s.sql]
    assert concurrently and all(s.autocommit for s in concurrently)
    assert scratch_dbs(dbkit_seeded_db) == []


def test_the_same_statements_in_one_transaction_are_flagged(tmp_path, dbkit_seeded_db):
    """A backfill or a VALIDATE in the revision that took ACCESS EXCLUSIVE scans under that lock (held until
    commit): the split into revisions is what makes the safe forms safe."""
    steps = [NO_FORCE, ex("ALTER TABLE app.audit_log ADD COLUMN r float8"), ex("UPDATE app.audit_log SET r = random()"),
             ex("ALTER TABLE app.audit_log ADD CONSTRAINT r_nn CHECK (r IS NOT NULL) NOT VALID"),
             ex("ALTER TABLE app.audit_log VALIDATE CONSTRAINT r_nn")]
    together = chain(("all", "\n".join(steps)))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, together))
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    flagged = [(f.rule, f.mode, f.statement.split()[0]) for f in report.findings]
    assert flagged == [("scan", "ACCESS EXCLUSIVE", "UPDATE"), ("scan", "ACCESS EXCLUSIVE", "ALTER")]
    assert "own revision" in report.findings[0].alternative


def test_thresholds_and_max_lock(unsafe):
    """Above --min-size nothing is flagged; with --max-lock 0 the hold of every write-blocking lock counts."""
    big = rh.rehearse(unsafe, min_size=rh.parse_size("1GB"), max_lock=0.0)
    assert big.ok and big.findings == [] and len(big.revisions) == 5
    held = rh.rehearse(unsafe, to="0008", min_size=0, max_lock=0.0)
    assert [r.revision for r in held.revisions] == ["0007", "0008"]
    assert {"lock", "rewrite", "scan"} >= {f.rule for f in held.findings} and held.findings
    locks = [lk for r in held.revisions for s in r.statements for lk in s.locks if lk.relation == "app.audit_log"]
    assert all(lk.held_s is not None and lk.held_s >= 0 for lk in locks)


def test_nothing_pending_says_so_exits_0_and_copies_nothing(tmp_path, dbkit_seeded_db):
    settings = settings_for(dbkit_seeded_db, copy_reference_project(tmp_path))
    report = rh.rehearse(settings, min_size=0)
    assert report.nothing_pending and report.ok and report.scratch is None
    assert report.summary().startswith("nothing to rehearse:") and "0006" in report.summary()
    result = invoke(settings, "--clone")
    assert result.exit_code == 0 and result.stdout.startswith("nothing to rehearse: "), result.output


def test_a_failing_revision_is_reported_and_the_scratch_dropped(tmp_path, dbkit_seeded_db):
    revs = chain(("volatile_default", ex("ALTER TABLE app.audit_log ADD COLUMN r float8 DEFAULT random()")),
                 ("boom", ex("ALTER TABLE app.no_such_table ADD COLUMN x int")))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    before = checksum(dbkit_seeded_db)
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert not report.ok
    assert "0008" in report.failed and "no_such_table" in report.failed
    assert [s.error is not None for r in report.revisions for s in r.statements] == [False, True]
    assert scratch_dbs(dbkit_seeded_db) == []
    assert checksum(dbkit_seeded_db) == before


def test_clone_with_other_sessions_is_one_clear_line(unsafe, dbkit_seeded_db):
    # the count includes whatever else is connected at that moment (an autovacuum or TimescaleDB worker): the
    # message must name this test's session among them
    with psycopg.connect(dbkit_seeded_db.conninfo, application_name="app-still-connected"):
        with pytest.raises(rh.CloneImpossible) as err:
            rh.rehearse(unsafe, min_size=0)
    text = str(err.value)
    count = re.search(r"(\d+) other session\(s\) are connected to it \((.*?)\), and", text)
    assert count and int(count.group(1)) >= 1 and "app-still-connected (pid " in count.group(2), text
    assert "--from-backup" in text and "\n" not in text
    assert scratch_dbs(dbkit_seeded_db) == []


def test_keep_keeps_the_scratch_database(unsafe, dbkit_seeded_db):
    report = rh.rehearse(unsafe, to="0007", min_size=0, keep=True)
    try:
        assert report.kept and scratch_dbs(dbkit_seeded_db) == [report.scratch]
        assert q(dbkit_seeded_db.with_dbname(report.scratch), "SELECT version_num FROM dbkit.alembic_version") == [
            ("0007",)]
    finally:
        rh.drop_scratch(unsafe, dbkit_seeded_db, report.scratch)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupt_drops_the_scratch_database(tmp_path, dbkit_seeded_db, signum):
    """A real `dbkit migrate rehearse` process, interrupted (Ctrl-C, or SIGTERM) while a revision runs."""
    revs = chain(("slow", ex("SELECT pg_sleep(60)")))
    root = project(tmp_path, revs)
    before = checksum(dbkit_seeded_db)
    script = "import sys; from dbkit.cli import main; main(sys.argv[1:])"
    env = clean_env(DATABASE_URL=dbkit_seeded_db.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(root),
                    PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", script, "migrate", "rehearse", "--clone", "--min-size", "0"],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = q(dbkit_seeded_db.with_dbname("postgres"), "SELECT datname FROM pg_stat_activity "
                     "WHERE query LIKE 'SELECT pg_sleep(60)%%' AND datname LIKE %s",
                     (f"{dbkit_seeded_db.dbname[:30]}%_rehearse_%",))
            if rows:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            pytest.fail("the slow revision never started")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # click turns KeyboardInterrupt into Abort; dbkit's main maps a Ctrl-C back to the shell's 130
    assert proc.returncode in (1, 130), err
    if signum == signal.SIGINT:
        assert proc.returncode == 130 and "dbkit: interrupted" in err, err
    assert ("aborted" in err or "interrupted" in err) and "rehearsing on scratch database" in err
    assert scratch_dbs(dbkit_seeded_db) == []
    assert checksum(dbkit_seeded_db) == before


# --------------------------------------------------------------------- the command (click), and --from-backup

def invoke(settings, *args: str):
    from click.testing import CliRunner

    from dbkit.cli._common import State
    from dbkit.cli._rehearse import rehearse

    return CliRunner().invoke(rehearse, list(args), obj=State(_settings=settings))


def test_cli_json_markdown_and_table(unsafe, dbkit_seeded_db):
    result = invoke(unsafe, "--clone", "--to", "0009", "--min-size", "0", "--max-lock", "1h", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["pending"] == ["0007", "0008", "0009"] and data["copy_method"] == "clone"
    assert [f["revision"] for f in data["findings"]] == ["0007", "0008", "0009"]
    assert all(f["message"].startswith(f"revision {f['revision']} (") and "safe alternative:" in f["message"]
               for f in data["findings"])
    assert data["copy_s"] > 0 and data["total_s"] >= data["copy_s"] and data["revisions"][0]["duration_s"] >= 0
    md = invoke(unsafe, "--clone", "--to", "0009", "--min-size", "0", "--max-lock", "1h", "--markdown")
    assert md.exit_code == 1 and md.stdout.startswith("### dbkit migrate rehearse: ❌ FAIL")
    assert "| 0009 (0009_index.py:15) | `CREATE INDEX audit_log_action_idx ON app.audit_log (action)` |" in md.stdout
    table = invoke(unsafe, "--clone", "--to", "0007", "--min-size", "0", "--max-lock", "1h")
    assert table.exit_code == 1
    assert "FAIL revision 0007 (0007_volatile_default.py:15): 'ALTER TABLE app.audit_log ADD COLUMN r float8 " \
           "DEFAULT random()' rewrites app.audit_log: table rewritten" in table.stdout
    big = invoke(unsafe, "--clone", "--to", "0009", "--max-lock", "1h")  # default --min-size 10MB: tiny tables pass
    assert big.exit_code == 0, big.output
    assert big.stdout.rstrip().splitlines()[-1].startswith("ok: 3 of 3 revision(s) rehearsed on a clone of")
    assert scratch_dbs(dbkit_seeded_db) == []


@pytest.mark.parametrize(("args", "text"), [
    (["--clone", "--json", "--markdown"], "--json and --markdown are exclusive"),
    (["--clone", "--from-backup", "latest"], "--clone and --from-backup are exclusive"),
    (["--clone", "--from", "/tmp/x"], "--from needs --from-backup"),
    (["--clone", "--min-size", "lots"], "--min-size is 'lots', not a size"),
    (["--clone", "--max-lock", "soon"], "--max-lock is 'soon', not a duration"),
    (["--clone", "--to", " "], "--to is empty"),
])
def test_cli_bad_input_is_one_line(args, text, tmp_path):
    from dbkit.errors import DbkitError

    result = invoke(None, *args)
    assert isinstance(result.exception, DbkitError) and text in str(result.exception)
    assert "\n" not in str(result.exception) and result.exception.exit_code == 2


def test_from_backup_restores_the_copy(tmp_path, dbkit_seeded_db):
    from dbkit.backup import _pipeline as pipeline
    from dbkit.migrate import _runner as runner

    settings = settings_for(dbkit_seeded_db, project(tmp_path / "p", UNSAFE),
                            DBKIT_BACKUP_URI=str(tmp_path / "backups"))
    manifest = pipeline.backup(settings)
    runner.upgrade(settings, "0007")  # the live database moved on: the backup's revision is what counts
    before = checksum(dbkit_seeded_db)
    with psycopg.connect(dbkit_seeded_db.conninfo):  # a restore, unlike a clone, does not mind other sessions
        result = invoke(settings, "--to", "0008", "--min-size", "0", "--max-lock", "1h", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["copy_method"] == "restore of backup latest" and data["failed"] is None
    assert data["before"] == ["0006"] and data["pending"] == ["0007", "0008"] and data["after"] == ["0008"]
    assert {(f["revision"], f["rule"]) for f in data["findings"]} == {("0007", "rewrite"), ("0008", "scan")}
    assert manifest.id
    assert scratch_dbs(dbkit_seeded_db) == [] and checksum(dbkit_seeded_db) == before


# --------------------------------------------------------------------- pure parts

def test_sizes_durations_and_names():
    assert rh.parse_size("10MB") == 10 * 1024**2 and rh.parse_size("0") == 0 and rh.parse_size("512kB") == 512 * 1024
    assert rh.parse_size("1048576") == 1048576 and rh.parse_size("1.5 GB") == int(1.5 * 1024**3)
    assert rh.parse_duration("2s") == 2 and rh.parse_duration("500ms") == 0.5 and rh.parse_duration("1min") == 60
    assert rh.parse_duration("250", bare_unit="ms") == 0.25
    name = rh.scratch_name("x" * 63)
    assert len(name.encode()) <= 63 and "_rehearse_" in name
    assert rh.scratch_name("app").startswith("app_rehearse_")


def test_max_lock_defaults_to_the_lock_timeout():
    from dbkit._urls import parse_database_url

    url = parse_database_url("postgresql://app@localhost/app")
    for value, seconds in (("5s", 5.0), ("250", 0.25), ("1min", 60.0), ("0", 5.0)):
        assert rh.default_max_lock(settings_for(url, DBKIT_LOCK_TIMEOUT=value)) == seconds


def test_verdict_rules_on_a_synthetic_trace():
    from dbkit.migrate._rehearse_report import RevisionRun, human_size, mode_name, verdict
    from dbkit.migrate._rehearse_trace import LockTaken, StatementTrace, Touched

    def stmt(sql, mode, *, rewritten=False, scans=0, held=0.5, created=False, size=100 << 20):
        lock = LockTaken("app.t", "r", mode, size, 1000, created, held)
        t = Touched("app.t", "r", size, size, 1000, rewritten, created, scans, scans * 1000, [mode])
        return StatementTrace("r1", "r1.py", 3, sql, 0.0, 0.1, locks=[lock], touched=[t])

    run = RevisionRun("r1", "r1.py", "m", 1.0, [
        stmt("ALTER TABLE t ALTER COLUMN a TYPE bigint", "AccessExclusiveLock", rewritten=True),
        stmt("CREATE INDEX i ON t (a)", "ShareLock", scans=1),
        stmt("ALTER TABLE t ADD COLUMN b int", "AccessExclusiveLock", held=10.0),
        stmt("ALTER TABLE t ADD COLUMN c int", "AccessExclusiveLock", held=0.1),
        stmt("ALTER TABLE t VALIDATE CONSTRAINT c", "ShareUpdateExclusiveLock", scans=1, held=10.0),
        stmt("CREATE TABLE t2 ()", "AccessExclusiveLock", created=True, held=10.0),
        stmt("CREATE INDEX j ON t (b)", "ShareLock", scans=1, size=1 << 20),
    ])
    found = verdict([run], min_size=10 << 20, max_lock_s=5.0)
    assert [(f.rule, f.mode, f.statement.split()[1]) for f in found] == [
        ("rewrite", "ACCESS EXCLUSIVE", "TABLE"), ("scan", "SHARE", "INDEX"), ("lock", "ACCESS EXCLUSIVE", "TABLE")]
    assert "held 10.000s until commit, over --max-lock 5s" in found[2].figures
    assert mode_name("ShareRowExclusiveLock") == "SHARE ROW EXCLUSIVE" and human_size(2048) == "2.0 kB"


def test_load_sees_the_stall_of_a_lock_held_until_commit(tmp_path, dbkit_seeded_db):
    """Two clients as the enforce role; a revision takes ACCESS EXCLUSIVE on audit_log, then sleeps 2 s in
    the same transaction: the clients' operations on audit_log wait for its commit (a lock fact: a lower
    bound, not a speed), and the verdict names the statement that took the lock."""
    revs = chain(("hold", ex("ALTER TABLE app.audit_log ADD COLUMN x int") + "\n" + ex("SELECT pg_sleep(2)")),
                 ("quick", ex("CREATE TABLE app.scratch_note (id int)")))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    report = rh.rehearse(settings, min_size=0, max_lock=0.5, load=2, baseline_s=0.5)
    assert report.failed is None, report.failed
    assert [w.label for w in report.load] == ["baseline", "0007", "0008"]
    base, hold, _ = report.load
    assert base.ops > 0 and base.errors == 0 and report.load_errors == []
    assert base.rows > 0  # the clients' claims match the seeded tenants' rows
    assert hold.ops > 0 and hold.longest_stall_s > 0.5
    rules = {(f.revision, f.rule, f.relation, f.mode) for f in report.findings}
    assert ("0007", "lock", "app.audit_log", "ACCESS EXCLUSIVE") in rules
    assert ("0007", "stall", "app.audit_log", "ACCESS EXCLUSIVE") in rules
    stall = next(f for f in report.findings if f.rule == "stall")
    assert stall.statement.startswith("ALTER TABLE app.audit_log ADD COLUMN x")
    assert "without the migration" in stall.figures
    assert not any(f.revision == "0008" for f in report.findings)  # a new table blocks nobody
    assert scratch_dbs(dbkit_seeded_db) == []


def test_locks_of_a_concurrent_build_are_sampled(tmp_path, dbkit_seeded_db):
    """Outside a transaction the locks end with the statement: a second connection samples them.  The index
    expression sleeps 20 ms a row (24 rows), so the build lasts long enough to be seen."""
    slow = ("op.execute(\"CREATE FUNCTION app.slow_id(x text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS "
            "'BEGIN PERFORM pg_sleep(0.02); RETURN x; END'\")")
    revs = chain(("fn", slow), ("cic", "op.create_index_concurrently('audit_log_slow_idx', 'audit_log', "
                                       "['app.slow_id(action)'], schema='app')"))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert report.failed is None, report.failed
    build = next(s for r in report.revisions for s in r.statements if s.sql.startswith("CREATE INDEX CONCURRENTLY"))
    assert build.autocommit
    on_table = {lk.mode for lk in build.locks if lk.relation == "app.audit_log"}
    assert "ShareUpdateExclusiveLock" in on_table and not on_table & {"ShareLock", "AccessExclusiveLock"}
    assert any(t.relation == "app.audit_log_slow_idx" and t.created for t in build.touched)
    assert report.ok, [f.describe() for f in report.findings]


def test_a_hypertable_is_judged_as_one_table(tmp_path, dbkit_seeded_db):
    """CREATE INDEX on the events hypertable takes SHARE on every chunk and scans each: one finding for
    app.events, with the chunks counted, not one per chunk."""
    revs = chain(("events_idx", ex("CREATE INDEX events_kind_idx ON app.events (kind)")))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    (st,) = report.revisions[0].statements
    chunks = q(dbkit_seeded_db, "SELECT count(*) FROM timescaledb_information.chunks "
                                "WHERE hypertable_schema = 'app' AND hypertable_name = 'events'")[0][0]
    assert chunks > 1 and st.parts == chunks
    (finding,) = report.findings
    assert (finding.rule, finding.relation, finding.mode) == ("scan", "app.events", "SHARE")
    assert f"({chunks} chunk(s) or partition(s)) reading 240 of ~240 rows" in finding.figures


def test_a_partitioned_table_is_judged_as_one_table(tmp_path, dbkit_seeded_db):
    parts = [ex("CREATE TABLE app.measures (id int, at date NOT NULL) PARTITION BY RANGE (at)")]
    parts += [ex(f"CREATE TABLE app.measures_{y} PARTITION OF app.measures FOR VALUES FROM ('{y}-01-01') TO "
                 f"('{y + 1}-01-01')") for y in (2020, 2021)]
    parts.append(ex("INSERT INTO app.measures SELECT i, date '2020-01-01' + i % 700 FROM generate_series(1, 2000) i"))
    revs = chain(("parts", "\n".join(parts)), ("index", ex("CREATE INDEX measures_id_idx ON app.measures (id)")))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert report.failed is None, report.failed
    assert not any(f.revision == "0007" for f in report.findings)  # made in the same transaction: nobody waits
    (finding,) = [f for f in report.findings if f.revision == "0008"]
    assert (finding.rule, finding.relation, finding.mode) == ("scan", "app.measures", "SHARE")
    assert "(2 chunk(s) or partition(s)) reading 2,000 of" in finding.figures


def test_a_failing_tracer_query_stops_the_rehearsal_with_one_line(pg_url):
    from dbkit.migrate._rehearse_trace import TraceFailed, Tracer

    with psycopg.connect(pg_url.conninfo) as conn, pytest.raises(TraceFailed) as err:
        Tracer._query(conn, "SELECT * FROM no_such_relation")
    assert "tracer could not read the catalog" in str(err.value) and "\n" not in str(err.value)


def test_load_acts_on_the_owner_column_the_project_configures(tmp_path, pg_url):
    """A project whose tenant column is ``org`` ([tool.dbkit.rls] tenant_column): the clients sample tenants
    from it and their writes reach rows, which under RLS needs the right claim; before, they looked for a
    tenant_id column, found none and only read (seeing no row)."""
    from dbkit import roles
    from dbkit.migrate._rehearse_load import Load

    root = make_project(tmp_path, {}, pyproject_extra='schema = "shop"\n\n[tool.dbkit.rls]\ntenant_column = "org"\n')
    settings = settings_for(pg_url, root)
    roles.apply(settings)
    q(pg_url, "CREATE SCHEMA shop; CREATE TABLE shop.orders (id serial PRIMARY KEY, org uuid NOT NULL, note text);"
              " ALTER TABLE shop.orders ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
              " CREATE POLICY orders_org ON shop.orders USING (org = (SELECT NULLIF(current_setting('app.tenant_id',"
              " true), '')::uuid)); GRANT USAGE ON SCHEMA shop TO app_rls;"
              " GRANT SELECT, UPDATE ON shop.orders TO app_rls;"
              " INSERT INTO shop.orders (org, note) SELECT o, 'n' FROM (VALUES (gen_random_uuid()),"
              " (gen_random_uuid())) v(o), generate_series(1, 5)")
    before = dict(q(pg_url, "SELECT id, xmin::text FROM shop.orders"))
    load = Load(settings, pg_url, 2)
    with load:
        for _ in range(600):  # until the clients have done 40 operations (bounded; no figure on time)
            if len(load.samples) >= 40:
                break
            time.sleep(0.05)
    assert len(load.samples) >= 40 and load.errors == [], load.errors
    after = dict(q(pg_url, "SELECT id, xmin::text FROM shop.orders"))
    assert [i for i in before if after[i] != before[i]], "no write reached a row: the claims missed the org column"
    assert sum(rows for *_, rows in load.samples) > 0  # and the reads saw the claimed org's rows
