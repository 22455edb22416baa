"""dbkit backup / restore end to end: real pg_dump/pg_restore, real S3 HTTP endpoint (moto) on loopback."""

import contextlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, REGION, SECRET_KEY
from migrate_helpers import q, settings_for

from dbkit import _lifecycle as lifecycle
from dbkit._urls import parse_database_url
from dbkit.backup import _pipeline as pipeline
from dbkit.errors import ConfigError, Refused

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
    result = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_r")
    restored = dbkit_seeded_db.with_dbname(result.database)
    try:
        assert fingerprint(restored) == fingerprint(dbkit_seeded_db)
        assert q(restored, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("events",)]
        assert q(restored, "SELECT count(*) FROM pg_policies WHERE schemaname = 'app'")[0][0] > 0
        assert q(restored, "SELECT version_num FROM dbkit.alembic_version") == [("0006",)]
        with pytest.raises(Refused, match="already exists; restore never overwrites"):
            lifecycle.restore(settings, "latest", into=result.database)
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
    assert lifecycle.verify(settings, "latest").sha256_ok is True
    result = lifecycle.restore(settings, manifest.id, into=f"{dbkit_seeded_db.dbname}_s3")
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
        lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_bad")
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
    assert [u.id for u in found.incomplete] == ["20200101T000000Z-dead"]
    plan = pipeline.prune(settings, keep_last=1)
    assert plan.applied is False and plan.delete == (first.id,)
    assert (tmp_path / first.id).exists()  # dry run
    done = pipeline.prune(settings, keep_last=1, apply=True)
    assert done.delete == (first.id,) and done.incomplete_removed == ("20200101T000000Z-dead",)
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
        lifecycle.restore(settings, "latest", swap=True)
    result = lifecycle.restore(settings, "latest", swap=True, yes=True)
    try:
        assert result.swapped and result.database == dbkit_seeded_db.dbname
        assert fingerprint(dbkit_seeded_db) == before  # the restored copy is now in place
        assert q(dbkit_seeded_db.with_dbname(result.previous), "SELECT count(*) FROM app.audit_log") == [(0,)]
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.previous}" WITH (FORCE)')


def test_password_never_on_the_command_line(tmp_path, monkeypatch):
    from dbkit._urls import parse_database_url

    monkeypatch.setenv("PGSSLROOTCERT", "/etc/ssl/db-ca.pem")  # the libpq environment passes through
    url = parse_database_url("postgresql://app:s3cr%3At@db.internal:5432/app?sslmode=require")
    with pipeline._libpq_env(url) as (conninfo, env):
        assert "s3cr" not in conninfo and conninfo == "postgresql://app@db.internal:5432/app?sslmode=require"
        assert env["PGPASSWORD"] == "s3cr:t" and env["PGSSLROOTCERT"] == "/etc/ssl/db-ca.pem"
        assert "PGPASSFILE" not in env or "dbkit" not in env["PGPASSFILE"]  # no file with the password
    query = parse_database_url("postgresql://app@db.internal/app?password=qs3cret&sslmode=require")
    with pipeline._libpq_env(query) as (conninfo, env):
        assert "qs3cret" not in conninfo and env["PGPASSWORD"] == "qs3cret"
    monkeypatch.setenv("PGPASSWORD", "from-env")
    with pipeline._libpq_env(parse_database_url("postgresql://app@db.internal/app")) as (_, env):
        assert env["PGPASSWORD"] == "from-env"


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


def _children(name: str) -> list[int]:
    """PIDs of this process's children running ``name``."""
    me = str(os.getpid())
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if fields.get("PPid", "").strip() == me and fields.get("Name", "").strip() == name:
            found.append(int(status.parent.name))
    return found


