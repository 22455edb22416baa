"""``dbkit backup`` / ``dbkit restore``: pg_dump streamed to storage, manifest written last.

Upload path, all streaming with bounded memory, no temporary files::

    pg_dump -Fc -Z0  ->  zstd | gzip | none  ->  age (optional)  ->  sha256  ->  Storage writer

pg_dump's exit code and stderr are checked after the stream ends; an empty stream, a
stream that does not start with the custom-format magic, or any error aborts the upload
(no object, no orphan multipart parts) and writes no manifest.  The manifest is written
only after the dump object is committed, so a backup without a manifest never counts.

The connection password reaches pg_dump/pg_restore through the child's environment
(PGPASSWORD), never through the command line or a file; the child otherwise sees the same
libpq environment (PGPASSWORD, PGPASSFILE, PGSSL*, PGSERVICE, ...) as dbkit's own connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dbkit import db, target
from dbkit.errors import ConfigError, DbkitError, MissingDependency, OperationFailed, Refused
from dbkit.urls import DbUrl, first_line, parse_database_url

__all__ = ["BackupFailed", "RestoreFailed", "backup", "restore", "list_backups", "scan", "show", "verify", "prune",
           "storage_for", "find_program"]

CHUNK = 1 << 20
#: zstd's job size for multi-threaded compression (bounds its buffers; see _Pump)
ZSTD_JOB_SIZE = 2 << 20
MAGIC = b"PGDMP"
COMPRESSIONS = ("zstd", "gzip", "none")


class BackupFailed(OperationFailed):
    """pg_dump, the compression or encryption, or the storage failed; nothing complete was written."""


class RestoreFailed(OperationFailed):
    """The restore failed or its checks did; the new database was dropped, the existing one untouched."""


# --------------------------------------------------------------------- helpers

def find_program(settings, name: str) -> str:
    """``pg_dump``/``pg_restore`` of the newest local PostgreSQL (server bin dir first, then PATH)."""
    from dbkit.dev import find_bindir

    with contextlib.suppress(DbkitError):
        candidate = find_bindir(settings.pg_bindir) / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise MissingDependency(f"{name} was not found", hint="install the PostgreSQL client: apt-get install "
                                "postgresql-client (its major version must not be older than the server)")
    return found


def _major(version_text: str) -> int:
    m = re.search(r"(\d+)(?:\.\d+)?", version_text)
    return int(m.group(1)) if m else 0


@contextlib.contextmanager
def _libpq_env(url: DbUrl) -> Iterator[tuple[str, dict[str, str]]]:
    """(conninfo without the password, environment for pg_dump/pg_restore/pg_dumpall).

    The child sees the libpq environment dbkit's own connections honour (PGPASSWORD, PGPASSFILE,
    PGSSL*, PGSERVICE, ...); a password in the URL (userinfo or ``?password=``) travels as PGPASSWORD in
    the child's environment only: never on its command line (``ps``) and never in a file, so nothing
    secret is left on disk whatever happens to dbkit (``kill -9`` included).  ``/proc/<pid>/environ``
    is readable by the same user only.
    """
    env = dict(os.environ)
    password = url.password
    bare = url.without_password()
    query = dict(bare.query)
    if "password" in query:  # postgresql://u@h/db?password=... : same treatment
        from urllib.parse import urlencode, urlsplit, urlunsplit

        password = password if password is not None else query["password"]
        parts = urlsplit(bare.raw)
        rest = [(k, v) for k, v in bare.query if k != "password"]
        bare = parse_database_url(urlunsplit(parts._replace(query=urlencode(rest))))
    if password is not None:
        env["PGPASSWORD"] = password
    yield bare.conninfo, env


def storage_for(settings, uri: str | None = None, **s3_extra):
    """The Storage for ``uri`` (or DBKIT_BACKUP_URI; relative paths are under the project).

    ``s3_extra``: per-backup S3 options (``sse``, ``kms_key_id``, ``storage_class``, ``tags``).
    """
    from dbkit.backup.storage import S3Options, open_storage

    options = S3Options(endpoint_url=settings.s3_endpoint, region=settings.s3_region,
                        access_key=settings.s3_access_key, secret_key=settings.s3_secret_key,
                        addressing_style=settings.s3_addressing_style,
                        **{k: v for k, v in s3_extra.items() if v})
    return open_storage(uri or settings.backup_uri, s3=options, base=settings.project_dir,
                        variable="--to" if uri else "DBKIT_BACKUP_URI")


class _Pump(io.RawIOBase):
    """A readable stream over pg_dump's stdout that compresses on the way and counts raw bytes."""

    def __init__(self, source, compression: str, level: int | None) -> None:
        self.source, self.raw_bytes, self.head = source, 0, b""
        self.progress: Callable[[int], None] | None = None
        self._buf = bytearray()
        self._eof = False
        if compression == "zstd":
            import zstandard

            # multi-threaded, with small jobs: zstd's default job size at level 3 costs ~65 MiB of buffers
            # (measured: bench/backup_rss.py); 2 MiB jobs cost ~19 MiB at the same speed and ratio
            params = zstandard.ZstdCompressionParameters.from_level(level or 3, threads=-1, job_size=ZSTD_JOB_SIZE)
            self._c = zstandard.ZstdCompressor(compression_params=params).compressobj()
        elif compression == "gzip":
            self._c = zlib.compressobj(level if level is not None else 6, zlib.DEFLATED, 31)
        else:
            self._c = None

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self._buf and not self._eof:
            chunk = self.source.read(CHUNK)
            if not chunk:
                self._eof = True
                if self._c is not None:
                    self._buf += self._c.flush()
                break
            if len(self.head) < len(MAGIC):
                self.head += chunk[: len(MAGIC) - len(self.head)]
            self.raw_bytes += len(chunk)
            if self.progress is not None:
                self.progress(self.raw_bytes)
            self._buf += self._c.compress(chunk) if self._c is not None else chunk

    def readinto(self, b) -> int:
        self._fill()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        del self._buf[:n]
        return n


