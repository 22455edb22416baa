"""``dbkit backup``: pg_dump streamed through compression and encryption to storage, manifest last."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from dbkit import _db as db
from dbkit import _target as target
from dbkit._urls import first_line
from dbkit.backup._catalog import _clean_after_backup, _delete_backups
from dbkit.backup._common import (
    CHUNK,
    MAGIC,
    BackupFailed,
    _age_recipients,
    _drain,
    _HashingWriter,
    _libpq_env,
    _major,
    _Pump,
    find_program,
    stale_after,
    storage_for,
)
from dbkit.backup._dump_meta import _check_restorable, _metadata
from dbkit.backup._manifest import Manifest, new_backup_id, object_name
from dbkit.backup._manifest_check import COMPRESSIONS
from dbkit.errors import ConfigError, DbkitError, MissingDependency


def backup(settings, *, to: str | None = None, compression: str = "zstd", level: int | None = None,
           encrypt_to: tuple[str, ...] = (), sse: str | None = None, kms_key_id: str | None = None,
           storage_class: str | None = None, tags: dict[str, str] | None = None, include_globals: bool = False,
           metrics_file: str | None = None, progress: Callable[[int], None] | None = None,
           create_bucket: bool = False):
    """Dump the database with pg_dump and stream it to storage; returns the written Manifest.

    ``include_globals`` also stores ``pg_dumpall --globals-only --no-role-passwords`` as globals.sql;
    ``metrics_file`` writes Prometheus textfile metrics (success or failure) for node_exporter;
    ``create_bucket`` creates a missing S3 bucket first (MinIO and dev setups; s3:// targets only).
    """
    t_start = time.time()
    if metrics_file and not Path(metrics_file).expanduser().absolute().parent.is_dir():  # before the dump, not after
        raise ConfigError("--metrics-file", f"cannot be written: directory {Path(metrics_file).parent} does not exist",
                          example="--metrics-file /var/lib/node_exporter/textfile/dbkit_backup.prom")
    try:
        manifest = _backup(settings, to=to, compression=compression, level=level, encrypt_to=encrypt_to, sse=sse,
                           kms_key_id=kms_key_id, storage_class=storage_class, tags=tags,
                           include_globals=include_globals, progress=progress, create_bucket=create_bucket)
    except BaseException:
        if metrics_file:
            write_metrics(metrics_file, ok=False, duration=time.time() - t_start)
        raise
    if metrics_file:
        write_metrics(metrics_file, ok=True, duration=time.time() - t_start, manifest=manifest)
    return manifest


def write_metrics(path: str, *, ok: bool, duration: float, manifest=None) -> None:
    """Prometheus textfile-collector metrics, written atomically; the last success survives a failure."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
    from prometheus_client.parser import text_string_to_metric_families

    target = Path(path)
    last_success = 0.0
    with contextlib.suppress(OSError, ValueError):
        for family in text_string_to_metric_families(target.read_text()):
            if family.name == "dbkit_backup_last_success_timestamp_seconds":
                last_success = family.samples[0].value
    if ok:
        last_success = time.time()
    registry = CollectorRegistry()
    Gauge("dbkit_backup_last_success_timestamp_seconds", "When the last backup succeeded (unix time).",
          registry=registry).set(last_success)
    Gauge("dbkit_backup_status", "1 when the last backup succeeded, 0 when it failed.",
          registry=registry).set(1 if ok else 0)
    Gauge("dbkit_backup_duration_seconds", "Duration of the last backup attempt.", registry=registry).set(duration)
    if manifest is not None:
        size = Gauge("dbkit_backup_bytes", "Size of the last successful backup.", ["kind"], registry=registry)
        size.labels(kind="raw").set(manifest.raw_bytes)
        size.labels(kind="stored").set(manifest.stored_bytes)
    write_to_textfile(str(target), registry)  # atomic: a temporary file renamed into place


def _backup(settings, *, encrypt_to, **options):
    """``options``: the rest of :func:`backup`'s, passed on to :func:`_backup_stream`."""
    if options["compression"] not in COMPRESSIONS:
        raise ConfigError("--compress", f"is {options['compression']!r}, not one of {', '.join(COMPRESSIONS)}",
                          example="zstd")
    if options["create_bucket"]:
        _check_create_bucket(settings, options["to"])
    recipients = tuple(dict.fromkeys([*settings.age_recipients, *encrypt_to]))
    parsed_recipients = _age_recipients(recipients)
    url = target.resolve_url(settings, direct=True)
    stale_after(settings)  # a malformed DBKIT_BACKUP_STALE_AFTER fails now
    # one session exports the snapshot pg_dump will use and stays open (idle, no locks) until the
    # dump is done; another counts rows in that same snapshot, then closes before pg_dump starts
    with db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout) as holder:
        snapshot = _snapshot(holder)
        with db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout) as conn:
            meta = _metadata(conn, snapshot, settings)
            if "timescaledb" in meta["extensions"]:
                _check_restorable(conn, meta["extensions"]["timescaledb"])
        if snapshot is None:  # counted outside pg_dump's snapshot: only an estimate
            for t in meta["tables"]:
                t.pop("rows", None)
        return _backup_stream(settings, meta, snapshot, url, recipients=recipients,
                              parsed_recipients=parsed_recipients, **options)


def _check_create_bucket(settings, to: str | None) -> None:
    """--create-bucket names S3 targets only: a local folder has no bucket (it is made as backups are written)."""
    from dbkit.backup._storage_uri import parse_storage_uri

    variable = "--to" if to else "DBKIT_BACKUP_URI"
    location = parse_storage_uri(to or settings.backup_uri, base=settings.project_dir, variable=variable)
    if location.kind != "s3":
        raise ConfigError("--create-bucket", f"applies to s3:// targets only, and {variable} is the local folder "
                          f"{location.path} (made as backups are written)",
                          example="dbkit backup --to s3://dev-backups/db --create-bucket")


