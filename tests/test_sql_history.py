"""`dbkit migrate import-sql` and the adoption of a database that a hand-written SQL-file runner migrated
(dbkit/migrate/_sql_history.py): splitting files, the revisions written, and one clear line for what cannot
be imported or adopted.  The whole story on a real application is tests/test_example_studioops.py."""

from __future__ import annotations

import pytest
from conftest import DbkitRunner
from migrate_helpers import make_project, q, settings_for

from dbkit.errors import UsageError
from dbkit.migrate import _runner as runner
from dbkit.migrate._sql_history import created_relations, split_statements

OLD_TABLE = ("CREATE TABLE IF NOT EXISTS migrations (id SERIAL PRIMARY KEY, filename VARCHAR(255) NOT NULL UNIQUE, "
             "executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)")


@pytest.mark.unit
def test_split_keeps_bodies_and_drops_the_files_own_transaction():
    sql = ("-- a comment; with a semicolon\nBEGIN;\nCREATE TABLE t (v text DEFAULT '10:30; 100%');\n"
           "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$;\n"
           "INSERT INTO t VALUES ('café')\n;COMMIT;\n")
    assert split_statements(sql, "x.sql") == [
        "CREATE TABLE t (v text DEFAULT '10:30; 100%')",
        "CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN RETURN 1; END $$",
        "INSERT INTO t VALUES ('café')",
    ]


@pytest.mark.unit
@pytest.mark.parametrize(("sql", "expected"), [
    ("SELECT 1;\nSELEC 2;", "x.sql:2 is not valid SQL: syntax error at or near \"SELEC\""),
    ("SELECT 1;\n\\i other.sql\n", "x.sql:2 is a psql meta-command (\\i other.sql), not SQL"),
    ("CREATE TABLE t (id int);\nROLLBACK;", "x.sql:2 controls the transaction (ROLLBACK)"),
    ("CREATE INDEX CONCURRENTLY i ON t (id);", "x.sql:1 cannot run inside a transaction"),
    ("VACUUM t;", "x.sql:1 cannot run inside a transaction"),
])
def test_what_cannot_become_a_revision_is_one_line_naming_file_and_line(sql, expected):
    with pytest.raises(UsageError) as info:
        split_statements(sql, "x.sql")
    assert str(info.value).startswith(expected)
    assert "\n" not in str(info.value)


@pytest.mark.unit
def test_created_relations():
    stmts = ["CREATE TABLE a (id int)", "CREATE TABLE s.b AS SELECT 1", "CREATE VIEW v AS SELECT 1",
             "CREATE SEQUENCE q", "CREATE INDEX i ON a (id)", "ALTER TABLE a ADD COLUMN x int"]
    assert created_relations(stmts) == ["a", "s.b", "v", "q"]


def _legacy(tmp_path):
    (tmp_path / "p").mkdir()
    project = make_project(tmp_path / "p", {}, pyproject_extra='schema = "public"\n')
    sql = project / "sql_migrations"
    sql.mkdir()
    (sql / "001_widgets.sql").write_text("CREATE TABLE widgets (id int PRIMARY KEY, at text DEFAULT '12:00');\n")
    (sql / "002_gadgets.sql").write_text("BEGIN;\nCREATE TABLE gadgets (id int PRIMARY KEY);\nCOMMIT;\n")
    return project, sql