class _HashingWriter(io.RawIOBase):
    def __init__(self, target) -> None:
        self.target, self.sha, self.bytes = target, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        data = bytes(b)
        self.sha.update(data)
        self.bytes += len(data)
        self.target.write(data)
        return len(data)


# Roles a dump refers to: owners of the database's schemas, tables, sequences, views and functions,
# and grantees in their ACLs (PUBLIC excluded); the database's owner, its ACL's grantees and the roles with
# settings in it (ALTER ROLE ... IN DATABASE).  They must exist before pg_restore runs.
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
     AND n.nspname NOT LIKE 'pg\\_temp%'
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
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE '\\_timescaledb%'
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


_COMPRESSED_SIZE_SQL = """
SELECT coalesce(sum(pg_relation_size(format('%I.%I', cc.schema_name, cc.table_name)::regclass)), 0)::bigint
  FROM _timescaledb_catalog.hypertable h JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = h.id
  JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
 WHERE h.schema_name = %s AND h.table_name = %s AND NOT cc.dropped
"""


def _tables(conn, timescaledb: bool, snapshot: str | None) -> list[dict[str, Any]]:
    """Every dumped table with its row count: exact (in ``snapshot``, pg_dump's) when its main fork
    (chunks, partitions and compressed chunks included) is at most EXACT_COUNT_MAX_BYTES, else an
    estimate (reltuples of the table and its children, TimescaleDB's approximate_row_count for
    hypertables) and whether it has any row at all (EXISTS).

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
            hypertable="EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h "
                       "WHERE h.schema_name = top.nspname AND h.table_name = top.relname)")
    else:
        query = _TABLES_SQL.format(not_chunk="", hypertable="false")

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


def _metadata(conn, snapshot: str | None = None) -> dict[str, Any]:
    """What the manifest records about the database; ``conn`` in autocommit mode (see :func:`_tables`)."""
    conn.execute("SET row_security = off")
    row = conn.execute("SELECT current_database(), current_setting('server_version'), "
                       "current_setting('server_version_num')::int").fetchone()
    extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall())
    revision = None
    readable = conn.execute("SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n "
                            "WHERE n.nspname = 'dbkit'").fetchone()
    if readable and readable[0]:
        revision = ",".join(db.applied_revisions(conn) or []) or None
    tables = _tables(conn, "timescaledb" in extensions, snapshot)
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    roles = [r[0] for r in conn.execute(_ROLES_SQL)]
    return {"roles": roles, "database": row[0], "server_version": row[1], "server_version_num": row[2], "extensions": extensions,
            "alembic_revision": revision, "tables": tables, "size": size}


# --------------------------------------------------------------------- backup

def backup(settings, *, to: str | None = None, compression: str = "zstd", level: int | None = None,
           encrypt_to: tuple[str, ...] = (), sse: str | None = None, kms_key_id: str | None = None,
           storage_class: str | None = None, tags: dict[str, str] | None = None, include_globals: bool = False,
           metrics_file: str | None = None, progress: Callable[[int], None] | None = None):
    """Dump the database with pg_dump and stream it to storage; returns the written Manifest.

    ``include_globals`` also stores ``pg_dumpall --globals-only --no-role-passwords`` as globals.sql;
    ``metrics_file`` writes Prometheus textfile metrics (success or failure) for node_exporter.
    """
    t_start = time.time()
    try:
        manifest = _backup(settings, to=to, compression=compression, level=level, encrypt_to=encrypt_to, sse=sse,
                           kms_key_id=kms_key_id, storage_class=storage_class, tags=tags,
                           include_globals=include_globals, progress=progress)
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
            progress):
    if compression not in COMPRESSIONS:
        raise ConfigError("--compress", f"is {compression!r}, not one of {', '.join(COMPRESSIONS)}", example="zstd")
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
            meta = _metadata(conn, snapshot)
        if snapshot is None:  # counted outside pg_dump's snapshot: only an estimate
            for t in meta["tables"]:
                t.pop("rows", None)
        return _backup_stream(settings, meta, snapshot, url, to=to, compression=compression, level=level,
                              recipients=recipients, parsed_recipients=parsed_recipients, sse=sse,
                              kms_key_id=kms_key_id, storage_class=storage_class, tags=tags,
                              include_globals=include_globals, progress=progress)


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
                   kms_key_id, storage_class, tags, include_globals, progress):
    from dbkit import __version__
    from dbkit.backup.manifest import Manifest, new_backup_id, object_name

    pg_dump = find_program(settings, "pg_dump")
    dump_version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True).stdout.strip()
    if _major(dump_version) < meta["server_version_num"] // 10000:
        raise MissingDependency(f"{pg_dump} is {dump_version}, older than the server ({meta['server_version']})",
                                hint="install the PostgreSQL client of the server's major version or newer")
    storage = storage_for(settings, to, sse=sse, kms_key_id=kms_key_id, storage_class=storage_class, tags=tags)
    storage.check()  # a missing bucket or refused keys fail now, not after a long dump
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


def _clean_after_backup(settings, storage) -> None:
    """After a successful backup: remove leftovers of crashed ones older than DBKIT_BACKUP_STALE_AFTER.
    A failure here is logged, never fails the backup that just succeeded."""
    import logging

    log = logging.getLogger("dbkit")
    try:
        folders, uploads = _leftovers(storage, scan(settings, storage=storage), datetime.now(UTC),
                                      stale_after(settings))
        _remove_leftovers(storage, folders, uploads)
    except DbkitError as exc:
        log.warning("backup done, but removing leftovers of unfinished backups failed: %s", exc.message)
        return
    if folders or uploads:
        log.info("removed leftovers of unfinished backups: %s", ", ".join([*folders, *(u.key for u in uploads)]))


def _age_recipients(recipients: tuple[str, ...]) -> list:
    if not recipients:
        return []
    import pyrage

    parsed = []
    for r in recipients:
        if r.startswith("AGE-SECRET-KEY-"):
            raise ConfigError("--encrypt-to", "was given a secret identity, not a public recipient (age1...)",
                              example="--encrypt-to age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p")
        try:
            parsed.append(pyrage.x25519.Recipient.from_str(r))
        except Exception:  # noqa: BLE001 - pyrage raises its own RecipientError
            raise ConfigError("--encrypt-to", f"{r[:12]}... is not an age X25519 recipient",
                              example="age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p") from None
    return parsed


# --------------------------------------------------------------------- reading backups

@dataclass
class Scan:
    """What a backup location holds: complete backups (newest first), attempts without a manifest
    (folder, last sign of life; newest first) and manifests that could not be read.

    An attempt without a manifest is a folder with committed objects but no manifest.json, or one
    that only has an unfinished write (an S3 multipart upload, a local ``.partial-`` file): a backup
    that failed, was killed, or is still running.
    """

    complete: list
    incomplete: list[tuple[str, datetime]]
    unreadable: list[tuple[str, str]]

    def unfinished_after_newest(self) -> list[tuple[str, datetime]]:
        """Attempts without a manifest that started after the newest complete backup (ids carry their
        start time, to the second) or wrote after it finished, newest first."""
        from dbkit.backup.manifest import is_backup_id, parse_backup_id

        if not self.complete:
            return list(self.incomplete)
        newest = self.complete[0]
        started = parse_backup_id(newest.id) if is_backup_id(newest.id) else newest.started_at
        return [(i, t) for i, t in self.incomplete
                if t > newest.finished_at or (is_backup_id(i) and parse_backup_id(i) > started)]


def scan(settings, uri: str | None = None, storage=None, *, uploads: bool = True) -> Scan:
    """``uploads``: also look for unfinished writes (S3: ListMultipartUploads, which a read-only
    restore role may not be allowed; not needed to list or restore complete backups)."""
    from dbkit.backup.manifest import MANIFEST_NAME, Manifest, ManifestError, is_backup_id

    storage = storage or storage_for(settings, uri)
    folders: dict[str, list] = {}
    for obj in storage.list():
        folder, _, name = obj.key.partition("/")
        if name and is_backup_id(folder):
            folders.setdefault(folder, []).append(obj)
    activity: dict[str, list[datetime]] = {}
    for up in storage.list_incomplete_uploads() if uploads else ():
        folder, _, name = up.key.partition("/")
        if name and is_backup_id(folder) and up.last_activity is not None:
            activity.setdefault(folder, []).append(up.last_activity)
    complete, incomplete, unreadable = [], [], []
    for folder in sorted(set(folders) | set(activity)):
        objects = folders.get(folder, [])
        if not any(o.key == f"{folder}/{MANIFEST_NAME}" for o in objects):
            incomplete.append((folder, max([o.modified for o in objects] + activity.get(folder, []))))
            continue
        try:
            with storage.open_read(f"{folder}/{MANIFEST_NAME}") as fh:
                complete.append(Manifest.from_json(fh.read(), backup_id=folder))
        except ManifestError as exc:
            unreadable.append((folder, exc.message))
    complete.sort(key=lambda m: (m.finished_at, m.id), reverse=True)  # "latest" is by manifest time
    return Scan(complete, sorted(incomplete, reverse=True), sorted(unreadable, reverse=True))


def list_backups(settings, uri: str | None = None) -> list:
    """Complete backups (those with a manifest), newest first."""
    return scan(settings, uri, uploads=False).complete


def stale_after(settings):
    """DBKIT_BACKUP_STALE_AFTER as a timedelta (``6h``, ``90min``, ``1d``, ``30s``, ``0``)."""
    from datetime import timedelta

    text = str(settings.backup_stale_after).strip()
    m = re.fullmatch(r"(\d+)(ms|s|min|h|d)?", text)
    if not m:
        raise ConfigError("DBKIT_BACKUP_STALE_AFTER", f"is {text!r}, not a duration", example="6h")
    unit = {"ms": 0.001, "s": 1, None: 1, "min": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=int(m.group(1)) * unit)


def _leftovers(storage, found: Scan, now: datetime, min_age) -> tuple[list[str], list]:
    """(folders without a manifest, unfinished uploads) whose last sign of life is older than ``min_age``."""
    from dbkit.backup import retention

    folders = retention.incomplete_to_remove(found.incomplete, now, min_age)
    uploads = storage.list_incomplete_uploads(older_than=now - min_age)
    return folders, uploads


def _remove_leftovers(storage, folders: list[str], uploads: list) -> None:
    for up in uploads:  # S3 multipart uploads / local .partial- files (never younger than the cutoff)
        storage.abort_upload(up)
    _delete_backups(storage, folders)


def _delete_backups(storage, backup_ids) -> None:
    for backup_id in backup_ids:
        keys = [o.key for o in storage.list(f"{backup_id}/")]
        # the manifest goes first: a half-deleted backup must never look complete
        for key in sorted(keys, key=lambda k: not k.endswith("/manifest.json")):
            storage.delete(key)


def prune(settings, *, uri: str | None = None, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
          keep_monthly: int = 0, min_keep: int = 1, apply: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Choose which complete backups to keep (restic-style rules; the newest always stays) and, with
    ``apply``, delete the others and the leftovers of unfinished backups (folders without a manifest,
    S3 multipart uploads, local ``.partial-`` files) whose last sign of life is older than
    DBKIT_BACKUP_STALE_AFTER (a backup that may still be running is never touched)."""
    from dbkit.backup import retention

    if apply:
        settings.require_environment("prune --apply")
    now = now or datetime.now(UTC)
    min_age = stale_after(settings)
    storage = storage_for(settings, uri)
    found = scan(settings, uri, storage)
    plan = retention.choose([retention.BackupRef(m.id, m.finished_at) for m in found.complete],
                            keep_last=keep_last, keep_daily=keep_daily, keep_weekly=keep_weekly,
                            keep_monthly=keep_monthly, min_keep=min_keep, now=now)
    leftovers, stale = _leftovers(storage, found, now, min_age)
    if apply:
        _delete_backups(storage, plan.delete)
        _remove_leftovers(storage, leftovers, stale)
    return {"applied": apply, "keep": [{"id": i, "reasons": list(r)} for i, r in plan.keep],
            "delete": plan.delete, "incomplete_removed": leftovers,
            "stale_uploads_aborted": [u.key for u in stale], "unreadable": found.unreadable,
            "stale_after": str(settings.backup_stale_after)}


