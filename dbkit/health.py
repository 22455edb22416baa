"""``dbkit check``: is the database side healthy?

Services: database (reachable, latency, version), extensions, connections, roles (``roles
check``), migrations (``migrate check``), rls (``rls audit``), storage (backup target reachable)
and backups (newest complete backup's age; a later attempt without a manifest, such as a killed
backup's open S3 multipart upload or ``.partial-`` file, degrades it, with its age).

:func:`check` returns a :class:`Report` (frozen dataclasses: a :class:`Service` subclass per kind
of check, a plain :class:`Service` for a check that could not run; ``as_dict()`` is the JSON of
``dbkit check --json``); the CLI renders it.  Each service has a status (``ok``/``warn``/``fail``),
details and, when something is wrong, a fix hint.  Overall status: ``healthy`` (exit 0),
``degraded`` (exit 1), ``unhealthy`` (exit 2).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from dbkit.errors import DbkitError

__all__ = ["EXIT_CODES", "Backups", "Connections", "Database", "Environment", "Extension", "Extensions", "Migrations",
           "Report", "Rls", "Roles", "Service", "Setting", "Storage", "check", "prometheus"]

EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_RANK = {"ok": 0, "warn": 1, "fail": 2}
_OVERALL = {0: "healthy", 1: "degraded", 2: "unhealthy"}


def _plain(value: Any) -> Any:
    """Tuples (the dataclasses' immutable sequences) as JSON lists, typed items through their as_dict()."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if callable(getattr(value, "as_dict", None)):
        return value.as_dict()
    return value


@dataclass(frozen=True, kw_only=True)
class Service:
    """One check's verdict: ``status`` (ok, warn or fail), and when there is one a ``note`` (why it was not
    checked), an ``error`` (why it could not be checked) and a fix ``hint``.  A check that could not run at
    all (database unreachable, a DbkitError) is a plain :class:`Service`; one that ran is its subclass.

    :meth:`as_dict` is the JSON of ``dbkit check --json``: status first, then the subclass's fields in
    declared order, then note, error and hint; a field that is None is left out (it was not measured).
    """

    status: str
    note: str | None = None
    error: str | None = None
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        tail = ("note", "error", "hint")
        out: dict[str, Any] = {"status": self.status}
        for name in [f.name for f in fields(self) if f.name != "status" and f.name not in tail] + list(tail):
            value = getattr(self, name)
            if value is not None:
                out[name] = _plain(value)
        return out



@dataclass(frozen=True, kw_only=True)
class Database(Service):
    """The database was resolved; the measurements are None when connecting failed (see ``error``)."""

    url: str
    embedded: bool
    connect_ms: float | None = None
    latency_ms: float | None = None
    server_version: str | None = None
    server_version_num: int | None = None
    database: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Extension:
    """One required extension: ``available`` (default version) and ``installed`` are None when absent."""

    name: str
    available: str | None
    installed: str | None
    status: str
    hint: str | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "available": self.available, "installed": self.installed,
                               "status": self.status}
        for name in ("hint", "note"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out


@dataclass(frozen=True, kw_only=True)
class Extensions(Service):
    timescaledb_preloaded: bool
    items: tuple[Extension, ...]


@dataclass(frozen=True, kw_only=True)
class Connections(Service):
    used: int
    max_connections: int


@dataclass(frozen=True, kw_only=True)
class Migrations(Service):
    """``current`` and ``head`` are revision ids; ``edited`` reads "<revision> (<file name>)"."""

    current: tuple[str, ...]
    head: tuple[str, ...]
    pending: tuple[str, ...]
    schema_diffs: tuple[str, ...]
    edited: tuple[str, ...]
    check_ms: float


@dataclass(frozen=True, kw_only=True)
class Roles(Service):
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Rls(Service):
    tables_checked: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Environment(Service):
    env: str
    problems: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Storage(Service):
    """The backup target; ``latency_ms`` is None when it could not be reached (see ``error``)."""

    target: str
    latency_ms: float | None = None


@dataclass(frozen=True, kw_only=True)
class Backups(Service):
    """Complete and unfinished backups.  ``latest*`` are None when there is no complete backup,
    ``unfinished*`` when no attempt without a manifest is newer than it; ``last_status`` is "complete" or
    "incomplete (…)", None when there is neither."""

    complete: int
    incomplete: int
    max_age_hours: float
    unfinished: str | None = None
    unfinished_age_hours: float | None = None
    unfinished_idle_hours: float | None = None
    last_status: str | None = None
    latest: str | None = None
    latest_age_hours: float | None = None
    latest_bytes: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = super().as_dict()
        if self.unfinished is None and "last_status" in out:  # the JSON names it after the newest backup then
            out["last_status"] = out.pop("last_status")
            if "hint" in out:
                out["hint"] = out.pop("hint")
        return out


@dataclass(frozen=True)
class Setting:
    """One resolved setting (secrets masked) and where its value came from."""

    variable: str
    value: str
    source: str

    def as_dict(self) -> dict[str, str]:
        return {"variable": self.variable, "value": self.value, "source": self.source}


@dataclass(frozen=True)
class Report:
    status: str
    timestamp: str
    version: str
    settings: tuple[Setting, ...]
    services: Mapping[str, Service] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "timestamp": self.timestamp,
            "version": self.version,
            "settings": [s.as_dict() for s in self.settings],
            "services": {name: svc.as_dict() for name, svc in self.services.items()},
        }


