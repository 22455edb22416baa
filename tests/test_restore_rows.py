"""Row counts in the manifest (exact within pg_dump's snapshot for small tables, hypertables included) and
the post-restore check: a restore that lost a table's rows fails (real dumps with a table's data left out)."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest
from migrate_helpers import q, settings_for

from dbkit import _lifecycle as lifecycle
from dbkit.backup import _pipeline as pipeline

pytestmark = pytest.mark.integration


def source_counts(url) -> dict[str, int]:
    names = ["tenants", "users", "documents", "document_chunks", "events", "audit_log"]
    return {n: q(url, f"SELECT count(*) FROM app.{n}")[0][0] for n in names}


def test_manifest_counts_rows_exactly_right_after_seeding(dbkit_seeded_db, tmp_path):
    q(dbkit_seeded_db, "INSERT INTO app.events (tenant_id, time, kind, value) SELECT (SELECT id FROM app.tenants "
                       "ORDER BY id LIMIT 1), timestamptz '2025-06-01' + g * interval '1 hour', 'x', g "
                       "FROM generate_series(1, 2000) g")  # more chunks, never analyzed
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    manifest = pipeline.backup(settings)
    by_name = {(t.schema, t.name): t for t in manifest.tables}
    for name, n in source_counts(dbkit_seeded_db).items():
        t = by_name[("app", name)]
        assert n > 0 and t.rows == n and t.rows_estimate == n and t.has_rows is True, name
    assert not [k for k in by_name if k[1].startswith("_hyper_")]  # chunks count with their hypertable
    assert json.loads(manifest.to_json())["tables"][0].keys() >= {"schema", "name", "rows_estimate", "rows"}


def tampered_backup(settings, url, tmp_path, exclude: str):
    """A real backup whose dump is replaced by a real pg_dump that left ``exclude``'s data out (the
    manifest, and its row counts, stay; the checksum is updated so only the row check can notice)."""
    manifest = pipeline.backup(settings, compression="none")
    dump = subprocess.run([pipeline.find_program(settings, "pg_dump"), "-Fc", "-Z0",
                           f"--exclude-table-data={exclude}", f"--dbname={url.conninfo}"],
                          capture_output=True, check=True).stdout
    (tmp_path / manifest.id / manifest.object).write_bytes(dump)
    doc = json.loads((tmp_path / manifest.id / "manifest.json").read_text())
    doc.update(sha256=hashlib.sha256(dump).hexdigest(), stored_bytes=len(dump), raw_bytes=len(dump))
    (tmp_path / manifest.id / "manifest.json").write_text(json.dumps(doc))
    return manifest


@pytest.mark.parametrize("exclude, table", [("app.audit_log", "app.audit_log"),
                                            ("_dbkit_chunks.*", "app.events")])  # a hypertable's chunks
def test_restore_that_lost_a_tables_rows_fails(dbkit_seeded_db, tmp_path, exclude, table):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    n = q(dbkit_seeded_db, f"SELECT count(*) FROM {table}")[0][0]
    assert 0 < n < 1000  # small: the old check skipped it
    tampered_backup(settings, dbkit_seeded_db, tmp_path, exclude)
    target = f"{dbkit_seeded_db.dbname}_lost"
    with pytest.raises(pipeline.RestoreFailed) as err:
        lifecycle.restore(settings, "latest", into=target)
    assert str(err.value).startswith(f"post-restore check failed: {table}: 0 rows restored, the backup has {n} "
                                     "(exact count at dump time)")
    assert len(str(err.value).splitlines()) == 1
    assert q(dbkit_seeded_db.with_dbname("postgres"), "SELECT count(*) FROM pg_database WHERE datname = %s",
             (target,)) == [(0,)]


def test_large_tables_keep_an_estimate_and_must_not_come_back_empty(dbkit_seeded_db, tmp_path, monkeypatch):
    from dbkit.backup import _dump_meta

    monkeypatch.setattr(_dump_meta, "EXACT_COUNT_MAX_BYTES", 0)  # every table counts as large
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    manifest = tampered_backup(settings, dbkit_seeded_db, tmp_path, "_dbkit_chunks.*")
    events = next(t for t in manifest.tables if t.name == "events")
    assert events.rows is None and events.has_rows is True
    with pytest.raises(pipeline.RestoreFailed, match=r"post-restore check failed: app\.events: no rows restored, "
                                                     r"the backup's table had rows"):
        lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_lost2")


def test_good_restore_passes_the_row_check(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    pipeline.backup(settings)
    result = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_ok")
    try:
        assert result.warnings == []
        assert source_counts(dbkit_seeded_db.with_dbname(result.database)) == source_counts(dbkit_seeded_db)
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')


def test_writes_during_the_backup_do_not_fail_the_check(dbkit_seeded_db, tmp_path):
    """The counts are taken in pg_dump's own snapshot: rows written while the dump runs are in neither."""
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    before = q(dbkit_seeded_db, "SELECT count(*) FROM app.audit_log")[0][0]
    written: list[int] = []

    def write(_bytes: int) -> None:
        if not written:
            q(dbkit_seeded_db, "INSERT INTO app.audit_log (tenant_id, action, target_table) SELECT tenant_id, "
                               "'late', 'x' FROM app.audit_log")
            written.append(1)

    manifest = pipeline.backup(settings, progress=write)
    assert written and next(t for t in manifest.tables if t.name == "audit_log").rows == before
    result = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_late")
    try:
        assert q(dbkit_seeded_db.with_dbname(result.database), "SELECT count(*) FROM app.audit_log") == [(before,)]
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')
