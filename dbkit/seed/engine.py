"""The seeding engine: plan, load with binary COPY, checksum, record.

One run is one transaction: a seeder that fails leaves every table as it was.
Tables are truncated and deferred indexes/foreign keys dropped and recreated as the owner role, rows are
loaded as the bypass role (BYPASSRLS, so policies do not hide or reject the
loader's rows), and the run is recorded in ``dbkit.seed_runs``.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from dbkit import db, target
from dbkit.errors import ConfigError, DbkitError, OperationFailed, Refused
from dbkit.seed.context import FakerPools, SeedContext
from dbkit.seed.registry import PROFILES, Registry, dependency_order, load_seeders

__all__ = ["RUNS_TABLE", "SeedResult", "SeedRun", "SeedStatus", "TableResult", "run", "status"]

RUNS_TABLE = "dbkit.seed_runs"
BATCH = 10_000
Progress = Callable[[str, int, int], None]


class SeederFailed(OperationFailed):
    """A seeder raised, or the data it produced could not be loaded."""


@dataclass
class TableResult:
    table: str
    rows: int
    seconds: float = 0.0
    rows_per_s: float = 0.0
    checksum: str | None = None
    index_seconds: float | None = None
    seeder: str = ""


@dataclass
class SeedResult:
    status: str  # seeded | noop | planned
    seed: int
    profile: str
    scale: float
    tenant_skew: float
    tables: list[TableResult] = field(default_factory=list)
    sql_files: list[str] = field(default_factory=list)
    message: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_rows"] = sum(t.rows for t in self.tables)
        return d


# --------------------------------------------------------------------- catalog helpers

def _qualified(schema: str, table: str):
    from psycopg import sql

    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))


def _existing_tables(conn, schema: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')", (schema,))}


def _catalog_deps(conn, schema: str) -> dict[str, set[str]]:
    """table -> tables it references with a foreign key (same schema)."""
    deps: dict[str, set[str]] = {}
    for child, parent in conn.execute(
        "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c "
        "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE c.contype = 'f' AND n.nspname = %s", (schema,)):
        child_name, parent_name = child.split(".")[-1].strip('"'), parent.split(".")[-1].strip('"')
        if child_name != parent_name:
            deps.setdefault(child_name, set()).add(parent_name)
    return deps


def _count(conn, schema: str, table: str) -> int:
    from psycopg import sql

    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_qualified(schema, table))).fetchone()[0]


def _column_oids(conn, schema: str, table: str, columns: Sequence[str]) -> list[int]:
    rows = dict(conn.execute(
        "SELECT a.attname, a.atttypid::int FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
        "AND a.attnum > 0 AND NOT a.attisdropped", (f'"{schema}"."{table}"',)).fetchall())
    missing = [c for c in columns if c not in rows]
    if missing:
        raise ConfigError(f"seeder for {table}", f"names column(s) {', '.join(missing)} that {schema}.{table} "
                          "does not have", example=f"columns=({', '.join(list(rows)[:3])}, ...)")
    return [rows[c] for c in columns]


def _checksum(conn, schema: str, table: str) -> str:
    """Order-independent digest of a table's contents (row count + sum of row-text hashes)."""
    from psycopg import sql

    n, total = conn.execute(sql.SQL(
        "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) FROM {} t"
    ).format(_qualified(schema, table))).fetchone()
    return hashlib.sha256(f"{n}:{total}".encode()).hexdigest()[:16]


def _plain_indexes(conn, schema: str, table: str) -> list[tuple[str, str]]:
    """(name, definition) of indexes that back no constraint: safe to drop and rebuild."""
    return conn.execute(
        "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "JOIN pg_class ic ON ic.oid = i.indexrelid "
        "WHERE i.indrelid = to_regclass(%s) AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid) ORDER BY 1",
        (f'"{schema}"."{table}"',)).fetchall()


