"""dbkit backup / restore end to end: real pg_dump/pg_restore, real S3 HTTP endpoint (moto) on loopback."""

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, REGION, SECRET_KEY
from migrate_helpers import q, settings_for

from dbkit.backup import pipeline
from dbkit.errors import ConfigError, Refused
from dbkit.urls import parse_database_url

pytestmark = pytest.mark.integration

TABLES = ["tenants", "users", "documents", "document_chunks", "events", "audit_log"]


def fingerprint(url) -> dict:
    """Row count and an order-independent hash of every table's contents."""
    out = {}
    for t in TABLES:
        out[t] = q(url, f"SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)::numeric), 0) FROM app.{t} x")[0]
    return out


def s3_settings(url, endpoint: str, **env):
    return settings_for(url, S3_ENDPOINT=endpoint, S3_ACCESS_KEY=ACCESS_KEY, S3_SECRET_KEY=SECRET_KEY,
                        S3_REGION=REGION, **env)


@pytest.fixture
def age_key(tmp_path: Path) -> tuple[str, Path]:
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    key_file = tmp_path / "backup.agekey"
    key_file.write_text(str(identity) + "\n")
    key_file.chmod(0o600)
    return str(identity.to_public()), key_file


def test_local_backup_then_restore_into_a_new_database(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path / "backups"))
    manifest = pipeline.backup(settings)
    files = sorted(p.relative_to(tmp_path / "backups").as_posix() for p in (tmp_path / "backups").rglob("*")
                   if p.is_file())
    assert files == [f"{manifest.id}/dump.pgdump.zst", f"{manifest.id}/manifest.json"]
    assert manifest.alembic_revision == "0006" and manifest.database == dbkit_seeded_db.dbname
    assert {"vector", "timescaledb"} <= set(manifest.extensions)
    assert any(t.name == "documents" and t.schema == "app" for t in manifest.tables)
    assert manifest.stored_bytes < manifest.raw_bytes  # zstd did something
    result = pipeline.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_r")
    restored = dbkit_seeded_db.with_dbname(result.database)
    try:
        assert fingerprint(restored) == fingerprint(dbkit_seeded_db)
        assert q(restored, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("events",)]
        assert q(restored, "SELECT count(*) FROM pg_policies WHERE schemaname = 'app'")[0][0] > 0
        assert q(restored, "SELECT version_num FROM dbkit.alembic_version") == [("0006",)]
        with pytest.raises(Refused, match="already exists; restore never overwrites"):
            pipeline.restore(settings, "latest", into=result.database)
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')


def test_s3_backup_encrypted_with_age_is_readable_by_the_age_tool(dbkit_seeded_db, s3_endpoint, bucket, s3_admin,
                                                                  age_key, tmp_path):
    recipient, key_file = age_key
    settings = s3_settings(dbkit_seeded_db, s3_endpoint, DBKIT_BACKUP_URI=f"s3://{bucket}/prod/db",
                           DBKIT_AGE_IDENTITY_FILE=str(key_file))
    manifest = pipeline.backup(settings, encrypt_to=(recipient,), compression="gzip", tags={"env": "test"},
                               storage_class="STANDARD_IA")
    keys = sorted(o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"prod/db/{manifest.id}/dump.pgdump.gz.age", f"prod/db/{manifest.id}/manifest.json"]
    stored = s3_admin.get_object(Bucket=bucket, Key=keys[0])
    assert stored["StorageClass"] == "STANDARD_IA"
    raw = tmp_path / "dump.gz.age"
    raw.write_bytes(stored["Body"].read())
    manifest_json = json.loads(s3_admin.get_object(Bucket=bucket, Key=keys[1])["Body"].read())
    assert manifest_json["encryption"] == {"format": "age", "recipients": [recipient]}
    assert "AGE-SECRET-KEY" not in json.dumps(manifest_json) and SECRET_KEY not in json.dumps(manifest_json)
    # the standard age tool decrypts it without dbkit; gunzip gives pg_dump's custom format
    plain = subprocess.run(["age", "-d", "-i", str(key_file), str(raw)], capture_output=True, check=True).stdout
    import gzip

    assert gzip.decompress(plain)[:5] == b"PGDMP"
    # and dbkit verifies + restores it
    assert pipeline.verify(settings, "latest")["sha256_ok"] is True
    result = pipeline.restore(settings, manifest.id, into=f"{dbkit_seeded_db.dbname}_s3")
    try:
        assert fingerprint(dbkit_seeded_db.with_dbname(result.database)) == fingerprint(dbkit_seeded_db)
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')