def show(settings, backup_id: str, uri: str | None = None):
    backups = list_backups(settings, uri)
    if not backups:
        raise DbkitError(f"no complete backup in {storage_for(settings, uri).uri}",
                         hint="run `dbkit backup` first (a backup without manifest.json does not count)")
    if backup_id == "latest":
        return backups[0]
    for m in backups:
        if m.id == backup_id:
            return m
    raise DbkitError(f"backup {backup_id} not found (or incomplete) in {storage_for(settings, uri).uri}",
                     hint="`dbkit backup list` shows the complete ones")


class _VerifyingReader(io.RawIOBase):
    """Reads the stored object, hashing it; ``finish()`` compares with the manifest."""

    def __init__(self, fh, expected_sha: str, expected_size: int) -> None:
        self.fh, self.expected_sha, self.expected_size = fh, expected_sha, expected_size
        self.sha, self.bytes = hashlib.sha256(), 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.fh.read(len(b))
        if not data:
            return 0
        self.sha.update(data)
        self.bytes += len(data)
        b[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        while self.read(CHUNK):
            pass
        if self.bytes != self.expected_size or self.sha.hexdigest() != self.expected_sha:
            raise RestoreFailed(f"the stored object does not match its manifest (sha256 {self.sha.hexdigest()[:12]}"
                                f" vs {self.expected_sha[:12]}, {self.bytes} vs {self.expected_size} bytes): "
                                "the backup is corrupt or was tampered with")


def _identities(settings) -> list:
    import pyrage

    texts = []
    if settings.age_identity_file:
        path = Path(os.path.expanduser(str(settings.age_identity_file)))
        try:
            texts += [ln.strip() for ln in path.read_text().splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
        except OSError as exc:
            raise ConfigError("DBKIT_AGE_IDENTITY_FILE", f"cannot be read ({exc.strerror})",
                              example="DBKIT_AGE_IDENTITY_FILE=/run/secrets/backup.agekey") from None
    if settings.age_identity:
        texts.append(settings.age_identity.strip())
    if not texts:
        raise ConfigError("DBKIT_AGE_IDENTITY_FILE", "is not set and the backup is encrypted",
                          purpose="points at the age secret key that decrypts backups",
                          example="DBKIT_AGE_IDENTITY_FILE=/run/secrets/backup.agekey (or DBKIT_AGE_IDENTITY)")
    try:
        return [pyrage.x25519.Identity.from_str(t) for t in texts]
    except Exception:  # noqa: BLE001
        raise ConfigError("DBKIT_AGE_IDENTITY", "does not hold a valid age identity",
                          example="AGE-SECRET-KEY-1...") from None


# --------------------------------------------------------------------- restore

@dataclass
class RestoreResult:
    backup_id: str
    database: str
    swapped: bool
    previous: str | None
    seconds: float
    tables: int
    alembic_revision: str | None = None
    migrate_check: str | None = None  # "clean" or what `dbkit migrate check` found
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _check_server(settings, admin, manifest) -> None:
    """Before anything is created: TimescaleDB version available, roles the dump refers to present."""
    wanted = (manifest.extensions or {}).get("timescaledb")
    if wanted:
        versions = [r[0] for r in admin.execute(
            "SELECT version FROM pg_available_extension_versions WHERE name = 'timescaledb'")]
        if wanted not in versions:
            raise RestoreFailed(f"the backup has TimescaleDB {wanted}, which this server does not have "
                                f"(available: {', '.join(versions) or 'none'})",
                                hint="install that TimescaleDB version on the server, then restore")
    missing = _missing_roles(admin, manifest.roles)
    if missing:
        from dbkit import roles as roles_mod

        declared = set(roles_mod.role_names(settings).values())
        if set(missing) <= declared:  # roles as code: create them from sql/roles/
            roles_mod.apply(settings, admin)
            missing = _missing_roles(admin, manifest.roles)
    if missing:
        raise RestoreFailed(f"roles the backup refers to do not exist on this server: {', '.join(missing)}",
                            hint="run `dbkit roles apply` (or restore with --globals) first")


def _missing_roles(admin, roles) -> list[str]:
    present = {r[0] for r in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(roles),))}
    return [r for r in roles if r not in present]