def _database(settings) -> tuple[Service, Any]:
    """Connect and measure; returns (the service, open connection or None)."""
    from dbkit import db, target

    try:
        url = target.resolve_url(settings)
    except DbkitError as exc:
        return Service(status="fail", error=exc.message, hint=exc.hint or None), None
    where = {"url": url.masked, "embedded": settings.uses_dev_cluster}
    try:
        t0 = time.perf_counter()
        conn = db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout)
    except DbkitError as exc:
        return Database(status="fail", **where, error=exc.message, hint=exc.hint or None), None
    connect_ms = round((time.perf_counter() - t0) * 1000, 2)
    latency_ms = round(db.timed_ping(conn), 3)
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "current_database(), current_user"
    ).fetchone()
    return Database(status="ok", **where, connect_ms=connect_ms, latency_ms=latency_ms, server_version=row[0],
                    server_version_num=row[1], database=row[2], user=row[3]), conn


def _extensions(conn, required: tuple[str, ...]) -> Extensions:
    from dbkit import db

    rows = conn.execute(
        "SELECT a.name, a.default_version, e.extversion FROM pg_available_extensions a "
        "LEFT JOIN pg_extension e ON e.extname = a.name WHERE a.name = ANY(%s)",
        (list(required),),
    ).fetchall()
    found = {name: (default, installed) for name, default, installed in rows}
    preloaded = db.timescaledb_preloaded(conn)
    items = []
    for name in required:
        default, installed = found.get(name, (None, None))
        if default is None or (name == "timescaledb" and not preloaded):
            items.append(Extension(name, default, installed, "fail", hint=db.install_hint(name)))
        elif installed is None:
            items.append(Extension(name, default, installed, "ok",
                                   note="available, not created in this database yet (migrations create it)"))
        else:
            items.append(Extension(name, default, installed, "ok"))
    worst = max((_RANK[i.status] for i in items), default=0)
    return Extensions(status={0: "ok", 1: "warn", 2: "fail"}[worst], timescaledb_preloaded=preloaded,
                      items=tuple(items))


def _timed(fn) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, round((time.perf_counter() - t0) * 1000, 2)


def _guard(fn) -> Service:
    """Run one check; a DbkitError becomes a failed service with its message and hint."""
    try:
        return fn()
    except DbkitError as exc:
        return Service(status="fail", error=exc.message, hint=exc.hint or None)


_PENDING = "not checked: migrations are pending"


def _pending(migrations: Service) -> bool:
    return isinstance(migrations, Migrations) and bool(migrations.pending)


def _roles(settings, conn, migrations: Service) -> Service:
    from dbkit import roles

    if _pending(migrations):  # the migrations create the roles and the grants
        return Service(status="ok", note=_PENDING)
    drift = roles.check(settings, conn)
    errors = tuple(d.describe() for d in drift if d.severity == "error")
    warnings = tuple(d.describe() for d in drift if d.severity != "error")
    return Roles(status="fail" if errors else "ok", errors=errors, warnings=warnings,
                 hint="run `dbkit roles check` for the fixes (usually `dbkit roles apply`)" if errors else None)


