"""`dbkit restore --jobs N` spools the dump to an anonymous file: a real restore killed with SIGKILL
mid-way leaves no copy of the data on disk."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import clean_env
from migrate_helpers import REPO, q, settings_for
from test_backup_secrets import children_named

from dbkit.backup import _pipeline as pipeline

pytestmark = pytest.mark.integration


def test_kill_9_of_a_parallel_restore_leaves_no_dump_on_disk(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path / "b"))
    pipeline.backup(settings)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    target = f"{dbkit_seeded_db.dbname}_spool"
    env = clean_env(DATABASE_URL=dbkit_seeded_db.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(REPO),
                    DBKIT_BACKUP_URI=str(tmp_path / "b"), TMPDIR=str(tmpdir))
    proc = subprocess.Popen([sys.executable, "-m", "dbkit", "restore", "latest", "--into", target, "--jobs", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    restores: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not restores and proc.poll() is None and time.monotonic() < deadline:
            restores = children_named(proc.pid, "pg_restore", arg=b"-L")  # a pass of the parallel restore
            time.sleep(0.002)
        assert restores, f"no parallel pg_restore seen: {proc.stderr.read().decode() if proc.poll() is not None else ''}"
        os.kill(restores[0], signal.SIGSTOP)  # the dump is spooled and in use: dbkit waits for this pass
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        for pid in restores:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    assert [p for p in tmpdir.rglob("*")] == []  # no dbkit-restore-*/dump.pgdump, no list files