def schema_of(settings, url) -> str:
    dump = pipeline.find_program(settings, "pg_dump")
    out = subprocess.run([dump, "--schema-only", "--no-owner", f"--dbname={url.conninfo}"], capture_output=True,
                         text=True, check=True).stdout
    return "\n".join(ln for ln in out.splitlines() if not ln.startswith("--") and "restrict" not in ln.lower())


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
def test_round_trip_identical_schema_and_contents(dbkit_seeded_db, tmp_path, compression):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"file://{tmp_path}")
    manifest = pipeline.backup(settings, compression=compression)
    assert manifest.compression == compression and manifest.object.startswith("dump.pgdump")
    result = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_rt")
    restored = dbkit_seeded_db.with_dbname(result.database)
    try:
        assert schema_of(settings, restored) == schema_of(settings, dbkit_seeded_db)
        assert fingerprint(restored) == fingerprint(dbkit_seeded_db)
        assert result.alembic_revision == "0006" and result.migrate_check == "clean"
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')


def test_wrong_age_key_fails_cleanly(dbkit_seeded_db, tmp_path, age_key):
    import pyrage

    recipient, _ = age_key
    other = tmp_path / "other.key"
    other.write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path / "b"), DBKIT_AGE_IDENTITY_FILE=str(other))
    pipeline.backup(settings, encrypt_to=(recipient,))
    target = f"{dbkit_seeded_db.dbname}_wk"
    with pytest.raises(pipeline.RestoreFailed, match="could not be decrypted with the configured age identity"):
        lifecycle.restore(settings, "latest", into=target)
    assert q(dbkit_seeded_db.with_dbname("postgres"), "SELECT count(*) FROM pg_database WHERE datname = %s",
             (target,)) == [(0,)]
    with pytest.raises(ConfigError, match="secret identity, not a public recipient"):
        pipeline.backup(settings, encrypt_to=(other.read_text().strip(),))


def test_verify_with_restore_test_and_jobs(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    pipeline.backup(settings)
    result = lifecycle.verify(settings, "latest", restore_test=True)
    assert result.sha256_ok and result.restore_test.tables >= 6
    assert result.as_dict()["restore_test"]["tables"] == result.restore_test.tables  # the --json shape
    parallel = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_j", jobs=2)
    try:
        assert fingerprint(dbkit_seeded_db.with_dbname(parallel.database)) == fingerprint(dbkit_seeded_db)
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{parallel.database}" WITH (FORCE)')


@pytest.fixture
def bigger_db(dbkit_seeded_db):
    """The seeded database plus ~300k filler events, so pg_dump is still running when the stream starts."""
    q(dbkit_seeded_db, "INSERT INTO app.events (tenant_id, time, kind, value) SELECT (SELECT id FROM app.tenants "
                       "ORDER BY id LIMIT 1), timestamptz '2025-06-01' + g * interval '1 second', 'filler', g "
                       "FROM generate_series(1, 300000) g")
    return dbkit_seeded_db


def test_password_is_not_in_the_pg_dump_command_line(bigger_db, tmp_path):
    dbkit_seeded_db = bigger_db
    with_pw = parse_database_url(dbkit_seeded_db.raw.replace("postgres@", "postgres:Hunter2Secret@", 1))
    settings = settings_for(with_pw, DBKIT_BACKUP_URI=str(tmp_path))
    seen: list[bytes] = []

    def spy(_bytes: int) -> None:
        for pid in _children("pg_dump"):
            with contextlib.suppress(OSError):
                seen.append(Path(f"/proc/{pid}/cmdline").read_bytes())


    manifest = pipeline.backup(settings, progress=spy)
    assert seen and all(b"Hunter2Secret" not in c for c in seen)
    assert b"--dbname=postgresql://postgres@" in seen[0]
    assert "Hunter2Secret" not in manifest.to_json().decode()


def test_pg_dump_killed_mid_stream_leaves_nothing(bigger_db, tmp_path):
    import signal

    dbkit_seeded_db = bigger_db
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))

    def kill(_bytes: int) -> None:
        for pid in _children("pg_dump"):
            os.kill(pid, signal.SIGKILL)

    with pytest.raises(pipeline.BackupFailed, match=r"pg_dump failed \(exit -9\)"):
        pipeline.backup(settings, progress=kill)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_s3_server_stopped_mid_upload(dbkit_seeded_db, s3_admin):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket="dbkit-fault")
    settings = s3_settings(dbkit_seeded_db, endpoint, DBKIT_BACKUP_URI="s3://dbkit-fault/db")
    stopped = []

    def stop(_bytes: int) -> None:
        if not stopped:
            server.stop()
            stopped.append(True)

    try:
        with pytest.raises(Exception) as err:
            pipeline.backup(settings, progress=stop)
        assert isinstance(err.value, pipeline.DbkitError)
        assert len(str(err.value).splitlines()) == 1 and SECRET_KEY not in str(err.value)
    finally:
        restarted = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        restarted.start()
    try:  # same process, same moto state: nothing was left behind
        listed = client.list_objects_v2(Bucket="dbkit-fault").get("Contents", [])
        assert [o["Key"] for o in listed if o["Key"].endswith("manifest.json")] == []
        assert client.list_multipart_uploads(Bucket="dbkit-fault").get("Uploads", []) == []
    finally:
        restarted.stop()


