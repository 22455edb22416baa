"""``dbkit backup``: pg_dump streamed through compression and encryption to storage, manifest last."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbkit import db, target
from dbkit.backup._catalog import _clean_after_backup, _delete_backups
from dbkit.backup._common import (
    CHUNK,
    COMPRESSIONS,
    MAGIC,
    BackupFailed,
    _age_recipients,
    _HashingWriter,
    _libpq_env,
    _major,
    _Pump,
    find_program,
    stale_after,
    storage_for,
)
from dbkit.errors import ConfigError, DbkitError, MissingDependency
from dbkit.urls import first_line

# Roles a dump refers to: owners of the database's schemas, tables, sequences, views and functions,
# and grantees in their ACLs (PUBLIC excluded); the database's owner, its ACL's grantees and the roles with
# settings in it (ALTER ROLE ... IN DATABASE); with TimescaleDB, the owners of jobs and policies (restored
# by name as rows of its catalog).  They must exist before pg_restore runs.
_ROLES_SQL = """
WITH objs AS (
  SELECT datdba AS owner, datacl AS acl FROM pg_database WHERE datname = current_database()
  UNION ALL
  SELECT setrole, NULL FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND setrole <> 0
  UNION ALL
  SELECT nspowner AS owner, nspacl AS acl FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE '\\_timescaledb%'
     AND nspname NOT LIKE 'pg\\_temp%' AND nspname NOT LIKE 'pg\\_toast\\_temp%'
  UNION ALL
  SELECT c.relowner, c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE '\\_timescaledb%'
     AND n.nspname NOT LIKE 'pg\\_temp%'{jobs}
)
SELECT DISTINCT r.rolname FROM (
  SELECT owner AS oid FROM objs
  UNION SELECT (aclexplode(acl)).grantee FROM objs WHERE acl IS NOT NULL
) x JOIN pg_roles r ON r.oid = x.oid ORDER BY 1
"""


#: tables (with their chunks/partitions) up to this size are counted exactly at backup time
EXACT_COUNT_MAX_BYTES = 64 << 20


_TABLES_SQL = """
WITH RECURSIVE top AS (
  SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND (n.nspname NOT LIKE '\\_timescaledb%' {aggregate})
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype = 'e')
     {not_chunk}
), tree(root, rel) AS (
  SELECT oid, oid FROM top
  UNION ALL SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel
)
SELECT top.oid, top.nspname, top.relname,
       (SELECT coalesce(sum(pg_relation_size(rel)), 0) FROM tree WHERE root = top.oid)::bigint,
       (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM tree JOIN pg_class c ON c.oid = tree.rel
         WHERE root = top.oid)::bigint,
       {hypertable}
  FROM top ORDER BY 2, 3
"""


# a continuous aggregate's materialization hypertable (in TimescaleDB's own schema): its rows are counted
# like a table's, under its own name (the restored catalog has the same names)
_MATERIALIZATION = ("EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg a JOIN _timescaledb_catalog.hypertable h "
                    "ON h.id = a.mat_hypertable_id WHERE")

_COMPRESSED_SIZE_SQL = """
SELECT coalesce(sum(pg_table_size(format('%%I.%%I', cc.schema_name, cc.table_name)::regclass)), 0)::bigint
  FROM _timescaledb_catalog.hypertable h JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = h.id
  JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
 WHERE h.schema_name = %s AND h.table_name = %s AND NOT cc.dropped