def _migrations(settings) -> Service:
    from dbkit.migrate import runner

    if not (settings.migrations_dir / "env.py").is_file():
        return Service(status="ok", note="no migrations directory: not checked")
    result, ms = _timed(lambda: runner.check(settings))
    status = runner.status(settings)
    verdict, hint = "ok", None
    if result.edited:
        verdict, hint = "fail", "an applied revision file was edited: restore it or add a new revision"
    elif result.pending or result.schema_diffs:
        verdict = "warn"
        hint = ("run `dbkit migrate`" if result.pending
                else "the models and the database differ: `dbkit migrate new --autogenerate`")
    return Migrations(status=verdict, current=tuple(status.current), head=tuple(status.heads),
                      pending=tuple(r.revision for r in result.pending), schema_diffs=tuple(result.schema_diffs or ()),
                      edited=tuple(f"{d.revision} ({d.filename})" for d in result.edited), check_ms=ms, hint=hint)


def _rls(settings, conn, migrations: Service) -> Service:
    from dbkit.rls.audit import audit

    if _pending(migrations):
        return Service(status="ok", note=_PENDING)
    report = audit(settings, conn)
    errors = tuple(f.line() for f in report.findings if f.severity == "error")
    warnings = tuple(f.line() for f in report.findings if f.severity != "error")
    return Rls(status="fail" if errors else ("warn" if warnings else "ok"), tables_checked=report.tables_checked,
               errors=errors, warnings=warnings,
               hint="run `dbkit rls audit` for the fixes" if errors or warnings else None)


def _backups(settings, max_backup_age_h: float) -> tuple[Service, Service]:
    from dbkit.backup import pipeline

    storage = None
    latency_ms = None
    try:
        storage = pipeline.storage_for(settings)
        _, latency_ms = _timed(storage.check)
        found, _ = _timed(lambda: pipeline.scan(settings, storage=storage))
    except DbkitError as exc:
        hint = exc.hint or "check DBKIT_BACKUP_URI and S3_*"
        failed = (Service(status="warn", error=exc.message, hint=hint) if storage is None else
                  Storage(status="warn", target=storage.uri, latency_ms=latency_ms, error=exc.message, hint=hint))
        return failed, Service(status="warn", error="not checked: the backup target is unreachable")
    storage_svc = Storage(status="ok", target=storage.uri, latency_ms=latency_ms)
    now = datetime.now(UTC)
    status, hints, unfinished = "ok", [], {}
    later = found.unfinished_after_newest()
    if later:  # the most recent attempt has no manifest: it failed, was killed, or is still running
        attempt = later[0]
        started = _started(attempt.id) or attempt.last_seen
        age = (now - started).total_seconds() / 3600
        idle = max(0.0, (now - attempt.last_seen).total_seconds() / 3600)
        status = "warn"
        unfinished = {"unfinished": attempt.id, "unfinished_age_hours": round(age, 2),
                      "unfinished_idle_hours": round(idle, 2),
                      "last_status": f"incomplete ({attempt.id}, started {age:.1f} h ago, last write {idle:.1f} h ago)"}
        hints.append(f"backup {attempt.id} has no manifest: it failed, was killed or is still running; "
                     f"`dbkit backup prune --apply` (and the next successful backup) remove its leftovers once "
                     f"idle for DBKIT_BACKUP_STALE_AFTER ({settings.backup_stale_after})")
    counts = {"complete": len(found.complete), "incomplete": len(found.incomplete), "max_age_hours": max_backup_age_h}
    if not found.complete:
        return storage_svc, Backups(status="warn", **counts, **unfinished,
                                    hint="; ".join(["no complete backup yet: run `dbkit backup`", *hints]))
    newest = found.complete[0]
    age_h = (now - newest.finished_at).total_seconds() / 3600
    if age_h > max_backup_age_h:
        status = "warn"
        hints.insert(0, f"the newest backup is {age_h:.1f} h old (limit {max_backup_age_h:g} h)")
    return storage_svc, Backups(status=status, **counts, **{"last_status": "complete", **unfinished},
                                latest=newest.id, latest_age_hours=round(age_h, 2), latest_bytes=newest.stored_bytes,
                                hint="; ".join(hints) if hints else None)


