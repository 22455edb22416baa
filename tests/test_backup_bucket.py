"""`dbkit backup --create-bucket`: a missing S3 bucket is created (in the configured region, through
S3_ENDPOINT) only when asked; without the flag it is one line naming the flag, and nothing is left
behind; list/prune/verify report a missing bucket and never create it.  Against moto's real HTTP
server on loopback."""

from __future__ import annotations

import contextlib
import json
import urllib.request
import uuid

import pytest
from conftest import ACCESS_KEY, REGION, SECRET_KEY
from migrate_helpers import REPO, q

from dbkit.backup._storage import BucketNotFound, S3Options, StorageConfigError, open_storage

pytestmark = pytest.mark.integration


def _fresh() -> str:
    return f"dbkit-new-{uuid.uuid4().hex[:12]}"


def _exists(s3_admin, bucket: str) -> bool:
    return bucket in {b["Name"] for b in s3_admin.list_buckets().get("Buckets", [])}


def _env(url, endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
            "DBKIT_BACKUP_URI": f"s3://{bucket}/dev/db", "S3_ENDPOINT": endpoint, "S3_ACCESS_KEY": ACCESS_KEY,
            "S3_SECRET_KEY": SECRET_KEY, "S3_REGION": REGION, **extra}


def _one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert SECRET_KEY not in res.stderr + res.stdout
    return lines[0]


@contextlib.contextmanager
def _moto_checks_credentials(endpoint: str):
    """moto's server refuses every unknown access key while inside (it accepts any by default)."""
    def set_count(value: str) -> None:
        req = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=value.encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200

    set_count("0")
    try:
        yield
    finally:
        set_count("inf")


def test_missing_bucket_fails_naming_the_flag_and_leaves_nothing(dbkit_seeded_db, dbkit_cli, s3_endpoint,
                                                                  s3_admin, tmp_path):
    bucket = _fresh()
    metrics = tmp_path / "backup.prom"
    res = dbkit_cli("backup", "--metrics-file", str(metrics), env=_env(dbkit_seeded_db, s3_endpoint, bucket))
    assert res.returncode == 2, res.stderr
    line = _one_line(res)
    assert line.startswith(f"dbkit: error: S3 bucket '{bucket}' does not exist at {s3_endpoint}")
    assert "--create-bucket" in line
    assert not _exists(s3_admin, bucket)  # not created behind the user's back
    assert "dbkit_backup_status 0.0" in metrics.read_text()  # the failure is recorded, nothing else written