"""


def _tables(conn, timescaledb: bool, snapshot: str | None) -> list[dict[str, Any]]:
    """Every dumped table with its row count: exact (in ``snapshot``, pg_dump's) when its main fork
    (chunks and partitions included; compressed chunks with their TOAST, where their data is) is at most
    EXACT_COUNT_MAX_BYTES, else an estimate (reltuples of the table and its children, TimescaleDB's
    approximate_row_count for hypertables: compressed rows included) and whether it has any row at all
    (EXISTS).  Hypertables are counted through the hypertable (compressed rows included), continuous
    aggregates through their materialization hypertables (named as such).

    Each count runs in a short transaction of its own that imports the snapshot: its locks are
    released at once, so backing up a database with thousands of chunks needs no more lock slots than
    pg_dump itself.  ``conn`` is in autocommit mode with row security off (like pg_dump: every row is
    counted, or the count fails where the dump would).
    """
    from psycopg import sql

    if timescaledb:
        query = _TABLES_SQL.format(
            not_chunk="AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch "
                      "WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname)",
            aggregate=f"OR {_MATERIALIZATION} h.schema_name = n.nspname AND h.table_name = c.relname)",
            hypertable="EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h "
                       "WHERE h.schema_name = top.nspname AND h.table_name = top.relname)")
    else:
        query = _TABLES_SQL.format(not_chunk="", aggregate="", hypertable="false")

    def one(statement, *params, in_snapshot: bool = True):
        """A value, or None when the table cannot be read (pg_dump will say why)."""
        try:
            if in_snapshot and snapshot:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            value = conn.execute(statement, params or None).fetchone()[0]
            if in_snapshot and snapshot:
                conn.execute("COMMIT")
            return value
        except Exception:  # noqa: BLE001 - psycopg errors (privileges, row security)
            if in_snapshot and snapshot:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            return None

    tables = []
    for oid, schema, name, size, reltuples, is_hypertable in conn.execute(query).fetchall():
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        if is_hypertable:
            size += one(_COMPRESSED_SIZE_SQL, schema, name, in_snapshot=False) or 0
        item: dict[str, Any] = {"schema": schema, "name": name, "rows_estimate": None}
        if size <= EXACT_COUNT_MAX_BYTES:
            rows = one(sql.SQL("SELECT count(*) FROM {}").format(ident))
            if rows is not None:
                item.update(rows=int(rows), rows_estimate=int(rows), has_rows=rows > 0)
                tables.append(item)
                continue
        estimate = one("SELECT approximate_row_count(%s::regclass)", oid, in_snapshot=False) if is_hypertable else None
        estimate = max(int(estimate if estimate is not None else reltuples), 0)
        has_rows = one(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident))
        item.update(rows_estimate=estimate if estimate or not has_rows else None)
        if has_rows is not None:
            item["has_rows"] = bool(has_rows)
        tables.append(item)
    return tables


# TimescaleDB 2.19 stores a compressed batch whose column is entirely NULL as a "NULL" block (two bytes on
# disk) that its pg_dump output has but its restore cannot read back ("function ... returned NULL":
# timescale/timescaledb#8893, fixed by #8153): per compressed chunk, its compressed columns
_NULL_BLOCKS_SQL = """
SELECT format('%I.%I', h.schema_name, h.table_name), format('%I.%I', cc.schema_name, cc.table_name),
       min(a.atttypid::regtype::text), string_agg(format('pg_column_size(%I) = 2', a.attname), ' OR ')
  FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
  JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
  JOIN pg_attribute a ON a.attrelid = format('%I.%I', cc.schema_name, cc.table_name)::regclass
 WHERE NOT cc.dropped AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid::regtype::text LIKE '%compressed_data'
 GROUP BY 1, 2 ORDER BY 1, 2
"""


def _check_restorable(conn, version: str) -> None:
    """Refuse (before anything is stored) a backup TimescaleDB could not restore: compressed batches with a
    column that is entirely NULL, where this TimescaleDB cannot read them back (probed, not guessed)."""
    chunks = conn.execute(_NULL_BLOCKS_SQL).fetchall()
    with contextlib.suppress(Exception):  # psycopg: TimescaleDB 2.19's "function ... returned NULL"
        if not chunks or conn.execute(f"SELECT 'Bg=='::{chunks[0][2]} IS NOT NULL").fetchone()[0]:
            return  # no compressed chunk, or a TimescaleDB that reads the block as pg_dump writes it
    affected: list[str] = []
    for hypertable, chunk, _, has_null_block in chunks:
        with contextlib.suppress(Exception):  # a chunk this role may not read: pg_dump will say why
            if hypertable not in affected and conn.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {chunk} WHERE {has_null_block})").fetchone()[0]:
                affected.append(hypertable)
    if affected:
        raise BackupFailed(f"TimescaleDB {version} cannot restore the compressed chunks of {', '.join(affected)}: "
                           "batches with a column that is entirely NULL, which its dump has but its restore cannot "
                           "read back (timescale/timescaledb#8893); nothing was stored and earlier backups are untouched",
                           hint="upgrade TimescaleDB to a release with its fix (timescale/timescaledb#8153); until then "
                                "decompress those chunks (decompress_chunk) and pause their compression policy")


def _metadata(conn, snapshot: str | None = None, settings=None) -> dict[str, Any]:
    """What the manifest records about the database; ``conn`` in autocommit mode (see :func:`_tables`)."""
    conn.execute("SET row_security = off")
    row = conn.execute("SELECT current_database(), current_setting('server_version'), "
                       "current_setting('server_version_num')::int").fetchone()
    extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall())
    revision = None
    version_table = db.version_table(settings) if settings is not None else "dbkit.alembic_version"
    readable = conn.execute("SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n "
                            "WHERE n.nspname = %s", (version_table.split(".", 1)[0],)).fetchone()
    if readable and readable[0]:
        revision = ",".join(db.applied_revisions(conn, version_table) or []) or None
    tables = _tables(conn, "timescaledb" in extensions, snapshot)
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    jobs = "\n  UNION ALL SELECT owner::oid, NULL FROM _timescaledb_config.bgw_job WHERE id >= 1000"
    roles = [r[0] for r in conn.execute(_ROLES_SQL.format(jobs=jobs if "timescaledb" in extensions else ""))]
    return {"roles": roles, "database": row[0], "server_version": row[1], "server_version_num": row[2], "extensions": extensions,
            "alembic_revision": revision, "tables": tables, "size": size}


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


def _backup(settings, *, to, compression, level, encrypt_to, sse, kms_key_id, storage_class, tags, include_globals,
            progress, create_bucket):
    if compression not in COMPRESSIONS:
        raise ConfigError("--compress", f"is {compression!r}, not one of {', '.join(COMPRESSIONS)}", example="zstd")
    if create_bucket:
        _check_create_bucket(settings, to)
    recipients = tuple(dict.fromkeys([*settings.age_recipients, *encrypt_to]))
    parsed_recipients = _age_recipients(recipients)
    url = target.resolve_url(settings, direct=True)
    stale_after(settings)  # a malformed DBKIT_BACKUP_STALE_AFTER fails now
    with contextlib.ExitStack() as stack:
        # one session exports the snapshot pg_dump will use and stays open (idle, no locks) until the
        # dump is done; another counts rows in that same snapshot, then closes before pg_dump starts
        holder = stack.enter_context(db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout))
        snapshot = _snapshot(holder)
        with db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout) as conn:
            meta = _metadata(conn, snapshot, settings)
            if "timescaledb" in meta["extensions"]:
                _check_restorable(conn, meta["extensions"]["timescaledb"])
        if snapshot is None:  # counted outside pg_dump's snapshot: only an estimate
            for t in meta["tables"]:
                t.pop("rows", None)
        return _backup_stream(settings, meta, snapshot, url, to=to, compression=compression, level=level,
                              recipients=recipients, parsed_recipients=parsed_recipients, sse=sse,
                              kms_key_id=kms_key_id, storage_class=storage_class, tags=tags,
                              include_globals=include_globals, progress=progress, create_bucket=create_bucket)


def _check_create_bucket(settings, to: str | None) -> None:
    """--create-bucket names S3 targets only: a local folder has no bucket (it is made as backups are written)."""
    from dbkit.backup.storage import parse_storage_uri

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
    from dbkit.backup.manifest import Manifest, new_backup_id, object_name

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
        stderr_chunks: list[bytes] = []
        drain = threading.Thread(target=lambda: stderr_chunks.append(proc.stderr.read()), daemon=True)
        drain.start()
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
                drain.join(timeout=30)
                err = b"".join(stderr_chunks).decode(errors="replace").strip()
                if rc != 0:
                    raise BackupFailed(f"pg_dump failed (exit {rc}): {first_line(err, 'no message')}; nothing was "
                                       "stored and earlier backups are untouched")
                if pump.raw_bytes == 0 or pump.head != MAGIC:
                    raise BackupFailed("pg_dump produced an empty or unrecognizable stream; nothing was stored")
        finally:
            if proc.poll() is None:  # an upload error: do not leave pg_dump behind
                proc.kill()
                proc.wait()
    globals_object = None
    if include_globals:
        globals_object = "globals.sql"
        with _libpq_env(url) as (conninfo, env):
            res = subprocess.run([find_program(settings, "pg_dumpall"), "--globals-only", "--no-role-passwords",
                                  "--no-password", f"--dbname={conninfo}"], capture_output=True, env=env)
        if res.returncode != 0:
            storage.delete(f"{backup_id}/{name}")
            raise BackupFailed(f"pg_dumpall --globals-only failed: {first_line(res.stderr.decode(), 'no message')}; "
                               "nothing was stored")
        try:
            with storage.open_write(f"{backup_id}/{globals_object}") as writer:
                writer.write(res.stdout)
        except DbkitError as exc:
            with contextlib.suppress(DbkitError):
                _delete_backups(storage, [backup_id])
            raise BackupFailed(f"cannot store globals.sql of backup {backup_id}: {exc.message}; the dump was "
                               "removed and earlier backups are untouched", hint=exc.hint) from None
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
    try:
        with storage.open_write(f"{backup_id}/manifest.json") as writer:  # written LAST
            writer.write(manifest.to_json())
    except DbkitError as exc:  # e.g. disk full: no manifest, so the dump is removed too
        with contextlib.suppress(DbkitError):
            _delete_backups(storage, [backup_id])
        raise BackupFailed(f"cannot write the manifest of backup {backup_id}: {exc.message}; the dump was removed "
                           "and earlier backups are untouched", hint=exc.hint or "free space on the backup target "
                           "and run `dbkit backup` again") from None
    _clean_after_backup(settings, storage)
    return manifest
