"""Concurrent deploys: many `dbkit migrate` on one fresh database, real subprocesses, real server.

The reference schema builds an HNSW index CONCURRENTLY (revision 0004).  CREATE INDEX
CONCURRENTLY waits for every transaction that holds a snapshot in the database, so a
second run that waits for the advisory lock inside a statement would deadlock with it.
"""

import json
import os
import subprocess
import sys

import pytest
from migrate_helpers import REPO, q

pytestmark = pytest.mark.integration

RUNS = 10


def _env(pg_url) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBKIT_", "DATABASE_URL"))}
    env.update(DATABASE_URL=pg_url.raw, DBKIT_ENV="test", DBKIT_PROJECT_DIR=str(REPO))
    return env


def test_ten_concurrent_migrate_runs_all_succeed_one_applies(pg_url):
    env = _env(pg_url)
    cmd = [sys.executable, "-m", "dbkit", "migrate", "--json"]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(RUNS)]
    outcomes = [(p, *p.communicate(timeout=300)) for p in procs]
    failed = [(p.returncode, err.strip().splitlines()[-3:]) for p, _, err in outcomes if p.returncode != 0]
    assert failed == [], failed
    results = [json.loads(out) for _, out, _ in outcomes]
    head = q(pg_url, "SELECT version_num FROM dbkit.alembic_version")
    assert head == [("0006",)]
    appliers = [r for r in results if r["applied"]]
    assert len(appliers) == 1, [r["applied"] for r in results]
    assert [a["revision"] for a in appliers[0]["applied"]] == ["0001", "0002", "0003", "0004", "0005", "0006"]
    others = [r for r in results if not r["applied"]]
    assert len(others) == RUNS - 1
    assert all(r["before"] == ["0006"] and r["after"] == ["0006"] for r in others), others
    assert q(pg_url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")[0][0] == 0
    assert q(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = "
                     "'app.document_chunks_embedding_hnsw_idx'::regclass") == [(True,)]
    assert q(pg_url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")[0][0] == 0


def test_waiting_run_holds_no_snapshot(tmp_path, pg_url):
    """While it waits for the lock, a second run is idle between short polls (no xmin held)."""
    import time

    from dbkit.migrate._session import ADVISORY_LOCK_KEY

    env = _env(pg_url)
    holder = __import__("psycopg").connect(pg_url.conninfo, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        waiter = subprocess.Popen([sys.executable, "-m", "dbkit", "migrate", "--json"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            # wait until the waiter has connected and said it waits
            for _ in range(600):
                rows = q(pg_url, "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'dbkit%%' "
                                 "AND datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s", (holder.info.backend_pid,))
                if rows:
                    break
                time.sleep(0.05)
            assert rows, "the waiting run never connected"
            # sample: the waiter is never blocked on the advisory lock, and mostly idle without a snapshot
            samples = []
            for _ in range(40):
                samples += q(pg_url, "SELECT state, backend_xmin IS NOT NULL, wait_event_type FROM pg_stat_activity "
                                     "WHERE pid = ANY(%s)", ([r[0] for r in rows],))
                time.sleep(0.02)
            assert samples
            assert not [s for s in samples if s[2] == "Lock"], samples
            assert [s for s in samples if s[0] == "idle" and not s[1]], samples
        finally:
            holder.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        out, err = waiter.communicate(timeout=120)
    finally:
        holder.close()
    assert waiter.returncode == 0, err
    assert "another migration is running" in err
    assert [r["revision"] for r in json.loads(out)["applied"]][-1] == "0006"
