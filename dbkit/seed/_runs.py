"""What a seed run plans and returns (:class:`SeedResult`), and its record in ``dbkit.seed_runs``
(:class:`SeedRun`, :class:`SeedStatus`): writing and reading that table."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from dbkit.seed._catalog import _set_role

RUNS_TABLE = "dbkit.seed_runs"


@dataclass
class TableResult:
    table: str
    rows: int
    seconds: float = 0.0
    rows_per_s: float = 0.0
    checksum: str | None = None
    index_seconds: float | None = None
    seeder: str = ""
    #: chunks compressed after the load (``--compress``: the table's compression policy was run)
    compressed_chunks: int | None = None


@dataclass
class SeedResult:
    status: str  # seeded | noop | planned
    seed: int
    profile: str
    scale: float
    tenant_skew: float
    #: the "now" the time series end at (aware, UTC); ``--anchor`` with it reproduces the rows
    anchor: datetime | None = None
    tables: list[TableResult] = field(default_factory=list)
    sql_files: list[str] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["anchor"] = None if self.anchor is None else self.anchor.isoformat()
        d["total_rows"] = sum(t.rows for t in self.tables)
        return d


def _ensure_runs_table(conn, owner: str | None) -> None:
    """dbkit.seed_runs, owned by the owner role (created by the session user when the schema is missing)."""
    _set_role(conn, None)
    conn.execute("CREATE SCHEMA IF NOT EXISTS dbkit" + (f' AUTHORIZATION "{owner}"' if owner else ""))
    _set_role(conn, owner)
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {RUNS_TABLE} ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " started_at timestamptz NOT NULL, finished_at timestamptz NOT NULL DEFAULT now(),"
        " seed bigint NOT NULL, profile text NOT NULL, scale double precision NOT NULL,"
        " tenant_skew double precision NOT NULL, tables jsonb NOT NULL, versions jsonb NOT NULL,"
        " anchor timestamptz)"
    )
    if conn.execute("SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'anchor' "
                    "AND NOT attisdropped", (RUNS_TABLE,)).fetchone() is None:  # written before runs kept it
        conn.execute(f"ALTER TABLE {RUNS_TABLE} ADD COLUMN anchor timestamptz")


def _runs(conn, limit: int) -> list[SeedRun]:
    """The most recent seed runs, newest first (empty when none was ever recorded)."""
    if conn.execute("SELECT to_regclass(%s)", (RUNS_TABLE,)).fetchone()[0] is None:
        return []
    # the anchor through to_jsonb: a table written before runs recorded it has no such column (None then)
    columns = ", ".join(f"r.{f.name}" for f in fields(SeedRun) if f.name != "anchor")
    rows = conn.execute(f"SELECT {columns}, (to_jsonb(r) ->> 'anchor')::timestamptz FROM {RUNS_TABLE} r "
                        "ORDER BY r.id DESC LIMIT %s", (limit,))
    # the anchor in UTC, as --anchor reads it back (the session's TimeZone may be another)
    return [SeedRun(*row[:-1], anchor=row[-1] and row[-1].astimezone(UTC)) for row in rows]


def _record(conn, result: SeedResult, started_at) -> None:
    import faker

    from dbkit import __version__

    tables = {t.table: {"rows": t.rows, "checksum": t.checksum} for t in result.tables}
    versions = {"dbkit": __version__, "faker": faker.VERSION}
    conn.execute(
        f"INSERT INTO {RUNS_TABLE} (started_at, seed, profile, scale, tenant_skew, tables, versions, anchor) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (started_at, result.seed, result.profile, result.scale, result.tenant_skew,
         json.dumps(tables), json.dumps(versions), result.anchor))


@dataclass(frozen=True)
class SeedRun:
    """One recorded run (a row of ``dbkit.seed_runs``): ``tables`` maps each table to what was written
    (rows, checksum, ...), ``versions`` the library versions that wrote it, ``anchor`` the "now" its
    time series end at (None for runs recorded before dbkit kept it)."""

    id: int
    started_at: datetime
    finished_at: datetime
    seed: int
    profile: str
    scale: float
    tenant_skew: float
    tables: dict[str, dict[str, Any]]
    versions: dict[str, Any]
    anchor: datetime | None = None

    @property
    def rows(self) -> int:
        """Rows written by the run, over all its tables."""
        return sum(t["rows"] for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SeedStatus:
    """``tables``: the current row count of every table a seeder fills (None: the table does not exist),
    in the registry's order; ``runs``: the most recent runs, newest first."""

    tables: dict[str, int | None]
    runs: tuple[SeedRun, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``dbkit seed status --json``."""
        return {"tables": dict(self.tables), "runs": [r.as_dict() for r in self.runs]}
