"""``dbkit check``: is the database side healthy?

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

__all__ = ["Report", "check", "EXIT_CODES"]

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
    from dbkit import db

    service: dict[str, Any] = {"status": "fail"}
    try:
        url = db.resolve_url(settings)
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


def check(settings) -> Report:
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
    report.services["database"] = database
    if conn is not None:
        with conn:
            report.services["extensions"] = _extensions(conn, settings.extensions)
    else:
        report.services["extensions"] = {"status": "fail", "error": "not checked: the database is unreachable"}
    worst = max(_RANK[s["status"]] for s in report.services.values())
    report.status = _OVERALL[worst]
    return report
