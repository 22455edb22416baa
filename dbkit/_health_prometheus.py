"""``dbkit check --prometheus``: a health :class:`~dbkit._health_types.Report` as Prometheus metrics."""

from __future__ import annotations

from dbkit._health_types import _RANK, EXIT_CODES, Backups, Connections, Database, Environment, Report


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