def _apply_globals(storage, manifest, admin) -> list[str]:
    """Run globals.sql statement by statement; objects that already exist are skipped (SQLSTATE 42710)."""
    from psycopg import errors

    from pglast.parser import split

    with storage.open_read(f"{manifest.id}/{manifest.globals_object}") as fh:
        text = fh.read().decode()
    # psql meta-commands (connect, restrict) take whole lines; the rest is SQL, split by PostgreSQL's scanner
    sql_text = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("\\"))
    skipped = []
    for piece in split(sql_text, with_parser=False):
        stmt = "\n".join(ln for ln in piece.splitlines() if not ln.lstrip().startswith("--")).strip()
        if not stmt or stmt.split(None, 1)[0].upper() == "SET":
            continue
        try:
            with admin.transaction():
                admin.execute(stmt)
        except errors.DuplicateObject:
            skipped.append(" ".join(stmt.split())[:60])
    return skipped


def restore(settings, backup_id: str = "latest", *, source: str | None = None, into: str | None = None,
            jobs: int = 1, swap: bool = False, yes: bool = False, with_globals: bool = False) -> RestoreResult:
    """Restore a backup into a NEW database (never into an existing one).

    jobs == 1 streams download -> sha256 -> decrypt -> decompress -> pg_restore (stdin); jobs > 1 spools
    the dump to a temporary file first (pg_restore -j needs a seekable file).  The sha256 is checked at the
    end; on any failure the new database is dropped.  ``swap`` then renames the current database to
    ``<db>_pre_restore_<time>`` and the restored one into its place (the old one is kept).
    """
    from psycopg import sql

    if swap:
        settings.require_environment("restore --swap")
    manifest = show(settings, backup_id, source)
    storage = storage_for(settings, source)
    url = target.resolve_url(settings, direct=True)
    target_name = into or f"{manifest.database}_restore_{manifest.id.split('-')[0].lower()}"
    if swap and not yes:
        raise Refused(f"--swap replaces database {url.dbname} with the restored copy (connections to it are "
                      "terminated)", hint="add --yes to confirm")
    t0 = time.perf_counter()
    result = RestoreResult(manifest.id, target_name, False, None, 0.0, 0)
    with db.connect(url.with_dbname("postgres"), autocommit=True, connect_timeout=settings.connect_timeout) as admin:
        if db.database_exists(admin, target_name):
            raise Refused(f"database {target_name} already exists; restore never overwrites",
                          hint="choose another name with --into, or drop it yourself")
        if with_globals and manifest.globals_object:
            skipped = _apply_globals(storage, manifest, admin)
            if skipped:
                result.warnings.append(f"globals.sql: {len(skipped)} object(s) already existed and were kept")
        _check_server(settings, admin, manifest)
        properties = _database_properties(settings, storage, manifest)  # before anything is created
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target_name)))
        try:
            _pg_restore(settings, storage, manifest, url.with_dbname(target_name), jobs)
            _apply_database_properties(admin, properties, manifest.database, target_name)
            _after_restore(settings, url.with_dbname(target_name), manifest, result)
        except BaseException:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target_name)))
            raise
        if swap:
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            previous = f"{url.dbname}_pre_restore_{stamp}"
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND pid <> pg_backend_pid()", (url.dbname,))
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(url.dbname),
                                                                         sql.Identifier(previous)))
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(target_name),
                                                                         sql.Identifier(url.dbname)))
            result.swapped, result.previous, result.database = True, previous, url.dbname
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _database_properties(settings, storage, manifest) -> list[str]:
    """The database-level statements of the archive: owner, COMMENT, ACL (GRANT/REVOKE ... ON DATABASE),
    ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET, as ``pg_restore --create`` would run them.

    pg_dump puts them in every custom-format archive (DATABASE, COMMENT, ACL and DATABASE PROPERTIES
    entries); ``pg_restore --create`` emits them for the archive's own database name, so they are read
    here (schema-only, a schema filter that matches nothing: the TOC alone, pg_restore stops reading
    after it) and re-applied to the new database by :func:`_apply_database_properties`.
    """
    import secrets

    pg_restore = find_program(settings, "pg_restore")
    args = [pg_restore, "--create", "--schema-only", "-n", f"dbkit_no_such_schema_{secrets.token_hex(6)}",
            "--file=-"]
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[bytes] = []
    errs: list[bytes] = []
    readers = [threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    try:
        _stream_dump(settings, storage, manifest, proc.stdin)
    except BrokenPipeError:
        pass  # pg_restore read the TOC and stopped: all it needs
    except BaseException:
        proc.kill()
        raise
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()
    rc = proc.wait()
    for t in readers:
        t.join(timeout=30)
    if rc != 0:
        raise RestoreFailed("pg_restore could not read the database properties of the backup: "
                            f"{first_line(b''.join(errs).decode(errors='replace'), 'no message')}")
    return _property_statements(b"".join(out).decode())


def _property_statements(script: str) -> list[str]:
    """Statements of a ``pg_restore --create`` script that set database properties (no CREATE DATABASE,
    no psql meta-commands, no session SETs)."""
    statements, current = [], []
    for line in script.splitlines():
        if not current and (not line.strip() or line.startswith(("--", "\\", "SET ", "SELECT pg_catalog.set_config"))):
            continue
        current.append(line)
        text = "\n".join(current)
        if text.rstrip().endswith(";") and text.count("'") % 2 == 0:
            statements.append(text.strip())
            current = []
    keep = re.compile(r"(ALTER DATABASE|COMMENT ON DATABASE|GRANT|REVOKE|ALTER ROLE|SECURITY LABEL)\b", re.I)
    return [st for st in statements if keep.match(st) and " DATABASE " in st.upper()]


def _apply_database_properties(admin, statements: list[str], old_name: str, new_name: str) -> None:
    """Run the archive's database-level statements against ``new_name`` (the name is rewritten)."""
    from psycopg import sql

    new = sql.Identifier(new_name).as_string(admin)
    name = re.compile(r'(\b(?:ALTER|ON|IN) DATABASE )(?:"' + re.escape(old_name.replace('"', '""')) + '"|'
                      + re.escape(old_name) + r")(?=[\s;]|$)")
    for statement in statements:
        renamed = name.sub(lambda m: m.group(1) + new, statement, count=1)
        try:
            admin.execute(renamed)
        except Exception as exc:  # noqa: BLE001 - psycopg's errors: the database is dropped, one line
            raise RestoreFailed(f"could not give the restored database its properties ({renamed.splitlines()[0][:80]}"
                                f"): {first_line(str(exc), type(exc).__name__)}; the new database was dropped",
                                hint="create the roles the backup refers to (`dbkit roles apply` or restore "
                                     "--globals), then restore again") from None


def _after_restore(settings, target: DbUrl, manifest, result: RestoreResult) -> None:
    """Row counts vs the manifest (a lost row fails the restore), the alembic revision, `dbkit migrate check`."""
    with db.connect(target, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")  # the restored database may carry its own (ALTER DATABASE SET)
        result.tables = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
            "('r','p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
            "AND n.nspname NOT LIKE '\\_timescaledb%'").fetchone()[0]
        problems = _check_rows(conn, manifest.tables, result.warnings)
        if problems:
            more = f" (and {len(problems) - 1} more table(s): {', '.join(p.split(':')[0] for p in problems[1:4])})" \
                if len(problems) > 1 else ""
            raise RestoreFailed(f"post-restore check failed: {problems[0]}{more}; the new database was dropped",
                                hint="the backup or the restore lost rows: try another backup, and report it")
        result.alembic_revision = ",".join(db.applied_revisions(conn) or []) or None
    if result.alembic_revision and (settings.migrations_dir / "env.py").is_file():
        import dataclasses

        from dbkit.migrate import runner

        try:
            check = runner.check(dataclasses.replace(settings, database_url=target))
            result.migrate_check = "clean" if check.clean else (
                f"{len(check.pending)} pending, {len(check.schema_diffs or [])} schema diffs, "
                f"{len(check.edited)} edited revisions")
        except DbkitError as exc:
            result.migrate_check = f"not run: {exc.message}"


def _check_rows(conn, tables, warnings: list[str]) -> list[str]:
    """Compare the restored tables with the manifest: exact counts must match exactly; for large tables
    (an estimate only) a table that had rows must have rows, and at least half the estimate.  Returns
    the problems (one line each); a count far above the estimate is only a warning."""
    from psycopg import sql

    problems = []
    conn.execute("SET row_security = off")  # count every row (or fail to, rather than count a tenant's)
    for t in tables:
        ident = sql.SQL("{}.{}").format(sql.Identifier(t.schema), sql.Identifier(t.name))
        estimate = t.rows_estimate or 0
        if t.rows is None and not t.has_rows and estimate < 1000:
            continue  # nothing known to compare with (a manifest of an older dbkit: estimates of small tables)
        try:
            if t.rows is None and estimate < 1000:
                n = 1 if conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident)).fetchone()[0] else 0
            else:
                n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
        except Exception as exc:  # noqa: BLE001 - psycopg: the table is missing or unreadable
            problems.append(f"{t.schema}.{t.name}: cannot be counted ({first_line(str(exc), type(exc).__name__)})")
            continue
        where = f"{t.schema}.{t.name}"
        if t.rows is not None:
            if n != t.rows:
                problems.append(f"{where}: {n} rows restored, the backup has {t.rows} (exact count at dump time)")
        elif n == 0 and (t.has_rows or estimate > 0):
            problems.append(f"{where}: no rows restored, the backup's table had rows")
        elif estimate >= 1000 and n < estimate / 2:
            problems.append(f"{where}: {n} rows restored, the backup estimated {estimate} (less than half)")
        elif estimate >= 1000 and n > 2 * estimate:
            warnings.append(f"{where}: {n} rows, the backup estimated {estimate}")
    return problems


