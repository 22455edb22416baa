"""Catalog reads of the seeding engine: which tables exist, their foreign keys, row counts,
column types and content checksums, and the role a statement runs as."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence

from dbkit.errors import ConfigError


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


def _set_role(conn, role: str | None) -> None:
    from psycopg import sql

    if role:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
    else:
        conn.execute("RESET ROLE")


@contextlib.contextmanager
def _session_role(conn, owner: str | None) -> Iterator[None]:
    """``SET ROLE owner`` (outside a transaction) for the block, then back to the current user."""
    from psycopg import sql

    current = conn.execute("SELECT current_user").fetchone()[0]
    if owner:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    try:
        yield
    finally:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(current)))


def _run_compression_policies(conn, schema: str, tables, owner: str | None) -> dict[str, int]:
    """Run the compression policy of each seeded hypertable that has one (``CALL run_job``, as the owner, outside
    a transaction): the chunks the policy would compress are compressed now.  ``{table: compressed chunks}``."""
    if not conn.execute("SELECT to_regclass('timescaledb_information.jobs') IS NOT NULL").fetchone()[0]:
        return {}
    jobs = conn.execute(
        "SELECT hypertable_name, job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_compression' "
        "AND hypertable_schema = %s AND hypertable_name = ANY(%s) ORDER BY 1, 2", (schema, list(tables))).fetchall()
    if not jobs:
        return {}
    with _session_role(conn, owner):
        for _, job in jobs:
            conn.execute("CALL run_job(%s)", (job,))
    return {table: conn.execute(
        "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_schema = %s AND hypertable_name = %s "
        "AND is_compressed", (schema, table)).fetchone()[0] for table, _ in jobs}


def _refresh_aggregates(conn, schema: str, tables, owner: str | None) -> list[str]:
    """Refresh the TimescaleDB continuous aggregates over the seeded tables (as their owner, outside any
    transaction, as TimescaleDB requires), so aggregates and the views over them show the seeded rows."""
    if not conn.execute(
            "SELECT to_regclass('timescaledb_information.continuous_aggregates') IS NOT NULL").fetchone()[0]:
        return []
    views = [r[0] for r in conn.execute(
        "SELECT format('%%I.%%I', view_schema, view_name) FROM timescaledb_information.continuous_aggregates "
        "WHERE hypertable_schema = %s AND hypertable_name = ANY(%s) ORDER BY 1", (schema, list(tables)))]
    if not views:
        return []
    with _session_role(conn, owner):
        for view in views:
            conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)", (view,))
    return views
