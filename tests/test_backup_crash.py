"""Crashed backups: a real ``dbkit backup`` killed with SIGKILL mid-upload (moto S3 and file://),
then ``dbkit check``, ``backup prune --apply`` and the next successful backup; a full disk while the
manifest is written (a real tmpfs)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, REGION, SECRET_KEY, clean_env
from migrate_helpers import REPO, q, settings_for
from test_backup_secrets import children_named

from dbkit import _health as health
from dbkit.backup import _pipeline as pipeline
from dbkit.backup._storage import PARTIAL

pytestmark = pytest.mark.integration
MIB = 1 << 20


@pytest.fixture
def big_db(dbkit_seeded_db):
    """The seeded database plus ~60 MB of events, so the dump streams for a while."""
    q(dbkit_seeded_db, "INSERT INTO app.events (tenant_id, time, kind, value) SELECT (SELECT id FROM app.tenants "
                       "ORDER BY id LIMIT 1), timestamptz '2025-06-01' + g * interval '1 second', "
                       "'filler-' || md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text), g "
                       "FROM generate_series(1, 500000) g")
    return dbkit_seeded_db


def _written(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return 0
    return int(dict(ln.split(": ") for ln in text.splitlines())["wchar"])


def kill_backup_mid_stream(env: dict[str, str], cwd: Path, *, after_bytes: int, ready=lambda: True) -> str:
    """Run `dbkit backup --compress none`, freeze pg_dump once it wrote ``after_bytes`` and ``ready()``
    holds, then SIGKILL dbkit (and pg_dump).  Returns dbkit's stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "dbkit", "backup", "--compress", "none"], cwd=cwd,
                            env=clean_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dumps: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            dumps = dumps or children_named(proc.pid, "pg_dump")
            if dumps and _written(dumps[0]) >= after_bytes:
                break
            time.sleep(0.002)
        assert dumps and proc.poll() is None, "the backup ended before it could be killed"
        os.kill(dumps[0], signal.SIGSTOP)  # dbkit waits for more of the dump: surely mid-stream
        while not ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready(), "the upload never showed up"
        assert proc.poll() is None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
    finally:
        for pid in dumps:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.stderr.read().decode()