_TSDB_EXISTS = re.compile(r'extension "timescaledb" already exists|COMMENT ON EXTENSION timescaledb|'
                          r"must be owner of extension timescaledb")


def _pg_restore(settings, storage, manifest, target: DbUrl, jobs: int) -> None:
    """pg_restore into the new database, with TimescaleDB's pre/post restore steps when the dump has it."""
    pg_restore = find_program(settings, "pg_restore")
    with_tsdb = "timescaledb" in (manifest.extensions or {})
    if with_tsdb:
        with db.connect(target, autocommit=True) as conn:
            conn.execute(f"CREATE EXTENSION IF NOT EXISTS timescaledb VERSION '{manifest.extensions['timescaledb']}'")
            conn.execute("SELECT timescaledb_pre_restore()")
    try:
        with _libpq_env(target) as (conninfo, env):
            args = [pg_restore, "--no-password", f"--dbname={conninfo}"]
            if jobs > 1:
                # an anonymous (already unlinked) file: it vanishes with dbkit, even after kill -9, so no
                # copy of the data is ever left behind; pg_restore and its workers open it as /dev/fd/N
                with tempfile.TemporaryFile(prefix="dbkit-restore-") as spool:
                    _stream_dump(settings, storage, manifest, spool)
                    spool.flush()
                    res = _parallel_restore(args, spool.fileno(), jobs, env)
            else:
                proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, env=env)
                errs: list[bytes] = []
                drain = threading.Thread(target=lambda: errs.append(proc.stderr.read()), daemon=True)
                drain.start()
                try:
                    _stream_dump(settings, storage, manifest, proc.stdin)
                except BrokenPipeError:
                    pass  # pg_restore stopped early: its exit code and stderr say why
                except BaseException:
                    proc.kill()
                    raise
                finally:
                    with contextlib.suppress(BrokenPipeError, OSError):
                        proc.stdin.close()
                rc = proc.wait()
                drain.join(timeout=30)
                res = subprocess.CompletedProcess(args, rc, "", b"".join(errs).decode(errors="replace"))
    finally:
        if with_tsdb:
            with db.connect(target, autocommit=True) as conn:
                conn.execute("SELECT timescaledb_post_restore()")
    errors = [ln for ln in res.stderr.splitlines() if "error:" in ln and not _TSDB_EXISTS.search(ln)
              and "errors ignored on restore" not in ln]
    detail = [ln for ln in errors if not ln.strip().startswith("Command was:")]
    if res.returncode != 0 and (detail or not with_tsdb):
        raise RestoreFailed(f"pg_restore failed (exit {res.returncode}): "
                            f"{first_line(detail[0] if detail else res.stderr, 'no message')}; the new database was dropped")


