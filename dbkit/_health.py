"""``dbkit check``: is the database side healthy?

Services: environment (DBKIT_ENV's requirements and the application's own variables declared in
``[tool.dbkit.variables]``: missing or malformed ones fail it), database (reachable, latency, version),
extensions, connections, roles (``roles check``), migrations (``migrate check``), rls (``rls audit``),
storage (backup target reachable) and backups (newest complete backup's age; a later attempt without a
manifest, such as a killed backup's open S3 multipart upload or ``.partial-`` file, degrades it, with its age).

:func:`check` returns a :class:`Report` (frozen dataclasses: a :class:`Service` subclass per kind
of check, a plain :class:`Service` for a check that could not run; ``as_dict()`` is the JSON of
``dbkit check --json``); the CLI renders it.  Each service has a status (``ok``/``warn``/``fail``),
details and, when something is wrong, a fix hint.  Overall status: ``healthy`` (exit 0),
``degraded`` (exit 1), ``unhealthy`` (exit 2).  ``Report.summary()`` is the compact health-endpoint shape of
``dbkit check --format health`` (services up or down, with their latency).

The result types are in ``_health_types`` (re-exported here); the checks, one function per service, and
the Prometheus rendering are here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from dbkit._health_types import (
    _OVERALL,
    _RANK,
    EXIT_CODES,
    Backups,
    Connections,
    Database,
    Environment,
    Extension,
    Extensions,
    Job,
    Migrations,
    Report,
    Rls,
    Roles,
    Service,
    Setting,
    Storage,
    Timescale,
    VariableState,
)
from dbkit.errors import DbkitError

__all__ = ["Backups", "Connections", "Database", "Environment", "Extension", "Extensions", "Migrations", "Rls",
    "Roles", "Service", "Setting", "Storage", "Timescale", "check", "prometheus"]


def check(settings, *, max_backup_age_hours: float = 26.0) -> Report:
    """Run every check that applies and return the report.  Never raises for a
    failing check: failures are part of the report."""
    from dbkit import __version__

    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    database, conn = _database(settings)
    services: dict[str, Service] = {"environment": _environment(settings, conn), "database": database}
    if conn is not None:
        with conn:
            services["extensions"] = _extensions(conn, settings.extensions)
            services["connections"] = _connections(conn)
            migrations = services["migrations"] = _guard(lambda: _migrations(settings))
            services["roles"] = _guard(lambda: _roles(settings, conn, migrations))
            services["rls"] = _guard(lambda: _rls(settings, conn, migrations))
            if "timescaledb" in settings.extensions:
                services["timescaledb"] = _guard(lambda: _timescale(conn))
    else:
        for name in ("extensions", "connections", "roles", "migrations", "rls"):
            services[name] = Service(status="fail", error="not checked: the database is unreachable")
    services["storage"], services["backups"] = _backups(settings, max_backup_age_hours)
    worst = max(_RANK[s.status] for s in services.values())
    return Report(status=_OVERALL[worst], timestamp=timestamp, version=__version__,
                  settings=tuple(Setting(v, val, src) for v, val, src in settings.describe()), services=services)


def _database(settings) -> tuple[Service, Any]:
    """Connect and measure; returns (the service, open connection or None)."""
    from dbkit import _db as db
    from dbkit import _target as target

    try:
        url = target.resolve_url(settings)
    except DbkitError as exc:
        return Service(status="fail", error=exc.message, hint=exc.hint or None), None
    where = {"url": url.masked, "embedded": settings.uses_dev_cluster}
    try:
        conn, connect_ms = _timed(lambda: db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout))
    except DbkitError as exc:
        return Database(status="fail", **where, error=exc.message, hint=exc.hint or None), None
    latency_ms = round(db.timed_ping(conn), 3)
    row = conn.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, "
        "current_database(), current_user"
    ).fetchone()
    return Database(status="ok", **where, connect_ms=connect_ms, latency_ms=latency_ms, server_version=row[0],
                    server_version_num=row[1], database=row[2], user=row[3]), conn


def _extensions(conn, required: tuple[str, ...]) -> Extensions:
    from dbkit import _db as db

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
        else:
            items.append(Extension(name, default, installed, "ok", note=None if installed is not None else
                                   "available, not created in this database yet (migrations create it)"))
    return Extensions(status="fail" if any(i.status == "fail" for i in items) else "ok",
                      timescaledb_preloaded=preloaded, items=tuple(items))


_JOBS_SQL = """
SELECT j.job_id, j.application_name, CASE WHEN j.hypertable_name IS NOT NULL
       THEN format('%I.%I', j.hypertable_schema, j.hypertable_name) END, j.scheduled,
       s.last_run_status, CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish::text END,
       COALESCE(s.total_failures, 0), CASE WHEN isfinite(s.next_start) THEN s.next_start::text END
