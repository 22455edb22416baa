"""``dbkit restore`` and ``backup verify``: a backup streamed back into a NEW database, then checked."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbkit import _db as db
from dbkit import _target as target
from dbkit._urls import DbUrl, first_line
from dbkit.backup._catalog import show
from dbkit.backup._common import RestoreFailed, _drain, _feed, _libpq_env, _stream_dump, find_program, storage_for
from dbkit.backup._restore_properties import _apply_database_properties, _database_properties
from dbkit.errors import DbkitError, Refused


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


@dataclass(frozen=True)
class RestoreHooks:
    """What a restore asks of other features, given by the caller (:mod:`dbkit._lifecycle` wires the role
    model and the migration check); backup itself imports no other feature.

    ``create_roles(admin, missing)`` may create roles the dump refers to; ``check_migrations(settings)``
    (the settings point at the restored database) returns a one-line verdict such as ``"clean"``.
    """

    create_roles: Callable[[Any, list[str]], None] | None = None
    check_migrations: Callable[[Any], str] | None = None


def _check_server(admin, manifest, hooks: RestoreHooks) -> None:
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
    if missing and hooks.create_roles is not None:
        hooks.create_roles(admin, missing)
        missing = _missing_roles(admin, manifest.roles)
    if missing:
        raise RestoreFailed(f"roles the backup refers to do not exist on this server: {', '.join(missing)}",
                            hint="run `dbkit roles apply` (or restore with --globals) first")


def _missing_roles(admin, roles) -> list[str]:
    present = {r[0] for r in admin.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(roles),))}
    return [r for r in roles if r not in present]


def _apply_globals(storage, manifest, admin) -> list[str]:
    """Run globals.sql statement by statement; objects that already exist are skipped (SQLSTATE 42710)."""
    from pglast.parser import split
    from psycopg import errors

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
            jobs: int = 1, swap: bool = False, yes: bool = False, with_globals: bool = False,
            hooks: RestoreHooks | None = None) -> RestoreResult:
    """Restore a backup into a NEW database (never into an existing one).

    The restore of an application (roles created from the role model, the migrations checked on the
    restored database) is :func:`dbkit._lifecycle.restore`, which passes ``hooks``.

    jobs == 1 streams download -> sha256 -> decrypt -> decompress -> pg_restore (stdin); jobs > 1 spools
    the dump to a temporary file first (pg_restore -j needs a seekable file).  The sha256 is checked at the
    end; on any failure the new database is dropped.  ``swap`` then renames the current database to
    ``<db>_pre_restore_<time>`` and the restored one into its place (the old one is kept).
    """
    from psycopg import sql

    hooks = hooks or RestoreHooks()
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
        _check_server(admin, manifest, hooks)
        properties = _database_properties(settings, storage, manifest)  # before anything is created
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(target_name)))
        try:
            paused = _pg_restore(settings, storage, manifest, url.with_dbname(target_name), jobs)
            _apply_database_properties(admin, properties, manifest.database, target_name)
            _after_restore(settings, url.with_dbname(target_name), manifest, result, hooks)
            _resume_jobs(url.with_dbname(target_name), paused)
        except BaseException:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target_name)))
            raise
        if swap:
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            previous = f"{url.dbname}_pre_restore_{stamp}"
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND pid <> pg_backend_pid()", (url.dbname,))
            rename = sql.SQL("ALTER DATABASE {} RENAME TO {}")
            for old, new in ((url.dbname, previous), (target_name, url.dbname)):
                admin.execute(rename.format(sql.Identifier(old), sql.Identifier(new)))
            result.swapped, result.previous, result.database = True, previous, url.dbname
            if "timescaledb" in (manifest.extensions or {}):
                _restart_scheduler(url)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _restart_scheduler(url: DbUrl) -> None:
    """TimescaleDB stops a database's job scheduler when the database is renamed (and warns to restart it by
    hand): after the swap the restored database's is started again; the kept copy's stays stopped (until the
    server restarts), so its jobs do not run twice."""
    with db.connect(url, autocommit=True) as conn:
        fn = conn.execute("SELECT coalesce(to_regproc('_timescaledb_functions.restart_background_workers'), "
                          "to_regproc('_timescaledb_internal.restart_background_workers'))").fetchone()[0]
        if fn:
            conn.execute(f"SELECT {fn}()")


def _after_restore(settings, target: DbUrl, manifest, result: RestoreResult, hooks: RestoreHooks) -> None:
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
        result.alembic_revision = ",".join(db.applied_revisions(conn, db.version_table(settings)) or []) or None
    if result.alembic_revision and hooks.check_migrations is not None:
        import dataclasses

        try:
            result.migrate_check = hooks.check_migrations(dataclasses.replace(settings, database_url=target))
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
        where = _label(conn, t.schema, t.name)
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


def _label(conn, schema: str, name: str) -> str:
    """How a problem names a table: a materialization hypertable by its continuous aggregate."""
    found = None
    if schema.startswith("_timescaledb"):
        found = conn.execute("SELECT format('%%I.%%I', a.user_view_schema, a.user_view_name) FROM "
                             "_timescaledb_catalog.continuous_agg a JOIN _timescaledb_catalog.hypertable h ON "
                             "h.id = a.mat_hypertable_id WHERE h.schema_name = %s AND h.table_name = %s",
                             (schema, name)).fetchone()
    return f"{found[0]} (continuous aggregate, materialized in {schema}.{name})" if found else f"{schema}.{name}"


_TSDB_EXISTS = re.compile(r'extension "timescaledb" already exists|COMMENT ON EXTENSION timescaledb|'
                          r"must be owner of extension timescaledb")


#: the policies and jobs the restored database would run at once (TimescaleDB's own jobs have ids below 1000)
_SCHEDULED_JOBS = "SELECT job_id FROM timescaledb_information.jobs WHERE scheduled AND job_id >= 1000 ORDER BY 1"


def _pause_jobs(conn) -> list[int]:
    """Unschedule the restored database's scheduled jobs until its rows are checked: the scheduler that
    ``timescaledb_post_restore()`` starts would run them at once (their run statistics are not dumped), and a
    refresh policy adds rows, a retention policy drops chunks, before the counts are compared."""
    ids = [row[0] for row in conn.execute(_SCHEDULED_JOBS)]
    for job_id in ids:
        conn.execute("SELECT alter_job(%s, scheduled => false)", (job_id,))
    return ids


def _resume_jobs(target: DbUrl, ids: list[int]) -> None:
    """Schedule again the jobs :func:`_pause_jobs` paused (a job paused in the backup stays paused)."""
    if ids:
        with db.connect(target, autocommit=True) as conn:
            for job_id in ids:
                conn.execute("SELECT alter_job(%s, scheduled => true)", (job_id,))


def _pg_restore(settings, storage, manifest, target: DbUrl, jobs: int) -> list[int]:
    """pg_restore into the new database, with TimescaleDB's pre/post restore steps when the dump has it.
    Returns the TimescaleDB jobs it paused for the checks (:func:`_resume_jobs` schedules them again)."""
    pg_restore = find_program(settings, "pg_restore")
    with_tsdb = "timescaledb" in (manifest.extensions or {})
    restored, paused = False, []
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
                stderr = _drain(proc.stderr)
                rc = _feed(settings, storage, manifest, proc)
                res = subprocess.CompletedProcess(args, rc, "", stderr().decode(errors="replace"))
        restored = True
    finally:
        if with_tsdb:
            with db.connect(target, autocommit=True) as conn:
                if restored:  # (after a failure the database is dropped)
                    paused = _pause_jobs(conn)
                conn.execute("SELECT timescaledb_post_restore()")
                # its scheduler restart runs before its RESET of timescaledb.restoring commits: the new scheduler
                # sees the restoring mode and exits for good, so no job would run (timescale/timescaledb#5842,
                # fixed upstream by #9625); once more, now committed, starts a scheduler that runs the jobs
                conn.execute("SELECT timescaledb_post_restore()")
    errors = [ln for ln in res.stderr.splitlines() if "error:" in ln and not _TSDB_EXISTS.search(ln)
              and "errors ignored on restore" not in ln]
    detail = [ln for ln in errors if not ln.strip().startswith("Command was:")]
    if res.returncode != 0 and (detail or not with_tsdb):
        raise RestoreFailed(f"pg_restore failed (exit {res.returncode}): "
                            f"{first_line(detail[0] if detail else res.stderr, 'no message')}; "
                            "the new database was dropped")
    return paused


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
    catalog = [ln for ln in entries
               if " _timescaledb_catalog " in ln and re.search(r"\b(TABLE DATA|SEQUENCE SET)\b", ln)]
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


@dataclass(frozen=True)
class RestoreTest:
    tables: int
    seconds: float


@dataclass(frozen=True)
class VerifyResult:
    """What ``backup verify`` found; :meth:`as_dict` is its ``--json``."""

    id: str
    sha256_ok: bool
    restore_test: RestoreTest | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(settings, backup_id: str = "latest", *, source: str | None = None,
           restore_test: bool = False, hooks: RestoreHooks | None = None) -> VerifyResult:
    """Download and check the sha256 (and decryptability); with ``restore_test`` also restore it into a
    throw-away database, count its tables, and drop it.  A mismatch raises :class:`RestoreFailed`."""
    manifest = show(settings, backup_id, source)
    storage = storage_for(settings, source)
    with open(os.devnull, "wb") as sink:
        _stream_dump(settings, storage, manifest, sink)
    test = None
    if restore_test:
        name = f"dbkit_verify_{manifest.id.split('-')[0].lower()}"
        url = target.resolve_url(settings, direct=True)
        res = restore(settings, manifest.id, source=source, into=name, hooks=hooks)
        with db.connect(url.with_dbname("postgres"), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        test = RestoreTest(res.tables, res.seconds)
    return VerifyResult(manifest.id, True, test)