def _parallel_restore(args: list[str], dump_fd: int, jobs: int, env) -> subprocess.CompletedProcess:
    """pg_restore -j in three passes: schema, then TimescaleDB's catalog rows serially (its tables
    reference each other, and parallel loading breaks those foreign keys), then the rest in parallel.

    The dump and the lists are anonymous files passed as ``/dev/fd/N`` (nothing named on disk)."""
    dump = f"/dev/fd/{dump_fd}"
    listing = subprocess.run([args[0], "-l", dump], capture_output=True, text=True, env=env, pass_fds=(dump_fd,))
    if listing.returncode != 0:
        return listing
    entries = [ln for ln in listing.stdout.splitlines() if ln and not ln.startswith(";")]
    entries = [ln for ln in entries if not re.search(r"\bEXTENSION\b.*\btimescaledb\b", ln)]
    catalog = [ln for ln in entries if " _timescaledb_catalog " in ln and re.search(r"\b(TABLE DATA|SEQUENCE SET)\b", ln)]
    rest = [ln for ln in entries if ln not in catalog]
    passes = [(entries, ["--section=pre-data"], 1), (catalog, ["--section=data"], 1),
              (rest, ["--section=data", "--section=post-data"], jobs)]
    stderr = []
    for lines, sections, n in passes:
        if not lines:
            continue
        with tempfile.TemporaryFile("w+", prefix="dbkit-restore-list-") as list_file:
            list_file.write("\n".join(lines) + "\n")
            list_file.flush()
            res = subprocess.run([*args, f"--jobs={n}", "-L", f"/dev/fd/{list_file.fileno()}", *sections, dump],
                                 capture_output=True, text=True, env=env, pass_fds=(dump_fd, list_file.fileno()))
        stderr.append(res.stderr)
        if res.returncode != 0:
            return subprocess.CompletedProcess(res.args, res.returncode, "", "".join(stderr))
    return subprocess.CompletedProcess(args, 0, "", "".join(stderr))