FROM timescaledb_information.jobs j LEFT JOIN timescaledb_information.job_stats s USING (job_id)
WHERE j.job_id >= 1000 ORDER BY 1
"""


def _timescale(conn) -> Service:
    """The edition (the migrate preflight refuses community features on an Apache server) and job health."""
    from dbkit.migrate._edition import HOW_TO_GET, edition_of

    edition = edition_of(conn)
    if edition is None:
        return Service(status="ok", note="TimescaleDB is not loaded in this server (see extension timescaledb)")
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if row is None:
        return Timescale(status="ok", edition=edition, note="not created in this database yet (migrations create it)")
    jobs = tuple(Job(*r) for r in conn.execute(_JOBS_SQL).fetchall())
    failed = [j for j in jobs if j.last_run_status == "Failed"]
    hint = None
    if failed:
        hint = (f"job {failed[0].job_id} ({failed[0].name}) failed its last run"
                + (f" ({len(failed) - 1} more)" if len(failed) > 1 else "")
                + ": see timescaledb_information.job_errors, then CALL run_job(id)")
    note = None if edition == "community" else (
        f"Apache-2 edition: no compression, policies, aggregates or jobs ({HOW_TO_GET})")
    return Timescale(status="warn" if failed else "ok", edition=edition, version=row[0], jobs=jobs, hint=hint,
                     note=note)


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
    """The project's own migrations against the database: what is not configured is a note, a version
    table elsewhere or a revision the project does not have fails, pending revisions or drift warn."""
    from dbkit.migrate import _runner as runner

    if not (settings.migrations_dir / "env.py").is_file():
        return Service(status="ok", note=f"not configured: no Alembic environment at {_shown(settings)}/env.py "
                                         "(run `dbkit init` to create one)")
    st, ms = _timed(lambda: runner.status(settings))
    where = {"current": tuple(st.current), "head": tuple(st.heads), "version_table": st.version_table,
             "migrations_dir": st.migrations_dir}
    if st.problem:
        error, hint = (st.elsewhere.describe(), st.adopt) if st.elsewhere is not None else (st.problem, None)
        return Migrations(status="fail", **where, check_ms=ms, error=error, hint=hint)
    if not st.heads:
        return Migrations(status="ok", **where, check_ms=ms, note=st.advice())
    result, check_ms = _timed(lambda: runner.check(settings))
    verdict, hint = "ok", None
    if result.edited:
        verdict, hint = "fail", "an applied revision file was edited: restore it or add a new revision"
    elif result.pending:
        verdict = "warn"
        hint = st.advice() if st.unversioned else "run `dbkit migrate`"
    elif result.schema_diffs:
        verdict = "warn"
        hint = (f"the database differs from your models (the target_metadata of {st.migrations_dir}/env.py): "
                "`dbkit migrate new --autogenerate -m \"...\"`")
    note = (f"{len(result.unrecorded)} revision(s) applied without dbkit (no checksum to compare)"
            if result.unrecorded else None)
    return Migrations(status=verdict, **where, pending=tuple(r.revision for r in result.pending),
                      schema_diffs=tuple(result.schema_diffs or ()),
                      edited=tuple(f"{d.revision} ({d.filename})" for d in result.edited),
                      check_ms=round(ms + check_ms, 2), note=note, hint=hint)


def _shown(settings) -> str:
    where = settings.migrations_dir
    return str(where.relative_to(settings.project_dir) if where.is_relative_to(settings.project_dir) else where)


def _rls(settings, conn, migrations: Service) -> Service:
    from dbkit.rls._audit import audit

    if _pending(migrations):
        return Service(status="ok", note=_PENDING)
    report = audit(settings, conn)
    errors = tuple(f.line() for f in report.findings if f.severity == "error")
    warnings = tuple(f.line() for f in report.findings if f.severity != "error")
    note = ("not configured: RLS is not used (DBKIT_RLS_MODEL=none), no table is expected to have it"
            if getattr(report, "model", None) == "none" else None)
    return Rls(status="fail" if errors else ("warn" if warnings else "ok"), tables_checked=report.tables_checked,
               errors=errors, warnings=warnings, note=note,
               hint="run `dbkit rls audit` for the fixes" if errors or warnings else None)


def _backups(settings, max_backup_age_h: float) -> tuple[Service, Service]:
    from dbkit.backup import _pipeline as pipeline
    from dbkit.backup._manifest import is_backup_id, parse_backup_id

    storage = latency_ms = None
    try:
        storage = pipeline.storage_for(settings)
        _, latency_ms = _timed(storage.check)
        found = pipeline.scan(settings, storage=storage)
    except DbkitError as exc:
        hint = exc.hint or "check DBKIT_BACKUP_URI and S3_*"
        failed = (Service(status="warn", error=exc.message, hint=hint) if storage is None else
                  Storage(status="warn", target=storage.uri, latency_ms=latency_ms, error=exc.message, hint=hint))
        return failed, Service(status="warn", error="not checked: the backup target is unreachable")
    storage_svc = Storage(status="ok", target=storage.uri, latency_ms=latency_ms)
    now = datetime.now(UTC)
    hints, unfinished = [], {}  # a hint each for what makes it warn
    later = found.unfinished_after_newest()
    if later:  # the most recent attempt has no manifest: it failed, was killed, or is still running
        attempt = later[0]
        started = parse_backup_id(attempt.id) if is_backup_id(attempt.id) else attempt.last_seen
        age = (now - started).total_seconds() / 3600
        idle = max(0.0, (now - attempt.last_seen).total_seconds() / 3600)
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
        hints.insert(0, f"the newest backup is {age_h:.1f} h old (limit {max_backup_age_h:g} h)")
    return storage_svc, Backups(status="warn" if hints else "ok", **counts, **{"last_status": "complete", **unfinished},
                                latest=newest.id, latest_age_hours=round(age_h, 2), latest_bytes=newest.stored_bytes,
                                hint="; ".join(hints) if hints else None)


def _environment(settings, conn) -> Environment:
    """DBKIT_ENV=prod requirements (settings side, and no trust authentication over TCP), then the application's
    own variables (``[tool.dbkit.variables]``): each missing or malformed one is a problem line (its value never
    shown) and fails the service."""
    problems = settings.environment_problems()
    if settings.env == "prod" and conn is not None:
        try:
            trust = conn.execute("SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust' "
                                 "AND type <> 'local'").fetchone()[0]
        except Exception:  # noqa: BLE001 - only superusers may read pg_hba_file_rules
            trust = 0
        if trust:
            problems.append("the server accepts trust authentication over TCP (a development cluster?)")
    hint = ("prod needs TLS to remote hosts, an s3:// backup target and DBKIT_PASSWORD_<ROLE> for each LOGIN role"
            if problems else None)
    variables = None
    if getattr(settings, "variables", ()):
        from dbkit._env_check import check_variables

        checked = check_variables(settings)
        problems += checked.problems
        variables = tuple(VariableState(v.name, v.type, v.status, v.source) for v in checked.variables)
        if checked.problems:
            fix = "set the variables declared in [tool.dbkit.variables] (`dbkit config check` lists every problem)"
            hint = f"{hint}; {fix}" if hint else fix
    return Environment(status="fail" if problems else "ok", env=settings.env, problems=tuple(problems), hint=hint,
                       variables=variables)


def _connections(conn) -> Connections:
    used, limit = conn.execute("SELECT (SELECT count(*) FROM pg_stat_activity), "
                               "current_setting('max_connections')::int").fetchone()
    busy = used > 0.8 * limit
    hint = "more than 80% of max_connections in use: add a pooler or raise the limit" if busy else None
    return Connections(status="warn" if busy else "ok", used=used, max_connections=limit, hint=hint)


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
    env = report.services.get("environment")
    if isinstance(env, Environment):
        gauge("dbkit_environment_problems", "Settings and declared variables ([tool.dbkit.variables]) that are "
              "missing or malformed, and DBKIT_ENV=prod requirements not met.", len(env.problems))
    conns = report.services.get("connections")
    if isinstance(conns, Connections):
        gauge("dbkit_connections_used", "Connections in use.", conns.used)
        gauge("dbkit_connections_max", "max_connections.", conns.max_connections)
    return generate_latest(registry).decode()
