"""examples/studioops end to end (issue 14): the lifecycle from an empty database, and the adoption of a
database that the application's old runner (infra/migrations/run_migrations.py of its document) migrated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from example_harness import example_env  # noqa: F401  (the fixture)

OLD_FILES = ("001_initial_schema.sql", "002_add_vector_support.sql", "003_search_indexes.sql")


def run_old_migrations(conninfo: str, migrations_dir: Path) -> list[str]:
    """The document's MigrationRunner.run_migrations, on psycopg 3: its table, every *.sql file in name order
    that the table does not list, each file's text in one execute, its name recorded, one commit per file."""
    ran = []
    with psycopg.connect(conninfo) as conn, conn.cursor() as cursor:
        cursor.execute("""
            CREATE TABLE IF NOT EXISTS migrations (
                id SERIAL PRIMARY KEY,
                filename VARCHAR(255) NOT NULL UNIQUE,
                executed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
            )
        """)
        cursor.execute("SELECT filename FROM migrations")
        executed = {row[0] for row in cursor.fetchall()}
        for migration_file in sorted(migrations_dir.glob("*.sql")):
            if migration_file.name not in executed:
                cursor.execute(migration_file.read_text())
                cursor.execute("INSERT INTO migrations (filename) VALUES (%s)", (migration_file.name,))
                conn.commit()
                ran.append(migration_file.name)
    return ran


def make(app, *targets: str) -> str:
    """The example's Makefile, its dbkit being this one; backups to the test's bucket (not MinIO's `backups`)."""
    out = subprocess.run(["make", "-s", *targets], cwd=app.root, capture_output=True, text=True, timeout=300,
                         env=app.environ(DBKIT=f"{sys.executable} -m dbkit",
                                         DBKIT_BACKUP_URI=f"s3://{app.bucket}/{app.name}"))
    assert out.returncode == 0, f"make {' '.join(targets)}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_studioops_end_to_end(example_env):  # noqa: F811
    app = example_env("studioops")
    app.lifecycle()
    # the Makefile's targets: db-backup is a backup to the same bucket, then the GFS retention with --apply
    out = make(app, "db-migrate", "db-backup")
    assert "nothing to upgrade" in out
    kept = [ln for ln in out.splitlines() if ln.startswith("keep ")]
    assert len(kept) == 2 and "last" in kept[0] and "daily" in kept[0], out  # newest: last 3 and today's
    out = make(app, "db-backup", "KEEP=--keep-last 1")
    assert len([ln for ln in out.splitlines() if ln.startswith("deleted ")]) == 2, out


def test_studioops_adopts_the_old_runners_database(example_env):  # noqa: F811
    app = example_env("studioops")
    app.sql("CREATE EXTENSION IF NOT EXISTS vector")  # init.sql of the document's docker image did this
    assert run_old_migrations(app.database.conninfo, app.root / "infra" / "migrations") == list(OLD_FILES)
    app.sql("INSERT INTO projects (name, client_name) VALUES ('Made before dbkit', 'Old Client')")

    out = app.run("migrate")  # adopts (stamps 0003: nothing of 001-003 runs again), then 0004 and 0005
    assert "adopted the SQL-file history: migrations lists 3 file(s)" in out.stdout, out.stdout
    assert "stamped 0003, nothing re-ran" in out.stdout
    assert [ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("upgraded ")] == ["0004", "0005"]
    # 001 has a plain CREATE TABLE: had it run again the upgrade would have failed; the old row is still there
    assert app.sql("SELECT name FROM projects") == [("Made before dbkit",)]
    assert app.sql("SELECT filename FROM dbkit.adopted_migrations ORDER BY id") == [(f,) for f in OLD_FILES]
    assert app.sql("SELECT to_regclass('public.migrations')") == [(None,)]  # moved: never adopted twice
    assert app.sql("SELECT version_num FROM dbkit.alembic_version") == [("0005",)]
    owners = app.sql("SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class WHERE relname = ANY(%s)",
                     (["projects", "plans", "plan_items", "documents", "doc_chunks", "rag_documents"],))
    assert owners == [("studioops_owner",)]
    assert "nothing to upgrade" in app.run("migrate").stdout  # adopted once: a second run has nothing to do
    app.run("migrate", "check")
    app.run("roles", "check")
    assert "RLS is not used" in app.roles_and_rls()
    # down to base and up again runs every revision natively: the moved table is never adopted a second time
    app.run("migrate", "down", "base", "--yes")
    out = app.run("migrate")
    assert "adopted" not in out.stdout and out.stdout.count("upgraded ") == 5, out.stdout
