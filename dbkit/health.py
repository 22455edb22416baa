"""``dbkit check``: is the database side healthy?

Services: database (reachable, latency, version), extensions, connections, roles (``roles
check``), migrations (``migrate check``), rls (``rls audit``), storage (backup target reachable)
and backups (newest complete backup's age; a later attempt without a manifest, such as a killed
backup's open S3 multipart upload or ``.partial-`` file, degrades it, with its age).

:func:`check` returns a :class:`Report` (plain data, JSON-ready); the CLI
renders it.  Each service has a status (``ok``/``warn``/``fail``), details
and, when something is wrong, a fix hint.  Overall status: ``healthy`` (exit 0),
``degraded`` (exit 1), ``unhealthy`` (exit 2).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from dbkit.errors import DbkitError

__all__ = ["Report", "check", "prometheus", "EXIT_CODES"]

EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_RANK = {"ok": 0, "warn": 1, "fail": 2}
_OVERALL = {0: "healthy", 1: "degraded", 2: "unhealthy"}


@dataclass
class Report:
    status: str
    timestamp: str
    version: str
    settings: list[dict[str, str]]
    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "timestamp": self.timestamp,
            "version": self.version,
            "settings": self.settings,
            "services": self.services,
        }


def _database(settings) -> tuple[dict[str, Any], Any]:
    """Connect and measure; returns (service dict, open connection or None)."""
    from dbkit import db, target

    service: dict[str, Any] = {"status": "fail"}
    try:
        url = target.resolve_url(settings)
        service["url"] = url.masked
        service["embedded"] = settings.uses_dev_cluster
        t0 = time.perf_counter()
        conn = db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout)
    except DbkitError as exc:
        service["error"] = exc.message
        if exc.hint:
            service["hint"] = exc.hint
        return service, None
    service["connect_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    service["latency_ms"] = round(db.timed_ping(conn), 3)
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "current_database(), current_user"
    ).fetchone()
    service.update(
        status="ok", server_version=row[0], server_version_num=row[1], database=row[2], user=row[3]
    )
    return service, conn


def _extensions(conn, required: tuple[str, ...]) -> dict[str, Any]:
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
        item: dict[str, Any] = {"name": name, "available": default, "installed": installed, "status": "ok"}
        if default is None:
            item.update(status="fail", hint=db.install_hint(name))
        elif name == "timescaledb" and not preloaded:
            item.update(status="fail", hint=db.install_hint(name))
        elif installed is None:
            item["note"] = "available, not created in this database yet (migrations create it)"
        items.append(item)
    worst = max((_RANK[i["status"]] for i in items), default=0)
    return {"status": {0: "ok", 1: "warn", 2: "fail"}[worst], "timescaledb_preloaded": preloaded, "items": items}


def _timed(fn) -> tuple[Any, float]:
    t0 = time.perf_counter()
    value = fn()
    return value, round((time.perf_counter() - t0) * 1000, 2)


def _guard(fn) -> dict[str, Any]:
    """Run one check; a DbkitError becomes a failed service with its message and hint."""
    try:
        return fn()
    except DbkitError as exc:
        out = {"status": "fail", "error": exc.message}
        if exc.hint:
            out["hint"] = exc.hint
        return out


def _roles(settings, conn, migrations: dict[str, Any]) -> dict[str, Any]:
    from dbkit import roles

    if migrations.get("pending"):  # the migrations create the roles and the grants
        return {"status": "ok", "note": "not checked: migrations are pending"}
    drift = roles.check(settings, conn)
    errors = [d.describe() for d in drift if d.severity == "error"]
    warnings = [d.describe() for d in drift if d.severity != "error"]
    out: dict[str, Any] = {"status": "fail" if errors else "ok", "errors": errors, "warnings": warnings}
    if errors:
        out["hint"] = "run `dbkit roles check` for the fixes (usually `dbkit roles apply`)"
    return out


def _migrations(settings) -> dict[str, Any]:
    from dbkit.migrate import runner

    if not (settings.migrations_dir / "env.py").is_file():
        return {"status": "ok", "note": "no migrations directory: not checked"}
    result, ms = _timed(lambda: runner.check(settings))
    status = runner.status(settings)
    out: dict[str, Any] = {"status": "ok", "current": status.current, "head": status.heads,
                           "pending": [r.revision for r in result.pending], "schema_diffs": result.schema_diffs or [],
                           "edited": [f"{d.revision} ({d.filename})" for d in result.edited], "check_ms": ms}
    if result.edited:
        out.update(status="fail", hint="an applied revision file was edited: restore it or add a new revision")
    elif result.pending or result.schema_diffs:
        out.update(status="warn", hint="run `dbkit migrate`" if result.pending
                   else "the models and the database differ: `dbkit migrate new --autogenerate`")
    return out


def _rls(settings, conn, migrations: dict[str, Any]) -> dict[str, Any]:
    from dbkit.rls.audit import audit

    if migrations.get("pending"):
        return {"status": "ok", "note": "not checked: migrations are pending"}
    report = audit(settings, conn)
    errors = [f.line() for f in report.findings if f.severity == "error"]
    warnings = [f.line() for f in report.findings if f.severity != "error"]
    out: dict[str, Any] = {"status": "fail" if errors else ("warn" if warnings else "ok"),
                           "tables_checked": report.tables_checked, "errors": errors, "warnings": warnings}
    if errors or warnings:
        out["hint"] = "run `dbkit rls audit` for the fixes"
    return out


def _backups(settings, max_backup_age_h: float) -> tuple[dict[str, Any], dict[str, Any]]:
    from dbkit.backup import pipeline

    storage_svc: dict[str, Any] = {"status": "ok"}
    try:
        storage = pipeline.storage_for(settings)
        storage_svc["target"] = storage.uri
        _, storage_svc["latency_ms"] = _timed(storage.check)
        found, _ = _timed(lambda: pipeline.scan(settings, storage=storage))
    except DbkitError as exc:
        storage_svc.update(status="warn", error=exc.message, hint=exc.hint or "check DBKIT_BACKUP_URI and S3_*")
        return storage_svc, {"status": "warn", "error": "not checked: the backup target is unreachable"}
    backups: dict[str, Any] = {"status": "ok", "complete": len(found.complete), "incomplete": len(found.incomplete),
                               "max_age_hours": max_backup_age_h}
    now = datetime.now(UTC)
    hints = []
    later = found.unfinished_after_newest()
    if later:  # the most recent attempt has no manifest: it failed, was killed, or is still running
        unfinished_id, last_seen = later[0]
        started = _started(unfinished_id) or last_seen
        age = (now - started).total_seconds() / 3600
        idle = max(0.0, (now - last_seen).total_seconds() / 3600)
        backups.update(status="warn", unfinished=unfinished_id, unfinished_age_hours=round(age, 2),
                       unfinished_idle_hours=round(idle, 2),
                       last_status=f"incomplete ({unfinished_id}, started {age:.1f} h ago, last write "
                                   f"{idle:.1f} h ago)")
        hints.append(f"backup {unfinished_id} has no manifest: it failed, was killed or is still running; "
                     f"`dbkit backup prune --apply` (and the next successful backup) remove its leftovers once "
                     f"idle for DBKIT_BACKUP_STALE_AFTER ({settings.backup_stale_after})")
    if not found.complete:
        backups.update(status="warn", hint="; ".join(["no complete backup yet: run `dbkit backup`", *hints]))
        return storage_svc, backups
    newest = found.complete[0]
    age_h = (now - newest.finished_at).total_seconds() / 3600
    backups.update(latest=newest.id, latest_age_hours=round(age_h, 2), latest_bytes=newest.stored_bytes)
    backups.setdefault("last_status", "complete")
    if age_h > max_backup_age_h:
        backups["status"] = "warn"
        hints.insert(0, f"the newest backup is {age_h:.1f} h old (limit {max_backup_age_h:g} h)")
    if hints:
        backups["hint"] = "; ".join(hints)
    return storage_svc, backups


def _started(backup_id: str) -> datetime | None:
    from dbkit.backup.manifest import is_backup_id, parse_backup_id

    return parse_backup_id(backup_id) if is_backup_id(backup_id) else None


def _environment(settings, conn) -> dict[str, Any]:
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
    out: dict[str, Any] = {"status": "fail" if problems else "ok", "env": settings.env, "problems": problems}
    if problems:
        out["hint"] = "prod needs TLS to remote hosts, an s3:// backup target and DBKIT_PASSWORD_<ROLE> for each LOGIN role"
    return out


def _connections(conn) -> dict[str, Any]:
    used, limit = conn.execute("SELECT (SELECT count(*) FROM pg_stat_activity), "
                               "current_setting('max_connections')::int").fetchone()
    out: dict[str, Any] = {"status": "ok", "used": used, "max_connections": limit}
    if used > 0.8 * limit:
        out.update(status="warn", hint="more than 80% of max_connections in use: add a pooler or raise the limit")
    return out


def check(settings, *, max_backup_age_hours: float = 26.0) -> Report:
    """Run every check that applies and return the report.  Never raises for a
    failing check: failures are part of the report."""
    from dbkit import __version__

    report = Report(
        status="healthy",
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        version=__version__,
        settings=[{"variable": v, "value": val, "source": src} for v, val, src in settings.describe()],
    )
    database, conn = _database(settings)
    report.services["environment"] = _environment(settings, conn)
    report.services["database"] = database
    unreachable = {"status": "fail", "error": "not checked: the database is unreachable"}
    if conn is not None:
        with conn:
            report.services["extensions"] = _extensions(conn, settings.extensions)
            report.services["connections"] = _connections(conn)
            migrations = report.services["migrations"] = _guard(lambda: _migrations(settings))
            report.services["roles"] = _guard(lambda: _roles(settings, conn, migrations))
            report.services["rls"] = _guard(lambda: _rls(settings, conn, report.services["migrations"]))
    else:
        for name in ("extensions", "connections", "roles", "migrations", "rls"):
            report.services[name] = dict(unreachable)
    report.services["storage"], report.services["backups"] = _backups(settings, max_backup_age_hours)
    worst = max(_RANK[s["status"]] for s in report.services.values())
    report.status = _OVERALL[worst]
    return report


def prometheus(report: Report) -> str:
    """The report in Prometheus text exposition format (prometheus_client's own writer)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("dbkit_health_status", "Overall health: 0 healthy, 1 degraded, 2 unhealthy.", EXIT_CODES[report.status])
    per_service = Gauge("dbkit_service_status", "Per service: 0 ok, 1 warn, 2 fail.", ["service"], registry=registry)
    for name, svc in report.services.items():
        per_service.labels(service=name).set(_RANK[svc["status"]])
    db = report.services.get("database", {})
    if "latency_ms" in db:
        gauge("dbkit_database_latency_ms", "Median SELECT 1 round trip.", db["latency_ms"])
    backups = report.services.get("backups", {})
    if "latest_age_hours" in backups:
        gauge("dbkit_backup_age_seconds", "Age of the newest complete backup.",
              round(backups["latest_age_hours"] * 3600))
    if "unfinished_age_hours" in backups:
        gauge("dbkit_backup_unfinished_age_seconds", "Age of a backup attempt newer than the newest complete one "
              "that has no manifest (failed, killed or still running).", round(backups["unfinished_age_hours"] * 3600))
    conns = report.services.get("connections", {})
    if "used" in conns:
        gauge("dbkit_connections_used", "Connections in use.", conns["used"])
        gauge("dbkit_connections_max", "max_connections.", conns["max_connections"])
    return generate_latest(registry).decode()
