"""Before and after loading: emptying the tables (or resetting their identity sequences), and dropping
their plain indexes and foreign keys to rebuild them once the rows are in (``--defer-indexes``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from dbkit.errors import ConfigError
from dbkit.seed._catalog import _count, _qualified, _set_role
from dbkit.seed._runs import TableResult


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
        rel = f'"{schema}"."{table}"'
        # indexes that back no constraint: safe to drop and rebuild
        for name, definition in conn.execute(
                "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = "
                "i.indexrelid WHERE i.indrelid = to_regclass(%s) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                "WHERE c.conindid = i.indexrelid) ORDER BY 1", (rel,)).fetchall():
            conn.execute(sql.SQL("DROP INDEX {}.{}").format(sql.Identifier(schema), sql.Identifier(name)))
            rebuild.append(sql.SQL(definition))
        for name, definition in conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass(%s) "
                "AND contype = 'f' ORDER BY 1", (rel,)).fetchall():
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                _qualified(schema, table), sql.Identifier(name)))
            rebuild.append(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                _qualified(schema, table), sql.Identifier(name)) + sql.SQL(definition))
        if rebuild:
            deferred[table] = rebuild
    return deferred


def _rebuild(conn, tables: Sequence[TableResult], deferred: dict[str, list[Any]], owner: str | None,
             loader: str | None, maintenance_work_mem: str) -> None:
    """As the owner, run the statements :func:`_defer` returned, parents first (foreign keys validate
    against loaded parents); each table's ``index_seconds`` is the time its rebuild took."""
    _set_role(conn, owner)
    conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (maintenance_work_mem,))
    for tr in tables:
        if tr.table in deferred:
            t0 = time.perf_counter()
            for stmt in deferred[tr.table]:
                conn.execute(stmt)
            tr.index_seconds = round(time.perf_counter() - t0, 3)
    _set_role(conn, loader)