def test_create_bucket_then_backup_is_complete_verifiable_and_idempotent(dbkit_seeded_db, dbkit_cli, s3_endpoint,
                                                                         s3_admin):
    bucket = _fresh()
    env = _env(dbkit_seeded_db, s3_endpoint, bucket)
    made = dbkit_cli("backup", "--create-bucket", "--json", env=env)
    assert made.returncode == 0, made.stderr
    first = json.loads(made.stdout)["id"]
    assert _exists(s3_admin, bucket)
    keys = sorted(o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"dev/db/{first}/dump.pgdump.zst", f"dev/db/{first}/manifest.json"]
    # the bucket exists now: the flag changes nothing, and plain backups work too
    again = dbkit_cli("backup", "--create-bucket", "--json", env=env)
    assert again.returncode == 0, again.stderr
    plain = dbkit_cli("backup", "--json", env=env)
    assert plain.returncode == 0, plain.stderr
    ids = [first, json.loads(again.stdout)["id"], json.loads(plain.stdout)["id"]]
    listed = dbkit_cli("backup", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "(3 complete)" in listed.stdout and all(i in listed.stdout for i in ids)
    verified = dbkit_cli("backup", "verify", first, "--restore-test", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    result = json.loads(verified.stdout)
    assert result["id"] == first and result["restore_test"]["tables"] > 0


def test_create_bucket_uses_the_region_and_path_style(s3_endpoint, s3_admin):
    bucket = _fresh()
    options = S3Options(endpoint_url=s3_endpoint, region="eu-west-1", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
                        addressing_style="path")
    storage = open_storage(f"s3://{bucket}/p", s3=options)
    with pytest.raises(BucketNotFound):
        storage.check()
    assert storage.create_bucket() is True
    # outside us-east-1 the bucket was created with its LocationConstraint
    assert s3_admin.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    assert storage.create_bucket() is False  # exists: left alone
    with storage.open_write("x/manifest.json") as writer:
        writer.write(b"{}")
    assert [o.key for o in storage.list()] == ["x/manifest.json"]
    us = open_storage(f"s3://{_fresh()}/p", s3=S3Options(endpoint_url=s3_endpoint, region="us-east-1",
                                                          access_key=ACCESS_KEY, secret_key=SECRET_KEY))
    assert us.create_bucket() is True
    assert s3_admin.get_bucket_location(Bucket=us.bucket)["LocationConstraint"] in (None, "us-east-1")


def test_refused_credentials_are_reported_not_answered_by_a_create(dbkit_seeded_db, dbkit_cli, s3_endpoint,
                                                                    s3_admin):
    bucket = _fresh()
    with _moto_checks_credentials(s3_endpoint):
        res = dbkit_cli("backup", "--create-bucket", env=_env(dbkit_seeded_db, s3_endpoint, bucket))
    assert res.returncode == 2, res.stderr
    assert "access denied by S3" in _one_line(res)
    assert not _exists(s3_admin, bucket)


def test_list_prune_verify_report_a_missing_bucket_and_never_create_it(dbkit_seeded_db, dbkit_cli, s3_endpoint,
                                                                        s3_admin):
    bucket = _fresh()
    env = _env(dbkit_seeded_db, s3_endpoint, bucket)
    for args in (["backup", "list"], ["backup", "prune", "--keep-last", "1", "--apply"], ["backup", "verify"],
                 ["restore", "latest", "--into", f"{dbkit_seeded_db.dbname}_nope"]):
        res = dbkit_cli(*args, env=env)
        assert res.returncode == 2, (args, res.stderr)
        assert _one_line(res).startswith(f"dbkit: error: S3 bucket '{bucket}' does not exist"), args
    assert not _exists(s3_admin, bucket)
    assert q(dbkit_seeded_db, "SELECT count(*) FROM pg_database WHERE datname LIKE '%\\_nope'") == [(0,)]
    # the flag belongs to `dbkit backup` alone
    res = dbkit_cli("backup", "list", "--create-bucket", env=env)
    assert res.returncode == 2 and "--create-bucket" in _one_line(res)


def test_create_bucket_with_a_local_target_is_a_usage_error(dbkit_seeded_db, dbkit_cli, s3_endpoint, tmp_path):
    target = tmp_path / "local-backups"
    res = dbkit_cli("backup", "--to", str(target), "--create-bucket", env=_env(dbkit_seeded_db, s3_endpoint, "x"))
    assert res.returncode == 2, res.stderr
    line = _one_line(res)
    assert line.startswith("dbkit: error: --create-bucket applies to s3:// targets only") and str(target) in line
    assert not target.exists()  # nothing written
    with pytest.raises(StorageConfigError, match="not an S3 location"):
        open_storage(str(target)).create_bucket()


@pytest.mark.unit
def test_create_bucket_refusals_are_one_line():
    from botocore.exceptions import ClientError

    from dbkit.backup._storage_s3_errors import storage_error

    storage = open_storage("s3://taken-name/p", s3=S3Options(endpoint_url="http://127.0.0.1:9", region="eu-west-1",
                                                              access_key=ACCESS_KEY, secret_key=SECRET_KEY))

    def refused(code: str, status: int):
        return storage_error(storage, ClientError({"Error": {"Code": code, "Message": f"{code} {SECRET_KEY}"},
                                                   "ResponseMetadata": {"HTTPStatusCode": status}}, "CreateBucket"),
                             "create the bucket of")

    taken = refused("BucketAlreadyExists", 409)
    assert isinstance(taken, StorageConfigError) and taken.exit_code == 2
    assert str(taken) == ("S3 bucket 'taken-name' at http://127.0.0.1:9 belongs to another account; bucket names "
                          "are global: choose another one in the storage URI")
    region = refused("IllegalLocationConstraintException", 400)
    assert isinstance(region, StorageConfigError) and "in region eu-west-1" in str(region)
    assert "S3_REGION" in str(region) and SECRET_KEY not in str(region)
    missing = refused("NoSuchBucket", 404)
    assert isinstance(missing, BucketNotFound) and "--create-bucket" in str(missing)