def _set_role(conn, role: str | None) -> None:
    from psycopg import sql

    if role:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    else:
        conn.execute("RESET ROLE")


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
        " tenant_skew double precision NOT NULL, tables jsonb NOT NULL, versions jsonb NOT NULL)"
    )


_RUN_COLUMNS = ("id", "started_at", "finished_at", "seed", "profile", "scale", "tenant_skew", "tables", "versions")


def _runs(conn, limit: int) -> list[dict]:
    """The most recent seed runs, newest first (empty when none was ever recorded)."""
    if conn.execute("SELECT to_regclass(%s)", (RUNS_TABLE,)).fetchone()[0] is None:
        return []
    rows = conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM {RUNS_TABLE} ORDER BY id DESC LIMIT %s", (limit,))
    return [dict(zip(_RUN_COLUMNS, row, strict=True)) for row in rows]


def _last_run(conn) -> dict | None:
    runs = _runs(conn, 1)
    return runs[0] if runs else None


# --------------------------------------------------------------------- public verbs

def _registry(settings) -> Registry:
    return load_seeders(settings.project_dir / "seeds")


def run(
    settings,
    *,
    profile: str = "small",
    scale: float = 1.0,
    seed: int = 0,
    only: Sequence[str] | None = None,
    truncate: bool = False,
    dry_run: bool = False,
    defer_indexes: bool = False,
    tenant_skew: float = 0.0,
    allow_prod: bool = False,
    yes: bool = False,
    progress: Progress | None = None,
) -> SeedResult:
    """Seed the tables of ``seeds/`` (or ``only`` those) with deterministic fake data."""
    if profile not in PROFILES:
        raise ConfigError("--profile", f"is {profile!r}, not one of {', '.join(PROFILES)}", example="small")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError("--scale", f"is {scale!r}, must be a finite number above 0", example="--scale 0.5")
    if not (isinstance(tenant_skew, (int, float)) and math.isfinite(tenant_skew) and tenant_skew >= 0):
        raise ConfigError("--tenant-skew", f"is {tenant_skew!r}, must be a finite number, 0 or more",
                          example="--tenant-skew 1.0")
    if settings.env == "prod" and not (allow_prod and yes):
        raise Refused("seeding is refused when DBKIT_ENV=prod: it writes fake data",
                      hint="pass --allow-prod --yes if this really is what you want")
    registry = _registry(settings)
    schema = settings.schema
    result = SeedResult("planned", seed, profile, scale, tenant_skew)
    started = time.perf_counter()
    with _connect(settings) as (conn, owner, loader):
        _register_types(conn)
        existing = _existing_tables(conn, schema)
        selected = _select(registry, only)
        for table in selected:
            if table not in existing:
                raise ConfigError(f"seeder for {table}", f"targets {schema}.{table}, which does not exist",
                                  example="run `dbkit migrate` first")
        deps = _catalog_deps(conn, schema)
        graph = {t: set(registry[t].depends_on) | deps.get(t, set()) for t in registry.seeders}
        order = [t for t in dependency_order(graph) if t in selected]
        for table in order:  # a parent outside --only must already hold rows
            for parent in sorted(graph[table] - set(selected)):
                if parent in existing and _count(conn, schema, parent) == 0:
                    raise ConfigError("--only", f"includes {table}, which depends on {parent}, and {parent} is empty",
                                      example=f"--only {parent},{table} (or seed {parent} first)")
        counts = {t: registry[t].count(profile, scale) for t in order}
        sql_files = sorted((settings.project_dir / "seeds").glob("*.sql"))
        result.sql_files = [p.name for p in sql_files]
        result.tables = [TableResult(t, counts[t], seeder=registry[t].name) for t in order]
        if dry_run:
            result.message = "dry run: nothing was written"
            return result

        current = {t: _count(conn, schema, t) for t in order}
        if any(current.values()) and not truncate:
            with _as(conn, owner):  # dbkit's bookkeeping belongs to the owner role
                last = _last_run(conn)
            same = last is not None and (last["seed"], last["profile"], last["scale"], last["tenant_skew"]) == (
                seed, profile, scale, tenant_skew)
            if same and all(last["tables"].get(t, {}).get("rows") == current[t] for t in order):
                result.status = "noop"
                result.tables = [TableResult(t, current[t], checksum=last["tables"][t].get("checksum"),
                                             seeder=registry[t].name) for t in order]
                result.message = (f"already seeded with seed {seed}, profile {profile} at "
                                  f"{last['finished_at']:%Y-%m-%d %H:%M:%S %Z}: nothing to do (--truncate reloads)")
                return result
            filled = ", ".join(f"{schema}.{t} ({n} rows)" for t, n in current.items() if n)
            raise Refused(f"tables already hold rows that this seed did not write: {filled}",
                          hint="pass --truncate to replace them")

        wall_start = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        with conn.transaction():
            _prepare(conn, schema, order, owner, loader, truncate, deps)
            deferred = _defer(conn, schema, order, owner) if defer_indexes else {}
            _set_role(conn, loader)
            for path in sql_files:
                _apply_sql_file(conn, path)
            pools = FakerPools(seed)
            for tr in result.tables:
                _load(conn, registry[tr.table], tr, schema, seed, profile, pools, tenant_skew, progress)
            if deferred:
                _set_role(conn, owner)
                conn.execute("SELECT set_config('maintenance_work_mem', %s, true)",
                             (settings.seed_maintenance_work_mem,))
                for tr in result.tables:  # parents first: foreign keys validate against loaded parents
                    if tr.table in deferred:
                        t0 = time.perf_counter()
                        for stmt in deferred[tr.table]:
                            conn.execute(stmt)
                        tr.index_seconds = round(time.perf_counter() - t0, 3)
                _set_role(conn, loader)
            for tr in result.tables:
                tr.checksum = _checksum(conn, schema, tr.table)
            _ensure_runs_table(conn, owner)
            _record(conn, result, wall_start)
        result.status = "seeded"
        result.seconds = round(time.perf_counter() - started, 3)
        result.message = f"seeded {sum(t.rows for t in result.tables)} rows into {len(order)} table(s)"
    return result


