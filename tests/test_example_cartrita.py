"""examples/cartrita end to end (issue 14): Cartrita's orchestrator, an existing plain-Alembic project
(`alembic init` layout, `public.alembic_version`, `alembic revision --autogenerate`, models in SQLAlchemy, pgvector)
adopted by dbkit without rewriting its history; robbie, the role the orchestrator connects as, and cartrita_owner,
which owns the tables; no RLS (`rls_model = "none"`); backups to S3 instead of `pg_dump | gzip | aws s3 cp`.

The adoption is proven from a database the OLD tool migrated: plain `alembic upgrade` with the stock env.py
(examples/cartrita/legacy/env.py, `sqlalchemy.url` in alembic.ini, robbie a superuser as the document's
docker-compose made it), then dbkit to the new head, nothing re-run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
from example_harness import example_env  # noqa: F401  (the fixture)

from dbkit.testing.plugin import Server

ROBBIE_PASSWORD = "fake-robbie-test-password"  # examples/cartrita/tests/fake_values.txt
LEGACY_PASSWORD = "fake-legacy-robbie-password"
LEGACY = ["c030047b4486", "a91492e32029", "9719ff526290"]  # written and applied with plain Alembic
ADOPTED = ["a860503127c3", "3c5b88bf4519"]  # written after `dbkit init`
TABLES = {"users", "conversations", "messages", "knowledge_chunks", "tool_calls"}


def _alembic(app, root: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """Plain ``alembic ARGS`` in ``root`` (no dbkit command around it)."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
    out = subprocess.run([sys.executable, "-m", "alembic", *args], cwd=root, capture_output=True, text=True,
                         timeout=300, env={**base, "HOME": str(app.root), **env})
    assert out.returncode == 0, f"alembic {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def test_cartrita_end_to_end(example_env):  # noqa: F811
    app = example_env("cartrita")
    app.lifecycle()

    assert "RLS is not used" in app.roles_and_rls()
    assert {t for (t,) in app.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                                  "AND tablename <> 'alembic_version'")} == TABLES
    assert app.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [("cartrita_owner",)]
    # plain Alembic's version table is the one in use: dbkit made none of its own
    assert app.sql("SELECT version_num FROM public.alembic_version") == [(ADOPTED[-1],)]
    assert app.sql("SELECT to_regclass('dbkit.alembic_version')") == [(None,)]
    assert {e for (e,) in app.sql("SELECT extname FROM pg_extension")} >= {"vector", "uuid-ossp"}
    # robbie logs in with the password of .env.test (a SCRAM verifier), reads the seeded rows, owns nothing
    with psycopg.connect(app.database.conninfo, user="robbie", password=ROBBIE_PASSWORD) as conn:
        assert conn.execute("SELECT count(*) FROM public.knowledge_chunks").fetchone()[0] > 0
        assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)

    # scripts/backup.sh, what replaced `pg_dump | gzip | aws s3 cp`: a backup, then the retention
    target = f"s3://{app.bucket}/cartrita"
    venv_bin = str(Path(sys.executable).parent)
    script = subprocess.run(["bash", "scripts/backup.sh"], cwd=app.root, capture_output=True, text=True, timeout=300,
                            env=app.environ(DBKIT_BACKUP_URI=target, PATH=f"{venv_bin}:{os.environ['PATH']}"))
    assert script.returncode == 0, script.stdout + script.stderr
    listed = json.loads(app.run("backup", "list", "--from", target, "--json").stdout)
    assert len(listed["backups"]) == 2 and listed["incomplete"] == [], listed  # the harness's and the script's
    for backup in listed["backups"]:
        assert backup["alembic_revision"] == ADOPTED[-1] and backup["extensions"].keys() >= {"vector", "uuid-ossp"}
        assert re.search(rf"^keep\s+{backup['id']}\b", script.stdout, re.M), script.stdout  # within the retention

    # `dbkit reset` for the development database: dropped, migrated to head and seeded again
    app.sql("INSERT INTO public.users (email, display_name) VALUES ('scratch@example.com', 'scratch')")
    app.run("reset", "--profile", "tiny")
    assert app.sql("SELECT count(*) FROM public.users WHERE email = 'scratch@example.com'") == [(0,)]
    assert app.sql("SELECT version_num FROM public.alembic_version") == [(ADOPTED[-1],)]
    app.run("migrate", "check")