def test_kill_9_of_a_local_backup(big_db, tmp_path):
    target = tmp_path / "backups"
    settings = settings_for(big_db, DBKIT_BACKUP_URI=f"file://{target}")
    good = pipeline.backup(settings, compression="zstd")
    env = {"DATABASE_URL": big_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": f"file://{target}"}
    kill_backup_mid_stream(env, tmp_path, after_bytes=4 * MIB)
    partials = [p for p in target.rglob(f"*{PARTIAL}*")]
    assert len(partials) == 1 and partials[0].stat().st_size > 0
    crashed = partials[0].parent.name
    assert crashed != good.id

    # check: the last attempt is unfinished, with its age; degraded
    report = health.check(settings)
    svc = report.services["backups"]
    assert svc.status == "warn" and report.status != "healthy"
    assert svc.last_status.startswith(f"incomplete ({crashed}, started ") and svc.unfinished == crashed
    assert svc.unfinished_age_hours >= 0 and "no manifest" in svc.hint
    assert "dbkit_backup_unfinished_age_seconds " in health.prometheus(report)
    assert [u.id for u in pipeline.scan(settings).incomplete] == [crashed]

    # prune: too young (DBKIT_BACKUP_STALE_AFTER, 6h by default) -> kept; idle for 7 h -> removed
    kept = pipeline.prune(settings, keep_last=5, apply=True)
    assert kept.incomplete_removed == () and kept.stale_uploads_aborted == () and partials[0].exists()
    later = pipeline.prune(settings, keep_last=5, apply=True, now=datetime.now(UTC) + timedelta(hours=7))
    assert later.incomplete_removed == (crashed,) and later.stale_uploads_aborted == (f"{crashed}/dump.pgdump",)
    assert not partials[0].exists() and not (target / crashed).exists()
    assert [m.id for m in pipeline.list_backups(settings)] == [good.id]


def test_next_backup_removes_stale_local_leftovers(big_db, tmp_path):
    target = tmp_path / "backups"
    settings = settings_for(big_db, DBKIT_BACKUP_URI=f"file://{target}")
    env = {"DATABASE_URL": big_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": f"file://{target}"}
    kill_backup_mid_stream(env, tmp_path, after_bytes=2 * MIB)
    [partial] = target.rglob(f"*{PARTIAL}*")
    # a backup directory without manifest (dump committed, manifest never written) from long ago
    orphan = target / "20200101T000000Z-0bad"
    orphan.mkdir()
    (orphan / "dump.pgdump.zst").write_bytes(b"x" * 100)
    young = target / (datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-0001")  # may still be running
    young.mkdir()
    (young / f"dump.pgdump{PARTIAL}abcdef").write_bytes(b"y" * 100)
    old = (datetime.now(UTC) - timedelta(hours=7)).timestamp()
    for p in (partial, orphan / "dump.pgdump.zst"):
        os.utime(p, (old, old))
    made = pipeline.backup(settings, compression="gzip")
    assert not partial.exists() and not partial.parent.exists() and not orphan.exists()
    assert (young / f"dump.pgdump{PARTIAL}abcdef").exists()  # idle for less than 6 h: left alone
    assert [m.id for m in pipeline.list_backups(settings)] == [made.id]


@pytest.fixture
def s3_env(s3_endpoint):
    return {"S3_ENDPOINT": s3_endpoint, "S3_ACCESS_KEY": ACCESS_KEY, "S3_SECRET_KEY": SECRET_KEY,
            "S3_REGION": REGION}


def test_kill_9_of_an_s3_backup(big_db, tmp_path, bucket, s3_admin, s3_env):
    uri = f"s3://{bucket}/crash"
    settings = settings_for(big_db, DBKIT_BACKUP_URI=uri, **s3_env)
    good = pipeline.backup(settings)
    env = {"DATABASE_URL": big_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": uri, **s3_env}

    def uploads():
        return s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])

    def a_part_is_up() -> bool:
        ups = uploads()
        return bool(ups) and bool(s3_admin.list_parts(Bucket=bucket, Key=ups[0]["Key"],
                                                      UploadId=ups[0]["UploadId"]).get("Parts"))

    kill_backup_mid_stream(env, tmp_path, after_bytes=20 * MIB, ready=a_part_is_up)
    [upload] = uploads()
    crashed = upload["Key"].split("/")[1]
    assert crashed != good.id
    keys = [o["Key"] for o in s3_admin.list_objects_v2(Bucket=bucket, Prefix=f"crash/{crashed}/").get("Contents", [])]
    assert keys == []  # nothing committed: only the multipart upload

    svc = health.check(settings).services["backups"]
    assert svc.status == "warn" and svc.unfinished == crashed
    assert svc.last_status.startswith(f"incomplete ({crashed}, started ")

    kept = pipeline.prune(settings, keep_last=5, apply=True)  # 6 h by default: it may still be running
    assert kept.stale_uploads_aborted == () and len(uploads()) == 1
    dry = pipeline.prune(settings, keep_last=5, now=datetime.now(UTC) + timedelta(hours=7))
    assert dry.stale_uploads_aborted == (f"{crashed}/dump.pgdump",) and len(uploads()) == 1
    # the next successful backup removes it once idle for DBKIT_BACKUP_STALE_AFTER
    time.sleep(2.5)
    quick = settings_for(big_db, DBKIT_BACKUP_URI=uri, DBKIT_BACKUP_STALE_AFTER="2s", **s3_env)
    made = pipeline.backup(quick)
    assert uploads() == []
    assert [m.id for m in pipeline.list_backups(quick)] == [made.id, good.id]
    svc = health.check(quick).services["backups"]
    assert svc.status == "ok" and svc.last_status == "complete"


def test_prune_removes_stale_s3_leftovers_but_not_a_running_upload(dbkit_seeded_db, bucket, s3_admin, s3_env):
    """An upload initiated long ago that still adds parts is running: its newest part counts, not its start."""
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"s3://{bucket}/p", **s3_env)
    pipeline.backup(settings)
    running = s3_admin.create_multipart_upload(Bucket=bucket, Key="p/20200101T000000Z-aaaa/dump.pgdump")
    time.sleep(2.5)
    s3_admin.upload_part(Bucket=bucket, Key="p/20200101T000000Z-aaaa/dump.pgdump", UploadId=running["UploadId"],
                         PartNumber=1, Body=b"z" * 1024)
    quick = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"s3://{bucket}/p", DBKIT_BACKUP_STALE_AFTER="2s",
                         **s3_env)
    plan = pipeline.prune(quick, keep_last=3, apply=True)
    assert plan.stale_uploads_aborted == () and plan.stale_after == "2s"
    assert len(s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1
    time.sleep(2.5)
    plan = pipeline.prune(quick, keep_last=3, apply=True)
    assert plan.stale_uploads_aborted == ("20200101T000000Z-aaaa/dump.pgdump",)
    assert plan.incomplete_removed == ("20200101T000000Z-aaaa",)
    assert s3_admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


@pytest.fixture
def small_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    mounted: list[bool] = []

    def make(size: int) -> Path:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
        mounted.append(True)
        return mount

    yield make
    if mounted:
        subprocess.run(["umount", str(mount)], check=True)


def test_disk_full_while_writing_the_manifest(dbkit_seeded_db, tmp_path, small_tmpfs, dbkit_cli):
    probe = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path / "probe"))
    size = pipeline.backup(probe, compression="none").stored_bytes
    page = 4096
    mount = small_tmpfs(-(-size // page) * page)  # room for the dump, not one page more
    env = {"DATABASE_URL": dbkit_seeded_db.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           "DBKIT_BACKUP_URI": f"file://{mount}"}
    res = dbkit_cli("backup", "--compress", "none", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "unexpected error" not in line and "OSError" not in line
    assert "cannot write the manifest of backup" in line and "No space left on device" in line
    assert [p for p in mount.rglob("*") if p.is_file()] == []  # no dump without manifest, no temp file
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"file://{mount}")
    with pytest.raises(pipeline.BackupFailed, match="cannot write the manifest"):
        pipeline.backup(settings, compression="none")
    with pytest.raises(pipeline.BackupFailed, match="cannot store globals.sql of backup .*No space left on device"):
        pipeline.backup(settings, compression="none", include_globals=True)
    assert [p for p in mount.rglob("*") if p.is_file()] == []
