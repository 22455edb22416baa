"""The seeding engine: plan, load with binary COPY, checksum, record.

One run is one transaction: a seeder that fails leaves every table as it was.
Tables are truncated and deferred indexes/foreign keys dropped and recreated as the owner role, rows are
loaded as the bypass role (BYPASSRLS, so policies do not hide or reject the
loader's rows), and the run is recorded in ``dbkit.seed_runs``.

The pieces live in private modules: :mod:`dbkit.seed._runs` (the result types and the run records),
:mod:`dbkit.seed._catalog` (catalog reads), :mod:`dbkit.seed._prepare` (emptying the tables, deferring
and rebuilding indexes and foreign keys) and :mod:`dbkit.seed._load` (the COPY loading).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from typing import Any

from dbkit import _db as db
from dbkit import _target as target
from dbkit.errors import ConfigError, Refused
from dbkit.seed._catalog import (
    _catalog_deps,
    _checksum,
    _count,
    _existing_tables,
    _refresh_aggregates,
    _run_compression_policies,
    _set_role,
)
from dbkit.seed._context import FakerPools, default_anchor, format_anchor, parse_anchor
from dbkit.seed._load import Progress, _apply_sql_file, _load, _register_types
from dbkit.seed._load import SeederFailed as SeederFailed
from dbkit.seed._prepare import _defer, _prepare, _rebuild
from dbkit.seed._registry import PROFILES, Registry, dependency_order, load_seeders
from dbkit.seed._runs import SeedResult, SeedRun, SeedStatus, TableResult, _ensure_runs_table, _record, _runs

__all__ = ["SeedResult", "SeedRun", "SeedStatus", "run", "status"]


# --------------------------------------------------------------------- public verbs

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
    anchor: str | date | datetime | None = None,
    compress: bool = False,
) -> SeedResult:
    """Seed the tables of ``seeds/`` (or ``only`` those) with deterministic fake data.

    ``anchor`` is the "now" time series end at (``--anchor``; default DBKIT_SEED_ANCHOR, else the
    start of the current day in UTC): the same seed and anchor write the same rows.  ``compress``
    runs the compression policy of each seeded hypertable that has one (``--compress``), so the chunks it
    would compress are compressed, as in a database that has been running for a while.
    """
    if profile not in PROFILES:
        raise ConfigError("--profile", f"is {profile!r}, not one of {', '.join(PROFILES)}", example="small")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError("--scale", f"is {scale!r}, must be a finite number above 0", example="--scale 0.5")
    if not (isinstance(tenant_skew, (int, float)) and math.isfinite(tenant_skew) and tenant_skew >= 0):
        raise ConfigError("--tenant-skew", f"is {tenant_skew!r}, must be a finite number, 0 or more",
                          example="--tenant-skew 1.0")
    fixed, when = _anchor(settings, anchor)
    if settings.env == "prod" and not (allow_prod and yes):
        raise Refused("seeding is refused when DBKIT_ENV=prod: it writes fake data",
                      hint="pass --allow-prod --yes if this really is what you want")
    registry = load_seeders(settings.project_dir / "seeds")
    schema = settings.schema
    result = SeedResult("planned", seed, profile, scale, tenant_skew, anchor=when)
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
        sql_files = sorted((settings.project_dir / "seeds").glob("*.sql"))
        result.sql_files = [p.name for p in sql_files]
        result.tables = [TableResult(t, registry[t].count(profile, scale), seeder=registry[t].name) for t in order]
        if dry_run:
            result.message = f"dry run: nothing was written (time series would end at {format_anchor(when)})"
            return result

        current = {t: _count(conn, schema, t) for t in order}
        if any(current.values()) and not truncate:
            with _as(conn, owner):  # dbkit's bookkeeping belongs to the owner role
                last = next(iter(_runs(conn, 1)), None)
            same = last is not None and (last.seed, last.profile, last.scale, last.tenant_skew) == (
                seed, profile, scale, tenant_skew) and all(
                last.tables.get(t, {}).get("rows") == current[t] for t in order)
            # a fixed anchor must match; the default one (today) accepts the rows of an earlier day
            if same and fixed and last.anchor != when:
                was = "no recorded anchor" if last.anchor is None else f"anchor {format_anchor(last.anchor)}"
                raise Refused(f"the tables hold seed {seed}'s rows for {was}, not for anchor {format_anchor(when)}",
                              hint="pass --truncate to reload them")
            if same:
                result.status = "noop"
                result.anchor = last.anchor
                result.tables = [TableResult(t, current[t], checksum=last.tables[t].get("checksum"),
                                             seeder=registry[t].name) for t in order]
                anchored = "" if last.anchor is None else f", anchor {format_anchor(last.anchor)}"
                result.message = (f"already seeded with seed {seed}, profile {profile}{anchored} at "
                                  f"{last.finished_at:%Y-%m-%d %H:%M:%S %Z}: nothing to do (--truncate reloads)")
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
                _load(conn, registry[tr.table], tr, schema, seed, profile, pools, tenant_skew, when, progress)
            if deferred:
                _rebuild(conn, result.tables, deferred, owner, loader, settings.seed_maintenance_work_mem)
            for tr in result.tables:
                tr.checksum = _checksum(conn, schema, tr.table)
            _ensure_runs_table(conn, owner)
            _record(conn, result, wall_start)
        if compress:
            for table, chunks in _run_compression_policies(conn, schema, order, owner).items():
                next(t for t in result.tables if t.table == table).compressed_chunks = chunks
        _refresh_aggregates(conn, schema, order, owner)
        result.status = "seeded"
        result.seconds = round(time.perf_counter() - started, 3)
        result.message = (f"seeded {sum(t.rows for t in result.tables)} rows into {len(order)} table(s); time series "
                          f"end at {format_anchor(when)} (--anchor {format_anchor(when)} writes the same rows again)")
    return result


def _anchor(settings, anchor: str | date | datetime | None) -> tuple[bool, datetime]:
    """(fixed, the anchor): ``anchor`` (the --anchor option), else DBKIT_SEED_ANCHOR, else the start of today
    (UTC; not fixed)."""
    if anchor is not None:
        return True, parse_anchor(anchor, variable="--anchor")
    if settings.seed_anchor is not None:
        return True, parse_anchor(settings.seed_anchor, variable="DBKIT_SEED_ANCHOR")
    return False, default_anchor()


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
        bypass = settings.role_bypass[0] if settings.role_bypass else None
        loader = bypass if use_roles and bypass and db.role_exists(conn, bypass) else None
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


def _select(registry: Registry, only: Sequence[str] | None) -> list[str]:
    if only is None:
        return list(registry.seeders)
    example = f"--only {','.join(list(registry.seeders)[:2])}"
    if not only:  # `--only ""` from an empty script variable must not mean "every table"
        raise ConfigError("--only", "names no table", example=example)
    unknown = [t for t in only if t not in registry]
    if unknown:
        raise ConfigError("--only", f"names {', '.join(unknown)}, which no seeder in seeds/ fills", example=example)
    return list(dict.fromkeys(only))


def status(settings, *, limit: int = 10) -> SeedStatus:
    """Recent seed runs and the current row count of every table a seeder fills."""
    registry = load_seeders(settings.project_dir / "seeds")
    with _connect(settings) as (conn, owner, _):
        existing = _existing_tables(conn, settings.schema)
        counts = {t: (_count(conn, settings.schema, t) if t in existing else None) for t in registry.seeders}
        with _as(conn, owner):
            runs = _runs(conn, limit)
    return SeedStatus(counts, tuple(runs))
