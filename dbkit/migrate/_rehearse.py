"""``dbkit migrate rehearse``: the pending revisions on a scratch copy of the database, traced.

:func:`rehearse` copies the database into a scratch database (``CREATE DATABASE … TEMPLATE`` of it, or
a caller's ``copy`` such as a restore of a backup), runs the pending revisions there through the
normal runner (:func:`dbkit.migrate._runner.upgrade`: advisory lock, timeouts, one transaction per
revision, CONCURRENTLY outside it) with :class:`~dbkit.migrate._rehearse_trace.Tracer` listening,
judges what each statement locked, rewrote and scanned (:func:`~dbkit.migrate._rehearse_report.verdict`)
and drops the scratch database: at the end, on failure and on Ctrl-C (SIGINT) or SIGTERM too, unless
``keep``.  The source database is only read (it is the template of the copy).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from dbkit import _db as db
from dbkit import _target as target
from dbkit.errors import ConfigError, OperationFailed, Refused, UsageError
from dbkit.migrate._rehearse_load import Load, windows
from dbkit.migrate._rehearse_report import (
    DEFAULT_MIN_SIZE,
    RehearsalReport,
    RevisionRun,
    stall_findings,
    verdict,
)
from dbkit.migrate._rehearse_trace import Tracer

__all__ = ["rehearse", "parse_size", "parse_duration", "default_max_lock", "CloneImpossible", "scratch_name",
    "clone", "drop_scratch"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|bytes|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "bytes": 1, "kb": 1024, "kib": 1024, "mb": 1024**2, "mib": 1024**2,
               "gb": 1024**3, "gib": 1024**3, "tb": 1024**4, "tib": 1024**4}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|sec|min|h)?\s*$", re.IGNORECASE)
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}


class CloneImpossible(OperationFailed):
    """``CREATE DATABASE … TEMPLATE`` of the source was refused (other sessions, no CREATEDB)."""


def parse_size(text: str, *, option: str = "--min-size") -> int:
    """``10MB``, ``512kB``, ``0``, ``1048576`` -> bytes (PostgreSQL's units: 1 kB = 1024 bytes)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ConfigError(option, f"is {str(text)[:80]!r}, not a size", example=f"{option} 10MB (or 512kB, 1GB, 0)")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower() or None])


def parse_duration(text: str, *, option: str = "--max-lock", bare_unit: str = "s") -> float:
    """``2s``, ``500ms``, ``1min``, ``0`` -> seconds; a bare number is in ``bare_unit``
    (seconds for options, ``ms`` for PostgreSQL's lock_timeout)."""
    m = _DURATION.match(str(text))
    if not m:
        raise ConfigError(option, f"is {str(text)[:80]!r}, not a duration", example=f"{option} 2s (or 500ms, 1min)")
    return float(m.group(1)) * _DURATION_UNITS[(m.group(2) or bare_unit).lower()]


def default_max_lock(settings) -> float:
    """The configured lock_timeout in seconds (5 s when it is 0: no limit)."""
    return parse_duration(settings.lock_timeout, option="DBKIT_LOCK_TIMEOUT", bare_unit="ms") or 5.0


def scratch_name(source: str, when: datetime | None = None) -> str:
    """``<source>_rehearse_<UTC time>_<pid>_<4 random hex>``, cut to 63 bytes (the source part is shortened)."""
    stamp = (when or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    tail = f"_rehearse_{stamp}_{os.getpid()}_{secrets.token_hex(2)}"
    return source.encode()[: 63 - len(tail)].decode(errors="ignore") + tail


# --------------------------------------------------------------------- signals and the scratch database

def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals(handler, *signums) -> Iterator[None]:
    """``handler`` for ``signums`` while the block runs: SIGTERM raises KeyboardInterrupt (like SIGINT) while the
    rehearsal runs, so the scratch database is dropped either way; SIGINT/SIGTERM are ignored while it is dropped
    (a second Ctrl-C must not leave it).  Only in the main thread (Python delivers signals there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, previous in saved.items():
            signal.signal(s, previous)


def _admin(settings, url):
    return db.connect(url.with_dbname("postgres"), autocommit=True, connect_timeout=settings.connect_timeout)


def drop_scratch(settings, url, name: str) -> None:
    from psycopg import sql

    with _signals(signal.SIG_IGN, signal.SIGINT, signal.SIGTERM), _admin(settings, url) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


#: Tries of CREATE DATABASE … TEMPLATE while only TimescaleDB's scheduler is connected to the source: its
#: loader stops the template's scheduler for the copy, but the launcher may have restarted it in between.
TIMESCALE_RETRIES = 3


def _only_timescale_workers(admin, source: str) -> bool:
    rows = admin.execute("SELECT backend_type FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                         (source,)).fetchall()
    return bool(rows) and all((r[0] or "").startswith("TimescaleDB") for r in rows)


def clone(settings, url, name: str) -> None:
    """``CREATE DATABASE name TEMPLATE <source>``: refused (one line, what to do) while other sessions
    are connected to the source (PostgreSQL waits 5 s for them to leave), which TEMPLATE requires; the
    source is only read."""
    from psycopg import errors, sql

    source = url.dbname
    create = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(source))
    with _admin(settings, url) as admin:
        try:
            for _ in range(TIMESCALE_RETRIES):  # PostgreSQL itself waits up to 5 s for other sessions to leave
                try:
                    admin.execute(create)
                    return
                except errors.ObjectInUse:
                    if not _only_timescale_workers(admin, source):
                        raise
            admin.execute(create)
        except errors.ObjectInUse:
            rows = admin.execute("SELECT coalesce(nullif(application_name, ''), backend_type) "
                                 "|| ' (pid ' || pid || ')' FROM pg_stat_activity "
                                 "WHERE datname = %s AND pid <> pg_backend_pid() ORDER BY pid", (source,)).fetchall()
            who = ", ".join(r[0] for r in rows[:3]) + (", …" if len(rows) > 3 else "")
            raise CloneImpossible(
                f"cannot clone database {source}: {len(rows)} other session(s) are connected to it ({who or '?'}), "
                "and CREATE DATABASE … TEMPLATE needs none",
                hint=f"stop the application's connections to {source} (pg_stat_activity lists them) and rerun, "
                     "or rehearse from a backup (--from-backup latest)") from None
        except errors.InsufficientPrivilege as exc:
            raise CloneImpossible(f"cannot clone database {source}: {exc.diag.message_primary}",
                                  hint="connect as a role with CREATEDB that owns the source (or a superuser), "
                                       "or rehearse from a backup (--from-backup latest)") from None
        except errors.Error as exc:
            raise CloneImpossible(f"cannot clone database {source} into {name}: "
                                  f"{exc.diag.message_primary or type(exc).__name__}",
                                  hint="or rehearse from a backup (--from-backup latest)") from None


# --------------------------------------------------------------------- the run

def _pending(report: RehearsalReport, settings, to: str):
    """The pending revisions up to ``to`` of the source, read only; the report gets them and the current ones."""
    from alembic.util import CommandError

    from dbkit.migrate._runner_run import _command_error
    from dbkit.migrate._runner_state import _script, status

    st = status(settings)
    if st.problem:
        raise Refused(f"cannot rehearse: {st.problem}", hint=st.adopt or "see `dbkit migrate status`")
    script = _script(settings)
    try:
        wanted = {r.revision for r in script.iterate_revisions(to, "base")}
    except CommandError as exc:
        raise _command_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - alembic's ResolutionError for an unknown revision
        raise UsageError(f"--to {to!r} is not a revision of the project",
                         hint="see `dbkit migrate history` for the revisions") from exc
    pending = [r for r in st.pending if r.revision in wanted]
    report.before, report.pending = st.current, [r.revision for r in pending]
    return pending


def _runs(pending, tracer: Tracer) -> list[RevisionRun]:
    runs = []
    for rev in pending:
        stmts = [s for s in tracer.statements if s.revision == rev.revision]
        if not stmts and rev.revision not in tracer.commits:
            continue
        start = stmts[0].started_s if stmts else tracer.commits[rev.revision]
        end = tracer.commits.get(rev.revision, stmts[-1].started_s + stmts[-1].duration_s if stmts else start)
        runs.append(RevisionRun(rev.revision, os.path.basename(rev.path), rev.message, round(end - start, 4), stmts,
                                start_s=round(start, 4)))
    return runs


def rehearse(settings, *, to: str = "head", min_size: int = DEFAULT_MIN_SIZE, max_lock: float | None = None,
             keep: bool = False, copy: Callable[[str], None] | None = None, copy_method: str = "clone",
             on_scratch: Callable[[str], None] | None = None, load: int = 0,
             baseline_s: float = 2.0, change_roles: bool = False) -> RehearsalReport:
    """Rehearse the pending revisions (up to ``to``) on a scratch copy; returns the report.

    ``copy(name)`` creates the scratch database ``name`` (a restore of a backup, wired by the CLI);
    without it the source is cloned (``CREATE DATABASE … TEMPLATE``, refused when DBKIT_ENV=prod).
    ``max_lock`` defaults to the configured lock_timeout.  ``on_scratch(name)`` is told the scratch
    database's name once it exists.  ``load`` clients run the application's mix on the copy
    (:mod:`~dbkit.migrate._rehearse_load`), first alone for ``baseline_s`` seconds, then while the
    revisions run.  Raises :class:`~dbkit.errors.DbkitError` for bad input or a copy
    that could not be made; a failing revision is in the report (:attr:`RehearsalReport.failed`).
    With a ``copy`` (a backup), what is pending is read on the copy: the backup's revision counts.
    Roles belong to the whole server: unless ``change_roles`` (a rehearsal server), the preflight refuses
    when the role model would change one, and a revision that changes one fails and is rolled back.
    """
    if not str(to).strip():
        raise UsageError("--to is empty", hint="give a revision id or head (see `dbkit migrate history`)")
    if min_size < 0:
        raise ConfigError("--min-size", "is negative", example="--min-size 10MB")
    max_lock = default_max_lock(settings) if max_lock is None else max_lock
    if max_lock < 0:
        raise ConfigError("--max-lock", "is negative", example="--max-lock 2s")
    if load < 0:
        raise ConfigError("--load", f"is {load}: the number of client threads cannot be negative", example="--load 8")
    if copy is None and settings.env == "prod":
        raise Refused("--clone is refused when DBKIT_ENV=prod: CREATE DATABASE … TEMPLATE needs every other "
                      "session of the production database closed", hint="rehearse from a backup (--from-backup latest)")
    url = target.resolve_url(settings, direct=True)
    if not url.dbname:
        raise ConfigError("DATABASE_URL", "names no database", example="postgresql://app@db:5432/app")
    t_start = time.perf_counter()
    report = RehearsalReport(source=url.dbname, scratch=None, copy_method=copy_method, target=to, before=[],
                             pending=[], min_size=min_size, max_lock_s=max_lock)
    pending = None
    if copy is None:  # a clone is the source: read what is pending there, and copy nothing when nothing is
        pending = _pending(report, settings, to)
        if not pending:
            report.total_s = round(time.perf_counter() - t_start, 4)
            return report
    name = scratch_name(url.dbname)
    created = copy is not None  # a failed restore drops what it made; IF EXISTS covers the rest
    with _signals(_interrupt, signal.SIGTERM):
        try:
            t0 = time.perf_counter()
            if copy is None:
                clone(settings, url, name)
            else:
                copy(name)
            created = True
            report.scratch = name
            if on_scratch is not None:
                on_scratch(name)
            report.copy_s = round(time.perf_counter() - t0, 4)
            scratch = dataclasses.replace(settings, database_url=url.with_dbname(name), direct_database_url=None)
            if pending is None:  # a backup: pending is what the backup's revision lacks
                pending = _pending(report, scratch, to)
            if pending:
                _traced_run(report, settings, scratch, pending, to=to, load=load, baseline_s=baseline_s,
                            change_roles=change_roles)
        finally:
            if created and not keep:
                t2 = time.perf_counter()
                drop_scratch(settings, url, name)
                report.drop_s = round(time.perf_counter() - t2, 4)
            report.kept = bool(created and keep)
            report.total_s = round(time.perf_counter() - t_start, 4)
    return report


def _traced_run(report: RehearsalReport, settings, scratch, pending, *, to: str, load: int, baseline_s: float,
                change_roles: bool) -> None:
    """The pending revisions through the normal runner on the scratch database, traced (and loaded)."""
    from dbkit.migrate._runner_run import MigrationFailed, upgrade

    scratch_url = scratch.database_url
    with (Load(scratch, scratch_url, load) if load else contextlib.nullcontext()) as clients:
        b0 = time.perf_counter()
        if clients is not None:
            time.sleep(baseline_s)
        t1 = time.perf_counter()
        with Tracer(scratch_url.dbname, str(settings.migrations_dir), scratch_url) as tracer:
            try:
                report.after = upgrade(scratch, to, keep_server_roles=not change_roles).after
            except MigrationFailed as exc:
                report.failed = str(exc)
        report.run_s = round(time.perf_counter() - t1, 4)
        report.trace_s = round(tracer.own_s, 4)
    report.revisions = _runs(pending, tracer)
    report.findings = verdict(report.revisions, min_size=report.min_size, max_lock_s=report.max_lock_s)
    if clients is not None:
        spans = [("baseline", b0, t1)]
        spans += [(r.revision, tracer.t0 + r.start_s, tracer.t0 + r.start_s + r.duration_s) for r in report.revisions]
        report.load = windows(clients.samples, spans)
        report.load_clients, report.load_errors = load, clients.errors[:5]
        report.findings += stall_findings(report.revisions, report.load, max_lock_s=report.max_lock_s)
