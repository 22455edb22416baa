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

The result types are in ``_health_types``, the checks in ``_health_checks`` and the Prometheus rendering
in ``_health_prometheus``; this module runs them and re-exports the public names.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from dbkit._health_checks import (
    _backups,
    _connections,
    _database,
    _environment,
    _extensions,
    _guard,
    _migrations,
    _rls,
    _roles,
    _timescale,
)
from dbkit._health_prometheus import prometheus
from dbkit._health_types import (
    _OVERALL,
    _RANK,
    Backups,
    Connections,
    Database,
    Environment,
    Extension,
    Extensions,
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

__all__ = ["Backups", "Connections", "Database", "Environment", "Extension", "Extensions", "Migrations", "Rls",
    "Roles", "Service", "Setting", "Storage", "Timescale", "check", "prometheus"]


def check(settings, *, max_backup_age_hours: float = 26.0) -> Report:
    """Run every check that applies and return the report.  Never raises for a
    failing check: failures are part of the report."""
    from dbkit import __version__

    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    services: dict[str, Service] = {}
    database, conn = _database(settings)
    services["environment"] = _with_variables(_environment(settings, conn), settings)
    services["database"] = database
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


def _with_variables(svc: Environment, settings) -> Environment:
    """The environment service with the application's own variables (``[tool.dbkit.variables]``) checked too:
    each missing or malformed one is a problem line (its value never shown) and fails the service."""
    if not getattr(settings, "variables", ()):
        return svc
    from dbkit._env_check import check_variables

    checked = check_variables(settings)
    problems = (*svc.problems, *checked.problems)
    hint = svc.hint
    if checked.problems:
        fix = "set the variables declared in [tool.dbkit.variables] (`dbkit config check` lists every problem)"
        hint = f"{hint}; {fix}" if hint else fix
    return dataclasses.replace(
        svc, status="fail" if problems else svc.status, problems=problems, hint=hint,
        variables=tuple(VariableState(v.name, v.type, v.status, v.source) for v in checked.variables))
