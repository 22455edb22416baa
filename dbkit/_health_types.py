"""The results of ``dbkit check`` (:mod:`dbkit._health`): a :class:`Report` of frozen dataclasses, a
:class:`Service` subclass per kind of check, a plain :class:`Service` for a check that could not run.
``as_dict()`` is the JSON of ``dbkit check --json``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dbkit._render import jsonable

EXIT_CODES = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_RANK = {"ok": 0, "warn": 1, "fail": 2}
_OVERALL = {0: "healthy", 1: "degraded", 2: "unhealthy"}


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
        names = ["status", *(f.name for f in fields(self) if f.name not in ("status", *tail)), *tail]
        return {name: jsonable(getattr(self, name)) for name in names if getattr(self, name) is not None}


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
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("hint", "note")}


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
    """``current`` (read from ``version_table``) and ``head`` (of the project's ``migrations_dir``) are
    revision ids; ``edited`` reads "<revision> (<file name>)"."""

    current: tuple[str, ...]
    head: tuple[str, ...]
    pending: tuple[str, ...] = ()
    schema_diffs: tuple[str, ...] = ()
    edited: tuple[str, ...] = ()
    check_ms: float  # kw_only: may follow fields with defaults, and as_dict() keeps this order
    version_table: str | None = None
    migrations_dir: str | None = None


@dataclass(frozen=True, kw_only=True)
class Roles(Service):
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Rls(Service):
    tables_checked: int
    errors: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class Job:
    """A TimescaleDB job (policy or user-defined) and how its runs went (``timescaledb_information.job_stats``)."""

    job_id: int
    name: str
    hypertable: str | None
    scheduled: bool
    last_run_status: str | None  # Success | Failed | None (never ran)
    last_successful_finish: str | None
    total_failures: int
    next_start: str | None


@dataclass(frozen=True, kw_only=True)
class Timescale(Service):
    """TimescaleDB's edition (``community`` or ``apache``: ``timescaledb.license``), the version created in
    the database, and its jobs; a job whose last run failed makes it ``warn``."""

    edition: str
    version: str | None = None
    jobs: tuple[Job, ...] = ()


@dataclass(frozen=True)
class VariableState:
    """One variable of ``[tool.dbkit.variables]``: ``status`` ok, missing, invalid or unset (optional here) and
    where its value came from; never the value."""

    name: str
    type: str
    status: str
    source: str | None = None


@dataclass(frozen=True, kw_only=True)
class Environment(Service):
    """DBKIT_ENV's requirements and, when the project declares them, its own variables (``problems`` holds
    one line per missing or malformed one; ``variables`` is None when none are declared)."""

    env: str
    problems: tuple[str, ...]
    variables: tuple[VariableState, ...] | None = None


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
        return {"status": self.status, "timestamp": self.timestamp, "version": self.version,
                "settings": jsonable(self.settings),
                "services": {name: svc.as_dict() for name, svc in self.services.items()}}

    def summary(self) -> dict[str, Any]:
        """``dbkit check --format health``: the compact shape of a service's health endpoint, stable and small
        enough for a monitor or an application's ``GET /health`` to pass on::

            {"status": "healthy" | "degraded" | "unhealthy", "timestamp": "...",
             "services": {"database": {"status": "up" | "down", "latency": 0.42}, "storage": {...}, ...},
             "version": "<dbkit's version>"}

        A service is ``down`` when its check failed and ``up`` otherwise; one that works but needs attention
        (dbkit's ``warn``) is ``up`` with a ``warning``, a ``down`` one has an ``error``: one line each, with the
        fix.  ``latency`` (milliseconds, None when it could not be measured) is given for the services that
        have one: database (a SELECT 1 round trip) and storage (the backup target).  The overall status is the
        exit code's (0 healthy, 1 degraded, 2 unhealthy)."""
        services: dict[str, Any] = {}
        for name, svc in self.services.items():
            out: dict[str, Any] = {"status": "down" if svc.status == "fail" else "up"}
            if isinstance(svc, Database | Storage) or name in ("database", "storage"):
                out["latency"] = getattr(svc, "latency_ms", None)
            if svc.status != "ok":
                out["error" if svc.status == "fail" else "warning"] = _message(svc)
            services[name] = out
        return {"status": self.status, "timestamp": self.timestamp, "services": services, "version": self.version}


def _message(svc: Service) -> str:
    """One line on what is wrong with a service that is not ok, and its fix."""
    found = [svc.error] if svc.error else list(getattr(svc, "problems", ()) or getattr(svc, "errors", ())
                                                or getattr(svc, "warnings", ()) or ())
    text = "; ".join(found[:3]) + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
    if svc.hint:
        text = f"{text}; fix: {svc.hint}" if text else svc.hint
    return text or svc.note or svc.status