@contextlib.contextmanager
def _connect(settings) -> Iterator[tuple[Any, str | None, str | None]]:
    """An autocommit connection reading as the loader (bypass) role; yields (conn, owner, loader).

    The roles are used when they exist (and DBKIT_MIGRATE_SET_ROLE is on): the owner
    truncates and rebuilds indexes, the bypass role reads and loads, so RLS neither
    hides rows from counts nor rejects the loader's rows.
    """
    from psycopg import sql

    url = target.resolve_url(settings, direct=True)
    with db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout) as conn:
        use_roles = settings.migrate_set_role
        owner = settings.role_owner if use_roles and db.role_exists(conn, settings.role_owner) else None
        loader = settings.role_bypass if use_roles and db.role_exists(conn, settings.role_bypass) else None
        if loader:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(loader)))
        yield conn, owner, loader


@contextlib.contextmanager
def _as(conn, role: str | None) -> Iterator[None]:
    """A transaction running as ``role`` (SET LOCAL ROLE)."""
    with conn.transaction():
        if role:
            _set_role(conn, role)
        yield


def _register_types(conn) -> None:
    """pgvector's binary dumpers (numpy arrays -> vector) when the extension is there."""
    if conn.execute("SELECT 1 FROM pg_type WHERE typname = 'vector'").fetchone():
        from pgvector.psycopg import register_vector

        register_vector(conn)


def _select(registry: Registry, only: Sequence[str] | None) -> list[str]:
    if only is None:
        return list(registry.seeders)
    if not only:  # `--only ""` from an empty script variable must not mean "every table"
        raise ConfigError("--only", "names no table", example=f"--only {','.join(list(registry.seeders)[:2])}")
    unknown = [t for t in only if t not in registry]
    if unknown:
        raise ConfigError("--only", f"names {', '.join(unknown)}, which no seeder in seeds/ fills",
                          example=f"--only {','.join(list(registry.seeders)[:2])}")
    return list(dict.fromkeys(only))


