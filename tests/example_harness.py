"""Runs an example application of ``examples/<app>/`` end to end, the way its team would, with the real
``dbkit`` CLI against the session's test server and moto's S3 (issue 14's "Done means"):

migrate up, down to base and up again; ``migrate check`` clean; ``roles check`` and ``rls audit`` clean (or
"RLS not used"); ``seed --profile tiny``; the example's own tests (its ``tests/``, dbkit's pytest plugin on
the same server); backup to S3 and restore into a new database with identical tables; ``dbkit check``
healthy.  The example is copied to a temporary directory first (runs write ``.dbkit``/``backups``), and
its ``tests/fake_values.txt``, written to ``.env.test`` in the copy (``DBKIT_ENV=test`` reads it), gives the
fake passwords and settings it needs: no ``.env`` file is in git.

Use::

    from example_harness import Example

    def test_lifebuddy(example_env):
        app = example_env("lifebuddy")
        app.lifecycle()               # every step above; each asserts with the command's output
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from dbkit._urls import DbUrl

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


@dataclass
class Example:
    """One example application, copied into ``root``, pointed at ``database`` (a fresh database)."""

    name: str
    root: Path
    server: DbUrl  # superuser URL of the test server (database postgres)
    database: DbUrl
    s3_env: dict[str, str]
    bucket: str
    env: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ running things

    def environ(self, **extra: str) -> dict[str, str]:
        """The process environment of a command: PATH and HOME, the database, S3, then ``extra``."""
        import os

        base = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {**base, "HOME": str(self.root), "DBKIT_ENV": "test", "DATABASE_URL": self.database.raw,
                **self.s3_env, **self.env, **extra}

    def run(self, *args: str, ok: bool = True, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
        """``dbkit ARGS`` in the example's directory; with ``ok`` the exit code must be 0."""
        out = subprocess.run([sys.executable, "-m", "dbkit", *args], cwd=self.root, env=self.environ(**extra),
                             capture_output=True, text=True, timeout=timeout)
        if ok:
            assert out.returncode == 0, f"dbkit {' '.join(args)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        return out

    def pytest(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """The example's own tests, with dbkit's plugin on the session's server."""
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=self.root,
                             env=self.environ(DBKIT_TEST_SERVER_URL=self.server.raw), capture_output=True, text=True,
                             timeout=timeout)
        assert out.returncode == 0, f"the example's tests failed:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
        return out

    def sql(self, query: str, params=(), *, url: DbUrl | None = None) -> list[tuple]:
        with psycopg.connect((url or self.database).conninfo, autocommit=True) as conn:
            cur = conn.execute(query, params)
            return cur.fetchall() if cur.description else []

    # ------------------------------------------------------------------ the lifecycle of "Done means"

    def migrate_round_trip(self) -> None:
        self.run("migrate")
        self.run("migrate", "down", "base", "--yes")
        self.run("migrate")
        self.run("migrate", "check")

    def roles_and_rls(self) -> str:
        """``roles check`` and ``rls audit`` clean; returns the audit's summary line."""
        self.run("roles", "check")
        audit = self.run("rls", "audit")
        return audit.stdout.strip().splitlines()[-1]

    def tables(self, url: DbUrl | None = None, schemas: tuple[str, ...] = ()) -> dict[str, str]:
        """``{schema.table: md5 of its rows in order}`` of the application's tables (dbkit's own and TimescaleDB's
        internals aside)."""
        rows = self.sql(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname <> ALL(%s) "
            "AND n.nspname !~ '^(pg_|_timescaledb|_dbkit|timescaledb_)' AND n.nspname <> 'information_schema' "
            "AND (cardinality(%s::text[]) = 0 OR n.nspname = ANY(%s)) ORDER BY 1",
            (["dbkit"], list(schemas), list(schemas)), url=url)
        return {name: self.sql(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {name} t",
                               url=url)[0][0] for (name,) in rows}

    def backup_and_restore(self) -> DbUrl:
        """Back up to moto's S3 and restore into a new database; the restored tables are identical."""
        target = f"s3://{self.bucket}/{self.name}"
        self.run("backup", "--to", target, "--create-bucket")
        into = f"{self.database.dbname}_restored"
        self.created.append(into)
        self.run("restore", "latest", "--from", target, "--into", into)
        restored = self.database.with_dbname(into)
        before, after = self.tables(), self.tables(restored)
        assert before and before == after, f"restored tables differ: {set(before.items()) ^ set(after.items())}"
        return restored

    def healthy(self) -> str:
        out = self.run("check", DBKIT_BACKUP_URI=f"s3://{self.bucket}/{self.name}")
        assert "status: healthy" in out.stdout, out.stdout
        return out.stdout

    def lifecycle(self, *seed_args: str) -> None:
        """Every step of issue 14's "Done means", in order; ``seed_args`` go to ``dbkit seed`` (e.g. --compress)."""
        self.migrate_round_trip()
        self.roles_and_rls()
        self.run("seed", "--profile", "tiny", *seed_args)
        self.pytest()
        self.backup_and_restore()
        self.healthy()


@pytest.fixture
def example_env(dbkit_server, s3_endpoint, s3_admin, tmp_path_factory):
    """``example_env("lifebuddy")`` -> an :class:`Example` copied to a temporary directory with a fresh database;
    its databases are dropped afterwards."""
    from tests.conftest import ACCESS_KEY, REGION, SECRET_KEY, make_shared_tmpdir

    made: list[Example] = []

    def make(name: str, **env: str) -> Example:
        root = make_shared_tmpdir(f"dbkit-example-{name}-") / name
        shutil.copytree(EXAMPLES / name, root, ignore=shutil.ignore_patterns(".dbkit", "backups", "__pycache__",
                                                                             ".pytest_cache", ".env", ".env.*"))
        fake = root / "tests" / "fake_values.txt"  # the fake test values live in git under a name no one sources
        if fake.is_file():
            shutil.copy(fake, root / ".env.test")
        dbname = f"ex_{name}_{uuid.uuid4().hex[:8]}"
        server = dbkit_server.url("postgres")
        with psycopg.connect(server.conninfo, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        bucket = f"dbkit-ex-{name}-{uuid.uuid4().hex[:6]}".lower()
        s3 = {"S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": ACCESS_KEY, "S3_SECRET_KEY": SECRET_KEY,
              "S3_REGION": REGION, "S3_ADDRESSING_STYLE": "path"}
        example = Example(name, root, server, server.with_dbname(dbname), s3, bucket, dict(env), [dbname])
        made.append(example)
        return example

    yield make
    for example in made:
        with psycopg.connect(example.server.conninfo, autocommit=True) as conn:
            for dbname in example.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        shutil.rmtree(example.root.parent, ignore_errors=True)