def _snapshot(conn) -> str | None:
    """Open a REPEATABLE READ transaction and export its snapshot for ``pg_dump --snapshot`` and the
    row counts: the manifest's counts are then those of the dump itself.  The transaction must stay
    open until pg_dump has imported the snapshot (it is kept open until the dump ends); it takes no
    lock.  None where snapshots cannot be exported (the counts are then estimates only)."""
    conn.execute("SET idle_in_transaction_session_timeout = 0")  # idle in transaction while pg_dump runs
    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        return conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
    except Exception:  # noqa: BLE001 - e.g. where snapshots cannot be exported
        conn.execute("ROLLBACK")
        return None


def _backup_stream(settings, meta, snapshot, url, *, to, compression, level, recipients, parsed_recipients, sse,
                   kms_key_id, storage_class, tags, include_globals, progress, create_bucket):
    from dbkit import __version__

    pg_dump = find_program(settings, "pg_dump")
    dump_version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True).stdout.strip()
    if _major(dump_version) < meta["server_version_num"] // 10000:
        raise MissingDependency(f"{pg_dump} is {dump_version}, older than the server ({meta['server_version']})",
                                hint="install the PostgreSQL client of the server's major version or newer")
    storage = storage_for(settings, to, sse=sse, kms_key_id=kms_key_id, storage_class=storage_class, tags=tags)
    # a missing bucket (unless created here) or refused keys fail now, not after a long dump
    if not create_bucket:
        storage.check()
    elif storage.create_bucket():
        import logging

        logging.getLogger("dbkit").info("created the S3 bucket of %s", storage.uri)
    started = datetime.now(UTC)
    backup_id = new_backup_id(started)
    name = object_name(compression, bool(recipients))
    t0 = time.perf_counter()
    with _libpq_env(url) as (conninfo, env):
        snap = [f"--snapshot={snapshot}"] if snapshot else []
        proc = subprocess.Popen([pg_dump, "-Fc", "-Z0", "--no-password", *snap, f"--dbname={conninfo}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        stderr = _drain(proc.stderr)
        pump = _Pump(proc.stdout, compression, level)
        try:
            with storage.open_write(f"{backup_id}/{name}", expected_size=meta["size"]) as writer:
                hashing = _HashingWriter(writer)
                pump.progress = progress
                if parsed_recipients:
                    import pyrage

                    pyrage.encrypt_io(pump, hashing, parsed_recipients)
                else:
                    while chunk := pump.read(CHUNK):
                        hashing.write(chunk)
                rc = proc.wait()
                err = stderr().decode(errors="replace").strip()
                if rc != 0:
                    raise BackupFailed(f"pg_dump failed (exit {rc}): {first_line(err, 'no message')}; nothing was "
                                       "stored and earlier backups are untouched")
                if pump.raw_bytes == 0 or pump.head != MAGIC:
                    raise BackupFailed("pg_dump produced an empty or unrecognizable stream; nothing was stored")
        finally:
            if proc.poll() is None:  # an upload error: do not leave pg_dump behind
                proc.kill()
                proc.wait()
    globals_object = "globals.sql" if include_globals else None
    if include_globals:
        with _libpq_env(url) as (conninfo, env):
            res = subprocess.run([find_program(settings, "pg_dumpall"), "--globals-only", "--no-role-passwords",
                                  "--no-password", f"--dbname={conninfo}"], capture_output=True, env=env)
        if res.returncode != 0:
            storage.delete(f"{backup_id}/{name}")
            raise BackupFailed(f"pg_dumpall --globals-only failed: {first_line(res.stderr.decode(), 'no message')}; "
                               "nothing was stored")
        _write_or_remove(storage, backup_id, globals_object, res.stdout, "store globals.sql")
    finished = datetime.now(UTC)
    manifest = Manifest(
        id=backup_id, database=meta["database"], server_version=meta["server_version"],
        pg_dump_version=dump_version, extensions=meta["extensions"], alembic_revision=meta["alembic_revision"],
        dbkit_version=__version__, started_at=started, finished_at=finished, raw_bytes=pump.raw_bytes,
        stored_bytes=hashing.bytes, sha256=hashing.sha.hexdigest(), object=name, compression=compression,
        compression_level=level, encryption={"format": "age", "recipients": list(recipients)} if recipients else None,
        tables=meta["tables"], duration_s=round(time.perf_counter() - t0, 3),
        sse=sse, storage_class=storage_class, tags=dict(tags or {}), roles=meta["roles"],
        globals_object=globals_object,
    )
    # written LAST; e.g. disk full: no manifest, so the dump is removed too
    _write_or_remove(storage, backup_id, "manifest.json", manifest.to_json(), "write the manifest",
                     hint="free space on the backup target and run `dbkit backup` again")
    _clean_after_backup(settings, storage)
    return manifest


def _write_or_remove(storage, backup_id: str, name: str, data: bytes, what: str, hint: str | None = None) -> None:
    """Store ``data`` as ``name`` of the backup; when that fails, remove what the backup has so far."""
    try:
        with storage.open_write(f"{backup_id}/{name}") as writer:
            writer.write(data)
    except DbkitError as exc:
        with contextlib.suppress(DbkitError):
            _delete_backups(storage, [backup_id])
        raise BackupFailed(f"cannot {what} of backup {backup_id}: {exc.message}; the dump was removed and earlier "
                           "backups are untouched", hint=exc.hint or hint) from None