def test_unwritable_local_target_is_a_clear_error(dbkit_seeded_db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(blocker / "backups"))
    with pytest.raises(pipeline.DbkitError) as err:
        pipeline.backup(settings)
    assert len(str(err.value).splitlines()) == 1 and "a-file" in str(err.value)


def test_metrics_file_and_globals(dbkit_seeded_db, tmp_path):
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path / "b"))
    metrics = tmp_path / "dbkit_backup.prom"
    manifest = pipeline.backup(settings, include_globals=True, metrics_file=str(metrics))
    text = metrics.read_text()
    assert "dbkit_backup_status 1" in text and f'dbkit_backup_bytes{{kind="stored"}} {manifest.stored_bytes}' in text
    assert manifest.globals_object == "globals.sql" and "app_rls" in manifest.roles
    globals_sql = (tmp_path / "b" / manifest.id / "globals.sql").read_text()
    assert "CREATE ROLE app_rls" in globals_sql and "PASSWORD" not in globals_sql.upper().replace("NOPASSWORD", "")
    broken = settings_for(dbkit_seeded_db.with_dbname("no_such_db"), DBKIT_BACKUP_URI=str(tmp_path / "b"))
    with pytest.raises(pipeline.DbkitError):
        pipeline.backup(broken, metrics_file=str(metrics))
    text = metrics.read_text()
    assert "dbkit_backup_status 0" in text and "dbkit_backup_last_success_timestamp_seconds 0.0" not in text
    from prometheus_client.parser import text_string_to_metric_families

    values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
    assert values["dbkit_backup_status"] == 0 and values["dbkit_backup_last_success_timestamp_seconds"] > 1e9
    # a metrics file that cannot be written fails before the dump, in one line, with nothing stored
    before = sorted(p.name for p in (tmp_path / "b").iterdir())
    with pytest.raises(ConfigError, match=r"^--metrics-file cannot be written: directory .*/nowhere does"):
        pipeline.backup(settings, metrics_file=str(tmp_path / "nowhere" / "dbkit.prom"))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == before


def test_prune_on_s3_removes_old_backups_and_stale_uploads(dbkit_seeded_db, s3_endpoint, bucket, s3_admin):
    settings = s3_settings(dbkit_seeded_db, s3_endpoint, DBKIT_BACKUP_URI=f"s3://{bucket}/p")
    made = [pipeline.backup(settings) for _ in range(3)]
    s3_admin.put_object(Bucket=bucket, Key="p/20200101T000000Z-beef/dump.pgdump.zst", Body=b"leftover")
    stale = s3_admin.create_multipart_upload(Bucket=bucket, Key="p/20200101T000000Z-beef/dump.pgdump")
    plan = pipeline.prune(settings, keep_last=2, apply=True,
                          now=datetime.now(UTC) + timedelta(days=2))  # the leftover and the upload are "old"
    assert plan.delete == (made[0].id,) and plan.incomplete_removed == ("20200101T000000Z-beef",)
    keys = sorted(o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert all(made[0].id not in k and "beef" not in k for k in keys)
    assert [m.id for m in pipeline.list_backups(settings)] == [made[2].id, made[1].id]
    uploads = s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert stale["UploadId"] not in [u["UploadId"] for u in uploads]
