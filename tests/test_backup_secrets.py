"""Backup secrets: a real password-protected role (SCRAM in pg_hba.conf), a real ``dbkit backup`` killed
with SIGKILL mid-dump, and the libpq environment (PGPASSWORD) reaching pg_dump/pg_restore."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import clean_env
from migrate_helpers import REPO, q, settings_for

from dbkit import _lifecycle as lifecycle
from dbkit._urls import DbUrl, parse_database_url
from dbkit.backup import _pipeline as pipeline

pytestmark = pytest.mark.integration


@pytest.fixture
def pw_role(dbkit_seeded_db: DbUrl) -> Iterator[tuple[str, str]]:
    """(name, password) of a LOGIN SUPERUSER role that must authenticate with SCRAM over TCP.

    The test server trusts everyone; a pg_hba.conf line for this one role (first match wins) makes
    the server ask it for a password.  The file is restored afterwards.
    """
    admin = dbkit_seeded_db.with_dbname("postgres")
    name, password = f"bkpw_{uuid.uuid4().hex[:8]}", f"Pw-{uuid.uuid4().hex}"
    hba = Path(q(admin, "SHOW hba_file")[0][0])
    try:
        original = hba.read_text()
        hba.write_text(f"host all {name} 0.0.0.0/0 scram-sha-256\nhost all {name} ::/0 scram-sha-256\n"
                       f"local all {name} scram-sha-256\n" + original)
    except OSError:
        pytest.skip("pg_hba.conf of the test server is not writable here (an external server?)")
    with psycopg.connect(admin.conninfo, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(f"CREATE ROLE {name} LOGIN SUPERUSER PASSWORD '{password}'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        bare = parse_database_url(dbkit_seeded_db.raw.replace("postgres@", f"{name}@", 1))
        for _ in range(100):  # the postmaster reloads asynchronously: then the role really needs its password
            try:
                psycopg.connect(bare.conninfo, connect_timeout=5, password="").close()
            except psycopg.OperationalError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the server still lets the role in without its password after pg_reload_conf()")
        yield name, password
    finally:
        hba.write_text(original)
        with psycopg.connect(admin.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            # restores this role made (their owner comes from the archive, their objects may be the role's)
            for (db,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                      (f"{dbkit_seeded_db.dbname}\\_pgpw%",)).fetchall():
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def bigger_db(dbkit_seeded_db: DbUrl) -> DbUrl:
    """The seeded database plus ~400k filler events, so pg_dump runs for a while."""
    q(dbkit_seeded_db, "INSERT INTO app.events (tenant_id, time, kind, value) SELECT (SELECT id FROM app.tenants "
                       "ORDER BY id LIMIT 1), timestamptz '2025-06-01' + g * interval '1 second', 'filler', g "
                       "FROM generate_series(1, 400000) g")
    return dbkit_seeded_db


def children_named(parent: int, name: str, arg: bytes = b"--dbname=") -> list[int]:
    """Children of ``parent`` running ``name`` with ``arg`` on their command line (not ``pg_dump --version``)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(ln.split(":\t", 1) for ln in status.read_text().splitlines() if ":\t" in ln)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(parent) and fields.get("Name", "").strip() == name:
            try:
                if arg in Path(status.parent, "cmdline").read_bytes():
                    found.append(int(status.parent.name))
            except OSError:
                continue
    return found


def files_containing(root: Path, secret: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]


def test_kill_9_mid_dump_leaves_no_secret_on_disk(bigger_db, pw_role, tmp_path, shared_tmp):
    name, password = pw_role
    url = bigger_db.raw.replace("postgres@", f"{name}:{password}@", 1)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    target = shared_tmp / "backups"
    env = clean_env(DATABASE_URL=url, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(REPO), TMPDIR=str(tmpdir),
                    DBKIT_BACKUP_URI=f"file://{target}")
    env.pop("PGPASSWORD", None)
    proc = subprocess.Popen([sys.executable, "-m", "dbkit", "backup"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dumps: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not dumps and proc.poll() is None and time.monotonic() < deadline:
            dumps = children_named(proc.pid, "pg_dump")
            time.sleep(0.005)
        assert dumps, f"pg_dump never ran: {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        os.kill(dumps[0], signal.SIGSTOP)  # freeze the dump mid-stream: dbkit is surely still running
        cmdline = Path(f"/proc/{dumps[0]}/cmdline").read_bytes()
        assert b"--dbname=" in cmdline and password.encode() not in cmdline
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        for pid in dumps:
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert files_containing(tmpdir, password.encode()) == []
    assert list(tmpdir.iterdir()) == []  # no dbkit-pass-* directory either
    if target.exists():
        assert files_containing(target, password.encode()) == []


def test_pgpassword_reaches_pg_dump_and_pg_restore(dbkit_seeded_db, pw_role, tmp_path):
    """--database-url without a password, PGPASSWORD set: migrate-style connections work, so must backup/restore."""
    name, password = pw_role
    bare = dbkit_seeded_db.raw.replace("postgres@", f"{name}@", 1)
    env = clean_env(DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(REPO), DBKIT_BACKUP_URI=f"file://{tmp_path / 'b'}",
                    PGPASSWORD=password)
    base = [sys.executable, "-m", "dbkit", "--database-url", bare]
    made = subprocess.run([*base, "backup", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    target = f"{dbkit_seeded_db.dbname}_pgpw"
    restored = subprocess.run([*base, "restore", backup_id, "--into", target], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
    assert restored.returncode == 0, restored.stderr
    assert password not in made.stdout + made.stderr + restored.stdout + restored.stderr
    assert q(dbkit_seeded_db.with_dbname(target), "SELECT count(*) > 0 FROM app.tenants") == [(True,)]
    # and without PGPASSWORD the same command fails (the role really needs it)
    env.pop("PGPASSWORD")
    failed = subprocess.run([*base, "backup"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0 and len(failed.stderr.strip().splitlines()) == 1


def test_pgpassword_in_process(dbkit_seeded_db, pw_role, tmp_path, monkeypatch):
    name, password = pw_role
    bare = parse_database_url(dbkit_seeded_db.raw.replace("postgres@", f"{name}@", 1))
    monkeypatch.setenv("PGPASSWORD", password)
    settings = settings_for(bare, DBKIT_BACKUP_URI=str(tmp_path / "b"))
    manifest = pipeline.backup(settings, include_globals=True)  # pg_dump and pg_dumpall
    result = lifecycle.restore(settings, manifest.id, into=f"{dbkit_seeded_db.dbname}_pgpw2", jobs=2)
    assert result.tables >= 6