def test_import_writes_one_chained_revision_per_file_and_is_idempotent(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    result = runner.import_sql(settings, "sql_migrations")
    assert result.written == ["migrations/versions/0001_sql_001_widgets.py",
                              "migrations/versions/0002_sql_002_gadgets.py"]
    second = (project / result.written[1]).read_text()
    assert "down_revision = '0001'" in second and "sql_file = '002_gadgets.sql'" in second
    assert "BEGIN" not in second.split("STATEMENTS")[1].split("def upgrade")[0]
    again = runner.import_sql(settings, "sql_migrations")
    assert again.written == [] and again.skipped == ["001_widgets.sql", "002_gadgets.sql"]
    (sql / "003_more.sql").write_text("ALTER TABLE gadgets ADD COLUMN n int;")
    assert runner.import_sql(settings, sql).written == ["migrations/versions/0003_sql_003_more.py"]


def test_a_new_database_runs_the_imported_revisions(tmp_path, pg_url):
    project, _ = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    result = runner.upgrade(settings)
    assert result.adopted is None and [r.revision for r in result.applied] == ["0001", "0002"]
    assert q(pg_url, "SELECT column_default FROM information_schema.columns WHERE table_name = 'widgets' "
                     "AND column_name = 'at'") == [("'12:00'::text",)]


def _old_runner(pg_url, sql_dir, files):
    q(pg_url, OLD_TABLE)
    for name in files:
        q(pg_url, (sql_dir / name).read_text().replace("BEGIN;", "").replace("COMMIT;", ""))
        q(pg_url, "INSERT INTO migrations (filename) VALUES (%s)", (name,))


def test_adoption_stamps_what_the_table_lists_and_runs_the_rest(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    _old_runner(pg_url, sql, ["001_widgets.sql"])
    result = runner.upgrade(settings)
    assert result.adopted.stamped == "0001" and result.adopted.files == ["001_widgets.sql"]
    assert [r.revision for r in result.applied] == ["0002"]
    assert q(pg_url, "SELECT filename FROM dbkit.adopted_migrations") == [("001_widgets.sql",)]


def test_plain_alembic_upgrade_refuses_to_run_the_old_runners_files_again(tmp_path, pg_url):
    """Only `dbkit migrate` adopts; plain `alembic upgrade` through dbkit's env.py would start from base."""
    import subprocess
    import sys

    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    _old_runner(pg_url, sql, ["001_widgets.sql"])
    env = {"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=120)
    said = out.stdout + out.stderr  # alembic prints one "FAILED: …" line
    assert out.returncode != 0 and "Traceback" not in said, said
    assert "migrations lists 1 SQL file(s) the old runner applied (last: 001_widgets.sql)" in said
    assert "run `dbkit migrate` once: it adopts them" in said
    assert q(pg_url, "SELECT to_regclass('gadgets') IS NULL, count(*) FROM migrations") == [(True, 1)]
    assert [r.revision for r in runner.upgrade(settings).applied] == ["0002"]  # dbkit migrate adopts, then runs 0002


def test_a_listed_file_without_revision_is_one_line(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    _old_runner(pg_url, sql, ["001_widgets.sql"])
    q(pg_url, "INSERT INTO migrations (filename) VALUES ('009_lost.sql')")
    out = DbkitRunner(project)("migrate", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test"})
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.endswith("migrations lists 009_lost.sql, which no imported revision comes from (the old runner "
                         "applied a file that is not in migrations/versions); restore the file and import it "
                         "(`dbkit migrate import-sql DIR`), then run again"), line
    assert q(pg_url, "SELECT to_regclass('dbkit.alembic_version')") in ([(None,)], [("dbkit.alembic_version",)])
    assert q(pg_url, "SELECT count(*) FROM migrations") == [(2,)]  # nothing moved, nothing stamped


def test_a_file_the_old_runner_skipped_before_a_listed_one_is_one_line(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    _old_runner(pg_url, sql, ["002_gadgets.sql"])
    with pytest.raises(UsageError) as info:
        runner.upgrade(settings)
    assert str(info.value) == ("migrations does not list 001_widgets.sql but lists the later 002_gadgets.sql: the "
                               "old runner never applied it; run the old runner once more so it applies every "
                               "file, then `dbkit migrate`")


def test_status_says_dbkit_migrate_adopts_the_database(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    _old_runner(pg_url, sql, ["001_widgets.sql", "002_gadgets.sql"])
    st = runner.status(settings)
    assert st.current == [] and [r.revision for r in st.pending] == ["0001", "0002"]
    assert st.advice() == ("migrations lists 2 SQL file(s) the old runner applied (last: 002_gadgets.sql): "
                           "`dbkit migrate` stamps revision 0002 without running them, then runs the revisions "
                           "after it")
    assert st.as_dict()["advice"] == st.advice()
    result = runner.upgrade(settings)
    assert result.applied == [] and result.after == ["0002"]
    assert runner.status(settings).advice() is None


def test_import_sql_cli_refuses_bad_input_in_one_line(tmp_path, pg_url):
    project, _ = _legacy(tmp_path)
    cli = DbkitRunner(project)
    env = {"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test"}
    for args, expected in [
        (("nowhere",), "nowhere is not a directory"),
        (("sql_migrations", "--table", "bad name"), "--table 'bad name' is not a table name"),
        (("migrations",), "migrations has no *.sql files"),
    ]:
        out = cli("migrate", "import-sql", *args, env=env)
        assert out.returncode == 2, out.stderr
        (line,) = out.stderr.strip().splitlines()
        assert expected in line, line
    assert not list((project / "migrations" / "versions").glob("*.py"))
    out = cli("migrate", "import-sql", "sql_migrations", "--json", env=env)
    assert out.returncode == 0, out.stderr
    assert '"written"' in out.stdout and "0002_sql_002_gadgets.py" in out.stdout


def test_offline_sql_renders_the_files_statements_verbatim(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    (sql / "003_rates.sql").write_text("INSERT INTO widgets VALUES (1, '12:00 at 100% :rate');\n")
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    text = runner.offline_sql(settings)
    assert "CREATE TABLE widgets (id int PRIMARY KEY, at text DEFAULT '12:00');" in text
    assert "INSERT INTO widgets VALUES (1, '12:00 at 100% :rate');" in text


def test_a_failed_adoption_is_one_line_and_leaves_everything_as_it_was(tmp_path, pg_url):
    project, sql = _legacy(tmp_path)
    settings = settings_for(pg_url, project)
    runner.import_sql(settings, "sql_migrations")
    _old_runner(pg_url, sql, ["001_widgets.sql"])
    runner.stamp(settings, "base")  # dbkit's schema and roles exist, the version table is empty
    q(pg_url, "CREATE TABLE dbkit.adopted_migrations (id int)")  # where the old table would go
    out = DbkitRunner(project)("migrate", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test"})
    assert out.returncode == 1
    (line,) = out.stderr.strip().splitlines()
    assert "adopting the SQL-file history failed and was rolled back (nothing was stamped): relation " \
           "\"adopted_migrations\" already exists" in line, line
    assert q(pg_url, "SELECT filename FROM public.migrations") == [("001_widgets.sql",)]
    assert runner.status(settings).current == []
    assert q(pg_url, "SELECT to_regclass('public.gadgets')") == [(None,)]
