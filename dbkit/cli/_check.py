"""`dbkit check`: the health report (dbkit._health) as a table, JSON, the compact health JSON or Prometheus text.

Each service of ``Report.services`` is a typed :class:`dbkit._health.Service` (a subclass per kind of check
that ran); the table reads their fields, ``--json`` prints ``Report.as_dict()``, ``--format health``
``Report.summary()``.
"""

from __future__ import annotations

import sys

import click

from dbkit import _health as health
from dbkit import _render as render
from dbkit._render import Table
from dbkit.cli._common import FiniteFloat, State, json_option, pass_state
from dbkit.errors import UsageError


@click.command()
@json_option
@click.option("--prometheus", "as_prometheus", is_flag=True, help="Print Prometheus text exposition format.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "health", "prometheus"]), default=None,
              help="table; json (= --json, every detail); health: the compact health-endpoint JSON (status, "
                   "timestamp, services up/down with latency, version); prometheus (= --prometheus).")
@click.option("--max-backup-age", type=FiniteFloat(min=0, min_open=True), default=26.0, show_default=True,
              metavar="HOURS",
              help="Newest complete backup older than this: degraded.")
@pass_state
def check(state: State, as_json: bool, as_prometheus: bool, fmt: str | None, max_backup_age: float) -> None:
    """Is the database side healthy?  Settings, database, extensions, connections, roles,
    migrations, RLS, backup target and backups, each with a fix hint.

    Exit code: 0 healthy, 1 degraded, 2 unhealthy.
    """
    flags = {name for name, given in (("json", as_json), ("prometheus", as_prometheus)) if given}
    if fmt:
        flags.add(fmt)
    if len(flags) > 1:
        raise UsageError(f"--json, --prometheus and --format ask for different outputs ({', '.join(sorted(flags))}): "
                         "give one", hint="e.g. dbkit check --format health")
    fmt = flags.pop() if flags else "table"
    report = health.check(state.settings, max_backup_age_hours=max_backup_age)
    if fmt == "prometheus":
        sys.stdout.write(health.prometheus(report))
    elif fmt == "health":
        render.emit_json(report.summary())
    else:
        render.show(report, _describe, as_json=fmt == "json")
    sys.exit(report.exit_code)


def _fix(svc) -> str:
    return f"; fix: {svc.hint}" if svc.hint else ""


def _counts(svc) -> str:
    return f"{len(svc.errors)} error(s), {len(svc.warnings)} warning(s)" + _fix(svc)


def _joined(*parts) -> str:
    """The parts that are there (not empty, not None), joined by "; "."""
    return "; ".join(part for part in parts if part)


def _service_detail(svc) -> str:
    if svc.error:
        return svc.error + _fix(svc)
    if isinstance(svc, health.Database):
        return (f"{svc.url}  PostgreSQL {svc.server_version}  latency {svc.latency_ms} ms "
                f"(connect {svc.connect_ms} ms)")
    if isinstance(svc, health.Environment):
        ok = sum(v.status in ("ok", "unset") for v in svc.variables or ())
        return _joined(f"DBKIT_ENV={svc.env}",
                       svc.variables and f"{ok} of {len(svc.variables)} declared variables valid",
                       *svc.problems)
    if isinstance(svc, health.Connections):
        return f"{svc.used} of max_connections {svc.max_connections}"
    if isinstance(svc, health.Roles):
        return _counts(svc)
    if isinstance(svc, health.Migrations):
        if not svc.head:
            return svc.note or ""
        mine = f" ({svc.migrations_dir})" if svc.migrations_dir else ""
        return _joined(f"database at {', '.join(svc.current) or 'base'}, "
                       f"your migrations{mine} at {', '.join(svc.head)}",
                       svc.pending and f"{len(svc.pending)} pending", svc.edited and f"edited: {', '.join(svc.edited)}",
                       svc.note, svc.hint and f"fix: {svc.hint}")
    if isinstance(svc, health.Rls):
        return (f"{svc.note}; " if svc.note else f"{svc.tables_checked} tables; ") + _counts(svc)
    if isinstance(svc, health.Timescale):
        if svc.version is None:
            return f"{svc.edition} edition; {svc.note}"
        failed = [j for j in svc.jobs if j.last_run_status == "Failed"]
        ok = [j.last_successful_finish for j in svc.jobs if j.last_successful_finish]
        last = f", last success {max(ok)}" if ok else ""
        return f"{svc.version}, {svc.edition} edition; {len(svc.jobs)} jobs, {len(failed)} failed{last}" + _fix(svc)
    if isinstance(svc, health.Storage):
        return f"{svc.target} reachable in {svc.latency_ms} ms"
    if isinstance(svc, health.Backups):
        if svc.latest is not None:
            return (f"newest {svc.latest} is {svc.latest_age_hours:.1f} h old "
                    f"(limit {svc.max_age_hours:g} h), {svc.complete} complete, "
                    f"last attempt {svc.last_status}" + _fix(svc))
        return f"none complete; fix: {svc.hint or 'run `dbkit backup`'}"
    return svc.note or ""


def _extension_rows(svc):
    for item in svc.items:
        if item.status != "ok":
            detail = f"fix: {item.hint}"
        elif item.installed:
            detail = f"installed {item.installed}"
        else:
            detail = f"available {item.available}; {item.note}"
        if item.name == "timescaledb" and item.available:
            detail += "; preloaded" if svc.timescaledb_preloaded else "; NOT preloaded"
        yield (f"extension {item.name}", item.status, detail)


def _describe(report):
    yield Table(["setting", "value", "source"], [(s.variable, s.value, s.source) for s in report.settings],
                title="Settings")
    yield ""
    rows = []
    for name, svc in report.services.items():
        if isinstance(svc, health.Extensions):
            rows.extend(_extension_rows(svc))
        else:
            rows.append((name, svc.status, _service_detail(svc)))
    yield Table(["check", "status", "detail"], rows, title="Health")
    yield ""
    yield f"status: {report.status}"