def _stream_dump(settings, storage, manifest, out) -> None:
    """Download -> verify sha256 -> decrypt -> decompress -> ``out``; raises if the checksum does not match."""
    with storage.open_read(f"{manifest.id}/{manifest.object}") as raw:
        verifying = _VerifyingReader(raw, manifest.sha256, manifest.stored_bytes)
        source: Any = verifying
        decrypt_thread = None
        failure: list[BaseException] = []
        if manifest.encryption:
            import pyrage

            identities = _identities(settings)
            r_fd, w_fd = os.pipe()
            reader, writer = os.fdopen(r_fd, "rb"), os.fdopen(w_fd, "wb")

            def decrypt() -> None:
                try:
                    pyrage.decrypt_io(verifying, writer, identities)
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    failure.append(exc)
                finally:
                    writer.close()

            decrypt_thread = threading.Thread(target=decrypt, name="dbkit-age-decrypt", daemon=True)
            decrypt_thread.start()
            source = reader
        damaged: BaseException | None = None
        try:
            _decompress(source, out, manifest.compression)
        except _Corrupt as exc:
            damaged = exc
        finally:
            if decrypt_thread is not None:
                source.close()
                decrypt_thread.join()
        if failure:
            raise RestoreFailed("the backup could not be decrypted with the configured age identity",
                                hint="check DBKIT_AGE_IDENTITY_FILE / DBKIT_AGE_IDENTITY") from failure[0]
        if damaged is not None:
            raise RestoreFailed(f"the backup {manifest.id} is corrupt: its {manifest.compression} stream is damaged "
                                f"({first_line(str(damaged), type(damaged).__name__)}) after {verifying.bytes} "
                                "stored bytes", hint="restore another backup (`dbkit backup list`)") from None
        verifying.finish()


