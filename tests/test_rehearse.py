"""`dbkit migrate rehearse`: pending revisions on a scratch copy, traced (locks, rewrites, scans), judged.

A copy of the reference project gets extra revisions on top of its head (0006); the rehearsal runs them
on a clone of a seeded database.  Tiny tables, so the threshold is 0 bytes; the verdict rests on locks,
modes, scans and rewrites, never on time (``max_lock`` is an hour).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from dbkit.migrate import _rehearse as rh
from dbkit.migrate._rehearse_report import verdict
from tests.migrate_helpers import copy_reference_project, q, revision, settings_for

HOUR = 3600.0

UNSAFE = {
    "0007_volatile_default.py": ("0007", "0006", "op.execute('ALTER TABLE app.audit_log ADD COLUMN r float8 DEFAULT random()')"),
    "0008_set_not_null.py": ("0008", "0007", "op.execute('ALTER TABLE app.audit_log ALTER COLUMN actor_id SET NOT NULL')"),
    "0009_index.py": ("0009", "0008", "op.execute('CREATE INDEX audit_log_action_idx ON app.audit_log (action)')"),
    "0010_type.py": ("0010", "0009", "op.execute('ALTER TABLE app.document_chunks ALTER COLUMN chunk_index TYPE bigint')"),
    "0011_fk.py": ("0011", "0010", "op.execute('ALTER TABLE app.audit_log ADD CONSTRAINT audit_log_target_fkey "
                                   "FOREIGN KEY (target_id) REFERENCES app.documents (id)')"),
}
SAFE = {
    "0007_add_nullable.py": ("0007", "0006", "op.execute('ALTER TABLE app.audit_log ADD COLUMN r float8')\n"
                             "op.execute('ALTER TABLE app.audit_log ADD COLUMN c int DEFAULT 1')"),
    "0008_backfill.py": ("0008", "0007", "op.execute('UPDATE app.audit_log SET r = random() WHERE r IS NULL')"),
    "0009_check_not_valid.py": ("0009", "0008", "op.execute('ALTER TABLE app.audit_log ADD CONSTRAINT actor_nn "
                                "CHECK (actor_id IS NOT NULL) NOT VALID')"),
    "0010_validate.py": ("0010", "0009", "op.execute('ALTER TABLE app.audit_log VALIDATE CONSTRAINT actor_nn')"),
    "0011_set_not_null.py": ("0011", "0010", "op.execute('ALTER TABLE app.audit_log ALTER COLUMN actor_id SET NOT NULL')\n"
                             "op.execute('ALTER TABLE app.audit_log DROP CONSTRAINT actor_nn')"),
    "0012_index.py": ("0012", "0011", "op.create_index_concurrently('audit_log_action_idx', 'audit_log', ['action'], "
                      "schema='app')"),
    "0013_new_column.py": ("0013", "0012", "op.execute('ALTER TABLE app.document_chunks ADD COLUMN chunk_index_big "
                           "bigint')"),
    "0014_fk_not_valid.py": ("0014", "0013", "op.execute('ALTER TABLE app.audit_log ADD CONSTRAINT audit_log_target_fkey "
                             "FOREIGN KEY (target_id) REFERENCES app.documents (id) NOT VALID')"),
    "0015_fk_validate.py": ("0015", "0014", "op.execute('ALTER TABLE app.audit_log VALIDATE CONSTRAINT "
                            "audit_log_target_fkey')"),
}


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
    found = {(f.revision, f.rule, f.relation, f.mode) for f in report.findings}
    assert ("0007", "rewrite", "app.audit_log", "ACCESS EXCLUSIVE") in found
    assert ("0008", "scan", "app.audit_log", "ACCESS EXCLUSIVE") in found
    assert ("0009", "scan", "app.audit_log", "SHARE") in found
    assert ("0010", "rewrite", "app.document_chunks", "ACCESS EXCLUSIVE") in found
    assert ("0011", "scan", "app.audit_log", "SHARE ROW EXCLUSIVE") in found
    assert not report.ok
    by_rev = {f.revision: f for f in report.findings}
    assert "CONCURRENTLY" in by_rev["0009"].alternative
    assert "NOT VALID" in by_rev["0011"].alternative and "NOT VALID" in by_rev["0008"].alternative
    assert "backfill" in by_rev["0007"].alternative
    assert by_rev["0008"].file == "0008_set_not_null.py" and by_rev["0008"].line
    assert checksum(dbkit_seeded_db) == before
    assert scratch_dbs(dbkit_seeded_db) == []