def test_cartrita_adopted_from_a_database_plain_alembic_migrated(example_env):  # noqa: F811
    app = example_env("cartrita")
    server = Server(app.server.hosts[0], app.server.port, app.server.user, app.server.password)
    # The team's repository before dbkit: alembic.ini with sqlalchemy.url, `alembic init`'s env.py (legacy/), the
    # orchestrator's role robbie a superuser (POSTGRES_USER of the document's docker-compose).
    legacy = app.root.parent / "cartrita-before-dbkit"
    shutil.copytree(app.root, legacy)
    shutil.copy(legacy / "legacy" / "env.py", legacy / "migrations" / "env.py")
    robbie_url = server.url(app.database.dbname, user="robbie", password=LEGACY_PASSWORD)
    ini = (legacy / "alembic.ini").read_text()
    (legacy / "alembic.ini").write_text(ini.replace(
        "[alembic]\n", f"[alembic]\nsqlalchemy.url = {robbie_url.sqlalchemy_url.replace('%', '%%')}\n", 1))
    app.sql("DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'robbie') THEN "
            "ALTER ROLE robbie LOGIN SUPERUSER PASSWORD 'fake-legacy-robbie-password'; ELSE "
            "CREATE ROLE robbie LOGIN SUPERUSER PASSWORD 'fake-legacy-robbie-password'; END IF; END $$")
    try:
        _alembic(app, legacy, "upgrade", LEGACY[-1])
        assert app.sql("SELECT version_num FROM public.alembic_version") == [(LEGACY[-1],)]
        assert app.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [("robbie",)]
        assert app.sql("SELECT to_regnamespace('dbkit')") == [(None,)]
        app.sql("INSERT INTO public.users (email, display_name) VALUES ('kept@example.com', 'Kept')")

        # dbkit in the repository (examples/cartrita as committed: env.py with dbkit's rails, no sqlalchemy.url):
        # it finds plain Alembic's revision and what is pending
        status = app.run("migrate", "status").stdout
        assert "version table: public.alembic_version" in status and f"current: {LEGACY[-1]}" in status, status
        # once, the adoption step of the README: the role model (robbie is no superuser any more, its password
        # from .env.test), then the tables robbie created go to cartrita_owner
        app.run("roles", "apply")
        app.sql("REASSIGN OWNED BY robbie TO cartrita_owner")
        migrated = app.run("migrate").stdout
        assert re.findall(r"^upgraded (\w+)", migrated, re.M) == ADOPTED, migrated  # nothing re-run
        assert app.sql("SELECT version_num FROM public.alembic_version") == [(ADOPTED[-1],)]
        check = app.run("migrate", "check").stdout
        assert f"applied without dbkit (no checksum recorded, so not compared): {', '.join(reversed(LEGACY))}" in check, check
        assert check.strip().splitlines()[-1].startswith("clean: "), check
        app.run("roles", "check")
        assert app.sql("SELECT rolsuper FROM pg_roles WHERE rolname = 'robbie'") == [(False,)]
        assert app.sql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [("cartrita_owner",)]
        assert app.sql("SELECT display_name FROM public.users") == [("Kept",)]  # the data stayed
        with psycopg.connect(app.database.conninfo, user="robbie", password=ROBBIE_PASSWORD) as conn:
            assert conn.execute("SELECT count(*) FROM public.tool_calls").fetchone() == (0,)

        # plain `alembic` keeps working through dbkit's env.py (DATABASE_URL, dbkit's rails): autogenerate a
        # revision for a new model column, upgrade with plain alembic, and dbkit's check stays clean
        env = {"DATABASE_URL": app.database.raw, "DBKIT_ENV": "test"}
        models = app.root / "cartrita" / "models.py"
        text = models.read_text()
        anchor = '    title: Mapped[str] = mapped_column(String(200))\n'
        assert anchor in text
        models.write_text(text.replace(anchor, anchor + "    archived: Mapped[bool | None]\n", 1))
        made = _alembic(app, app.root, "revision", "--autogenerate", "-m", "conversations archived", **env)
        (revision,) = (app.root / "migrations" / "versions").glob("*_conversations_archived.py")
        body = revision.read_text()
        assert "op.add_column('conversations', sa.Column('archived', sa.Boolean(), nullable=True), schema=schema)" \
            in body, made.stderr + body
        _alembic(app, app.root, "upgrade", "head", **env)
        assert app.sql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'conversations' "
                       "AND column_name = 'archived'") == [(1,)]
        check = app.run("migrate", "check").stdout
        assert check.strip().splitlines()[-1].startswith("clean: "), check
        assert app.sql("SELECT count(*) FROM dbkit.migration_checksums") == [(len(ADOPTED) + 1,)]
    finally:
        app.sql("ALTER ROLE robbie NOSUPERUSER")