class _Corrupt(Exception):
    """A compressed stream that cannot be decompressed (or ends early)."""


def _decompress(src, out, compression: str) -> None:
    """Decompress ``src`` into ``out``; a damaged or truncated stream raises :class:`_Corrupt` (errors
    writing to ``out``, such as a pg_restore that stopped, propagate unchanged)."""
    head = b""
    if compression == "zstd":
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while True:
            try:
                chunk = reader.read(CHUNK)
            except zstandard.ZstdError as exc:
                raise _Corrupt(str(exc)) from None
            if not chunk:
                break
            head = head or chunk[: len(MAGIC)]
            out.write(chunk)
    elif compression == "gzip":
        d = zlib.decompressobj(31)
        while chunk := src.read(CHUNK):
            try:
                data = d.decompress(chunk)
            except zlib.error as exc:
                raise _Corrupt(str(exc)) from None
            head = head or data[: len(MAGIC)]
            out.write(data)
        if not d.eof:
            raise _Corrupt("the gzip stream ends early")
        out.write(d.flush())
    else:
        while chunk := src.read(CHUNK):
            head = head or chunk[: len(MAGIC)]
            out.write(chunk)
    if head and head != MAGIC:
        raise RestoreFailed("the decompressed backup is not a pg_dump custom-format archive")


def verify(settings, backup_id: str = "latest", *, source: str | None = None,
           restore_test: bool = False) -> dict[str, Any]:
    """Download and check the sha256 (and decryptability); with ``restore_test`` also restore it into a
    throw-away database, count its tables, and drop it."""
    manifest = show(settings, backup_id, source)
    storage = storage_for(settings, source)
    result: dict[str, Any] = {"id": manifest.id, "sha256_ok": False, "restore_test": None}
    with open(os.devnull, "wb") as sink:
        _stream_dump(settings, storage, manifest, sink)
    result["sha256_ok"] = True
    if restore_test:
        name = f"dbkit_verify_{manifest.id.split('-')[0].lower()}"
        url = target.resolve_url(settings, direct=True)
        res = restore(settings, manifest.id, source=source, into=name)
        with db.connect(url.with_dbname("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        result["restore_test"] = {"tables": res.tables, "seconds": res.seconds}
    return result