def _started(backup_id: str) -> datetime | None:
    from dbkit.backup.manifest import is_backup_id, parse_backup_id

    return parse_backup_id(backup_id) if is_backup_id(backup_id) else None


def _environment(settings, conn) -> Environment:
    """DBKIT_ENV=prod requirements (settings side, and no trust authentication over TCP)."""
    problems = settings.environment_problems()
    if settings.env == "prod" and conn is not None:
        try:
            trust = conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust' "
                                 "AND type <> 'local'").fetchone()[0]
        except Exception:  # noqa: BLE001 - only superusers may read pg_hba_file_rules
            trust = 0
        if trust:
            problems.append("the server accepts trust authentication over TCP (a development cluster?)")
    return Environment(status="fail" if problems else "ok", env=settings.env, problems=tuple(problems),
                       hint="prod needs TLS to remote hosts, an s3:// backup target and DBKIT_PASSWORD_<ROLE> for "
                            "each LOGIN role" if problems else None)


def _connections(conn) -> Connections:
    used, limit = conn.execute("SELECT (SELECT count(*) FROM pg_stat_activity), "
                               "current_setting('max_connections')::int").fetchone()
    busy = used > 0.8 * limit
    return Connections(status="warn" if busy else "ok", used=used, max_connections=limit,
                       hint="more than 80% of max_connections in use: add a pooler or raise the limit" if busy else None)


def check(settings, *, max_backup_age_hours: float = 26.0) -> Report:
    """Run every check that applies and return the report.  Never raises for a
    failing check: failures are part of the report."""
    from dbkit import __version__

    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    services: dict[str, Service] = {}
    database, conn = _database(settings)
    services["environment"] = _environment(settings, conn)
    services["database"] = database
    if conn is not None:
        with conn:
            services["extensions"] = _extensions(conn, settings.extensions)
            services["connections"] = _connections(conn)
            migrations = services["migrations"] = _guard(lambda: _migrations(settings))
            services["roles"] = _guard(lambda: _roles(settings, conn, migrations))
            services["rls"] = _guard(lambda: _rls(settings, conn, migrations))
    else:
        for name in ("extensions", "connections", "roles", "migrations", "rls"):
            services[name] = Service(status="fail", error="not checked: the database is unreachable")
    services["storage"], services["backups"] = _backups(settings, max_backup_age_hours)
    worst = max(_RANK[s.status] for s in services.values())
    return Report(status=_OVERALL[worst], timestamp=timestamp, version=__version__,
                  settings=tuple(Setting(v, val, src) for v, val, src in settings.describe()), services=services)


def prometheus(report: Report) -> str:
    """The report in Prometheus text exposition format (prometheus_client's own writer)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("dbkit_health_status", "Overall health: 0 healthy, 1 degraded, 2 unhealthy.", EXIT_CODES[report.status])
    per_service = Gauge("dbkit_service_status", "Per service: 0 ok, 1 warn, 2 fail.", ["service"], registry=registry)
    for name, svc in report.services.items():
        per_service.labels(service=name).set(_RANK[svc.status])
    db = report.services.get("database")
    if isinstance(db, Database) and db.latency_ms is not None:
        gauge("dbkit_database_latency_ms", "Median SELECT 1 round trip.", db.latency_ms)
    backups = report.services.get("backups")
    if isinstance(backups, Backups) and backups.latest_age_hours is not None:
        gauge("dbkit_backup_age_seconds", "Age of the newest complete backup.",
              round(backups.latest_age_hours * 3600))
    if isinstance(backups, Backups) and backups.unfinished_age_hours is not None:
        gauge("dbkit_backup_unfinished_age_seconds", "Age of a backup attempt newer than the newest complete one "
              "that has no manifest (failed, killed or still running).", round(backups.unfinished_age_hours * 3600))
    conns = report.services.get("connections")
    if isinstance(conns, Connections):
        gauge("dbkit_connections_used", "Connections in use.", conns.used)
        gauge("dbkit_connections_max", "max_connections.", conns.max_connections)
    return generate_latest(registry).decode()