def test_failed_pg_dump_leaves_nothing_and_earlier_backups_untouched(dbkit_seeded_db, s3_endpoint, bucket, s3_admin):
    settings = s3_settings(dbkit_seeded_db, s3_endpoint, DBKIT_BACKUP_URI=f"s3://{bucket}/db")
    good = pipeline.backup(settings)
    # app_readonly may not read dbkit's bookkeeping schema: pg_dump fails part-way
    readonly = dbkit_seeded_db.raw.replace("postgres@", "app_readonly@", 1)
    failing = s3_settings(parse_database_url(readonly), s3_endpoint, DBKIT_BACKUP_URI=f"s3://{bucket}/db")
    with pytest.raises(pipeline.BackupFailed, match=r"pg_dump failed \(exit 1\): .*permission denied"):
        pipeline.backup(failing)
    keys = sorted(o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"db/{good.id}/dump.pgdump.zst", f"db/{good.id}/manifest.json"]
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert [m.id for m in pipeline.list_backups(settings)] == [good.id]


def test_corrupted_object_is_refused_on_restore(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    manifest = pipeline.backup(settings, compression="none")
    obj = tmp_path / manifest.id / manifest.object
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    with pytest.raises(pipeline.RestoreFailed, match="does not match its manifest"):
        pipeline.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_bad")
    assert q(dbkit_seeded_db.with_dbname("postgres"),
             "SELECT count(*) FROM pg_database WHERE datname = %s", (f"{dbkit_seeded_db.dbname}_bad",)) == [(0,)]


def test_incomplete_backup_is_invisible_and_pruned(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    first = pipeline.backup(settings)
    second = pipeline.backup(settings)
    leftover = tmp_path / "20200101T000000Z-dead"
    leftover.mkdir()
    (leftover / "dump.pgdump.zst").write_bytes(b"partial")
    old = (datetime.now(UTC) - timedelta(days=3)).timestamp()
    os.utime(leftover / "dump.pgdump.zst", (old, old))
    found = pipeline.scan(settings)
    assert [m.id for m in found.complete] == [second.id, first.id]
    assert [i for i, _ in found.incomplete] == ["20200101T000000Z-dead"]
    plan = pipeline.prune(settings, keep_last=1)
    assert plan["applied"] is False and plan["delete"] == [first.id]
    assert (tmp_path / first.id).exists()  # dry run
    done = pipeline.prune(settings, keep_last=1, apply=True)
    assert done["delete"] == [first.id] and done["incomplete_removed"] == ["20200101T000000Z-dead"]
    assert not (tmp_path / first.id / "manifest.json").exists() and not leftover.joinpath("dump.pgdump.zst").exists()
    assert [m.id for m in pipeline.list_backups(settings)] == [second.id]
    with pytest.raises(ConfigError, match="prune needs at least one --keep-"):
        pipeline.prune(settings)


def test_swap_keeps_the_previous_database(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    pipeline.backup(settings)
    before = fingerprint(dbkit_seeded_db)
    q(dbkit_seeded_db, "DELETE FROM app.audit_log")  # damage after the backup
    with pytest.raises(Refused, match="--swap replaces database"):
        pipeline.restore(settings, "latest", swap=True)
    result = pipeline.restore(settings, "latest", swap=True, yes=True)
    try:
        assert result.swapped and result.database == dbkit_seeded_db.dbname
        assert fingerprint(dbkit_seeded_db) == before  # the restored copy is now in place
        assert q(dbkit_seeded_db.with_dbname(result.previous), "SELECT count(*) FROM app.audit_log") == [(0,)]
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.previous}" WITH (FORCE)')


def test_password_never_on_the_command_line(tmp_path):
    from dbkit.urls import parse_database_url

    url = parse_database_url("postgresql://app:s3cr%3At@db.internal:5432/app?sslmode=require")
    with pipeline._libpq_env(url) as (conninfo, env):
        assert "s3cr" not in conninfo and conninfo == "postgresql://app@db.internal:5432/app?sslmode=require"
        passfile = Path(env["PGPASSFILE"])
        assert oct(passfile.stat().st_mode & 0o777) == "0o600"
        assert passfile.read_text() == "*:*:*:app:s3cr\\:t\n"
    assert not passfile.exists()


def test_cli_backup_list_restore(dbkit_seeded_db, dbkit_cli, tmp_path, s3_endpoint, bucket):
    from migrate_helpers import REPO

    env = {"DATABASE_URL": dbkit_seeded_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": f"s3://{bucket}/cli", "S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": ACCESS_KEY,
           "S3_SECRET_KEY": SECRET_KEY, "S3_REGION": REGION}
    made = dbkit_cli("backup", "--json", env=env)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    listed = dbkit_cli("backup", "list", env=env)
    assert listed.returncode == 0 and backup_id in listed.stdout and "complete" in listed.stdout
    assert SECRET_KEY not in listed.stdout + listed.stderr
    shown = json.loads(dbkit_cli("backup", "show", "latest", env=env).stdout)
    assert shown["id"] == backup_id
    target = f"{dbkit_seeded_db.dbname}_cli"
    res = dbkit_cli("restore", "latest", "--into", target, env=env)
    try:
        assert res.returncode == 0, res.stderr
        assert f"restored backup {backup_id} into database {target}" in res.stdout
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
    bad = dbkit_cli("backup", env={**env, "S3_SECRET_KEY": "wrong-" + SECRET_KEY, "DBKIT_BACKUP_URI": "s3://no-such-bucket-x/y"})
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert SECRET_KEY not in bad.stderr