def _referencing(deps: dict[str, set[str]], tables: Sequence[str]) -> set[str]:
    """Tables outside ``tables`` that reference them, directly or through others."""
    found: set[str] = set()
    frontier = set(tables)
    while frontier:
        nxt = {child for child, parents in deps.items() if parents & frontier} - found - set(tables)
        found |= nxt
        frontier = nxt
    return found


def _prepare(conn, schema: str, order: list[str], owner: str | None, loader: str | None, truncate: bool,
             deps: dict[str, set[str]]) -> None:
    """As the owner: empty the tables (TRUNCATE … RESTART IDENTITY) or reset their identity sequences.

    TRUNCATE must name every table that references the emptied ones; those outside the
    selection are included when they are empty, and named in an error when they are not.
    """
    from psycopg import sql

    _set_role(conn, loader)  # the owner is subject to FORCE RLS: count as the loader
    others = sorted(_referencing(deps, order)) if truncate else []
    filled = [f"{schema}.{t} ({n} rows)" for t in others if (n := _count(conn, schema, t))]
    _set_role(conn, owner)
    if truncate:
        if filled:
            raise ConfigError("--truncate", f"would leave dangling rows: {', '.join(filled)} "
                              f"reference(s) the selected tables", example="include them in --only, or omit --only")
        tables = sql.SQL(", ").join(_qualified(schema, t) for t in [*order, *others])
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(tables))
    for table in order:  # identity columns restart at 1 so ids are the same in every fresh database
        for (seq,) in conn.execute(
            "SELECT pg_get_serial_sequence(%s, a.attname) FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) "
            "AND a.attnum > 0 AND NOT a.attisdropped AND (a.attidentity <> '' OR pg_get_serial_sequence(%s, a.attname) "
            "IS NOT NULL)", (f'"{schema}"."{table}"', f'"{schema}"."{table}"', f'"{schema}"."{table}"')).fetchall():
            if seq:
                conn.execute("SELECT setval(%s, 1, false)", (seq,))


def _foreign_keys(conn, schema: str, table: str) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) "
        "AND contype = 'f' ORDER BY 1", (f'"{schema}"."{table}"',)).fetchall()


def _defer(conn, schema: str, order: list[str], owner: str | None) -> dict[str, list[Any]]:
    """Drop the tables' plain indexes and foreign keys; returns the statements that recreate them.

    Loading without them and rebuilding once after is how pgvector recommends loading (an
    HNSW graph built once), and a foreign key added back is validated in one pass instead
    of one trigger call per row.
    """
    from psycopg import sql

    _set_role(conn, owner)
    deferred: dict[str, list[Any]] = {}
    for table in order:
        rebuild = []
        for name, definition in _plain_indexes(conn, schema, table):
            conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
            rebuild.append(sql.SQL(definition))
        for name, definition in _foreign_keys(conn, schema, table):
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                _qualified(schema, table), sql.Identifier(name)))
            rebuild.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                _qualified(schema, table), sql.Identifier(name)) + sql.SQL(definition))
        if rebuild:
            deferred[table] = rebuild
    return deferred


def _apply_sql_file(conn, path: Path) -> None:
    try:
        with conn.transaction():
            conn.execute(path.read_text())
    except Exception as exc:
        primary = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
        raise SeederFailed(f"seeds/{path.name} failed: {primary}; nothing was written (the run was rolled back)") \
            from exc


def _load(conn, seeder, tr: TableResult, schema: str, seed: int, profile: str, pools: FakerPools,
          tenant_skew: float, progress: Progress | None) -> None:
    from psycopg import sql

    oids = _column_oids(conn, schema, seeder.table, seeder.columns)
    ctx = SeedContext(table=seeder.table, rows=tr.rows, seed=seed, profile=profile, conn=conn, schema=schema,
                      pools=pools, tenant_skew=tenant_skew)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        _qualified(schema, seeder.table), sql.SQL(", ").join(sql.Identifier(c) for c in seeder.columns))
    written = 0
    t0 = time.perf_counter()
    if progress:
        progress(seeder.table, 0, tr.rows)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # millions of short-lived row tuples: the cyclic GC only slows the loop down
    try:
        rows = iter(seeder.fn(ctx))
        first = next(rows, None)  # runs the seeder's set-up (parent reads) before COPY holds the connection
        ctx.copying = True
        with conn.cursor().copy(stmt) as copy:
            copy.set_types(oids)
            if first is not None:
                copy.write_row(first)
                written += 1
            for row in rows:
                copy.write_row(row)
                written += 1
                if progress and written % BATCH == 0:
                    progress(seeder.table, written, tr.rows)
    except DbkitError:
        raise
    except Exception as exc:
        primary = getattr(getattr(exc, "diag", None), "message_primary", None)
        detail = f"the database rejected the rows: {primary}" if primary else f"{type(exc).__name__}: {exc}"
        raise SeederFailed(
            f"seeder {seeder.name} for {schema}.{seeder.table} failed after {written} rows: {detail}; "
            "nothing was written (the run was rolled back)") from exc
    finally:
        if gc_was_enabled:
            gc.enable()
    tr.seconds = round(time.perf_counter() - t0, 3)
    tr.rows = written
    tr.rows_per_s = round(written / tr.seconds) if tr.seconds else 0.0
    if progress:
        progress(seeder.table, written, written)


def _record(conn, result: SeedResult, started_at) -> None:
    import faker

    from dbkit import __version__

    tables = {t.table: {"rows": t.rows, "checksum": t.checksum} for t in result.tables}
    versions = {"dbkit": __version__, "faker": faker.VERSION}
    conn.execute(
        f"INSERT INTO {RUNS_TABLE} (started_at, seed, profile, scale, tenant_skew, tables, versions) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (started_at, result.seed, result.profile, result.scale, result.tenant_skew,
         json.dumps(tables), json.dumps(versions)))


@dataclass(frozen=True)
class SeedRun:
    """One recorded run (a row of ``dbkit.seed_runs``): ``tables`` maps each table to what was written
    (rows, checksum, ...), ``versions`` the library versions that wrote it."""

    id: int
    started_at: datetime
    finished_at: datetime
    seed: int
    profile: str
    scale: float
    tenant_skew: float
    tables: dict[str, dict[str, Any]]
    versions: dict[str, Any]

    @property
    def rows(self) -> int:
        """Rows written by the run, over all its tables."""
        return sum(t["rows"] for t in self.tables.values())

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _RUN_COLUMNS}



@dataclass(frozen=True)
class SeedStatus:
    """``tables``: the current row count of every table a seeder fills (None: the table does not exist),
    in the registry's order; ``runs``: the most recent runs, newest first."""

    tables: dict[str, int | None]
    runs: tuple[SeedRun, ...]

    def as_dict(self) -> dict[str, Any]:
        """The JSON of ``dbkit seed status --json``."""
        return {"tables": dict(self.tables), "runs": [r.as_dict() for r in self.runs]}



def status(settings, *, limit: int = 10) -> SeedStatus:
    """Recent seed runs and the current row count of every table a seeder fills."""
    registry = _registry(settings)
    with _connect(settings) as (conn, owner, _):
        existing = _existing_tables(conn, settings.schema)
        counts = {t: (_count(conn, settings.schema, t) if t in existing else None) for t in registry.seeders}
        with _as(conn, owner):
            runs = _runs(conn, limit)
    return SeedStatus(counts, tuple(SeedRun(**run) for run in runs))
