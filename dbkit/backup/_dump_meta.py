"""What a backup's manifest records about the database (:mod:`dbkit.backup._dump`): its roles, extensions,
revision and size, and each table's rows (hypertables through the hypertable, compressed rows included;
continuous aggregates' materialized rows), and whether the server's TimescaleDB could restore its dump."""

from __future__ import annotations

import contextlib
from typing import Any

from dbkit import _db as db
from dbkit.backup._common import BackupFailed

# Roles a dump refers to: owners of the database's schemas, tables, sequences, views and functions,
# and grantees in their ACLs (PUBLIC excluded); the database's owner, its ACL's grantees and the roles with
# settings in it (ALTER ROLE ... IN DATABASE); with TimescaleDB, the owners of jobs and policies (restored
# by name as rows of its catalog).  They must exist before pg_restore runs.
_ROLES_SQL = """
WITH objs AS (
  SELECT datdba AS owner, datacl AS acl FROM pg_database WHERE datname = current_database()
  UNION ALL
  SELECT setrole, NULL FROM pg_db_role_setting
   WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) AND setrole <> 0
  UNION ALL
  SELECT nspowner AS owner, nspacl AS acl FROM pg_namespace
   WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND nspname NOT LIKE '\\_timescaledb%'
     AND nspname NOT LIKE 'pg\\_temp%' AND nspname NOT LIKE 'pg\\_toast\\_temp%'
  UNION ALL
  SELECT c.relowner, c.relacl FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') AND n.nspname NOT LIKE '\\_timescaledb%'
     AND n.nspname NOT LIKE 'pg\\_temp%'{jobs}
)
SELECT DISTINCT r.rolname FROM (
  SELECT owner AS oid FROM objs
  UNION SELECT (aclexplode(acl)).grantee FROM objs WHERE acl IS NOT NULL
) x JOIN pg_roles r ON r.oid = x.oid ORDER BY 1
"""


#: tables (with their chunks/partitions) up to this size are counted exactly at backup time
EXACT_COUNT_MAX_BYTES = 64 << 20


_TABLES_SQL = """
WITH RECURSIVE top AS (
  SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND (n.nspname NOT LIKE '\\_timescaledb%' {aggregate})
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
     AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.deptype = 'e')
     {not_chunk}
), tree(root, rel) AS (
  SELECT oid, oid FROM top
  UNION ALL SELECT t.root, i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.rel
)
SELECT top.oid, top.nspname, top.relname,
       (SELECT coalesce(sum(pg_relation_size(rel)), 0) FROM tree WHERE root = top.oid)::bigint,
       (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0) FROM tree JOIN pg_class c ON c.oid = tree.rel
         WHERE root = top.oid)::bigint,
       {hypertable}
  FROM top ORDER BY 2, 3
"""


# a continuous aggregate's materialization hypertable (in TimescaleDB's own schema): its rows are counted
# like a table's, under its own name (the restored catalog has the same names)
_MATERIALIZATION = ("EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_agg a "
                    "JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id WHERE")

_COMPRESSED_SIZE_SQL = """
SELECT coalesce(sum(pg_table_size(format('%%I.%%I', cc.schema_name, cc.table_name)::regclass)), 0)::bigint
  FROM _timescaledb_catalog.hypertable h JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = h.id
  JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
 WHERE h.schema_name = %s AND h.table_name = %s AND NOT cc.dropped
"""


def _tables(conn, timescaledb: bool, snapshot: str | None) -> list[dict[str, Any]]:
    """Every dumped table with its row count: exact (in ``snapshot``, pg_dump's) when its main fork
    (chunks and partitions included; compressed chunks with their TOAST, where their data is) is at most
    EXACT_COUNT_MAX_BYTES, else an estimate (reltuples of the table and its children, TimescaleDB's
    approximate_row_count for hypertables: compressed rows included) and whether it has any row at all
    (EXISTS).  Hypertables are counted through the hypertable (compressed rows included), continuous
    aggregates through their materialization hypertables (named as such).

    Each count runs in a short transaction of its own that imports the snapshot: its locks are
    released at once, so backing up a database with thousands of chunks needs no more lock slots than
    pg_dump itself.  ``conn`` is in autocommit mode with row security off (like pg_dump: every row is
    counted, or the count fails where the dump would).
    """
    from psycopg import sql

    if timescaledb:
        query = _TABLES_SQL.format(
            not_chunk="AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.chunk ch "
                      "WHERE ch.schema_name = n.nspname AND ch.table_name = c.relname)",
            aggregate=f"OR {_MATERIALIZATION} h.schema_name = n.nspname AND h.table_name = c.relname)",
            hypertable="EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h "
                       "WHERE h.schema_name = top.nspname AND h.table_name = top.relname)")
    else:
        query = _TABLES_SQL.format(not_chunk="", aggregate="", hypertable="false")

    def one(statement, *params, in_snapshot: bool = True):
        """A value, or None when the table cannot be read (pg_dump will say why)."""
        try:
            if in_snapshot and snapshot:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            value = conn.execute(statement, params or None).fetchone()[0]
            if in_snapshot and snapshot:
                conn.execute("COMMIT")
            return value
        except Exception:  # noqa: BLE001 - psycopg errors (privileges, row security)
            if in_snapshot and snapshot:
                with contextlib.suppress(Exception):
                    conn.execute("ROLLBACK")
            return None

    tables = []
    for oid, schema, name, size, reltuples, is_hypertable in conn.execute(query).fetchall():
        ident = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        if is_hypertable:
            size += one(_COMPRESSED_SIZE_SQL, schema, name, in_snapshot=False) or 0
        item: dict[str, Any] = {"schema": schema, "name": name, "rows_estimate": None}
        if size <= EXACT_COUNT_MAX_BYTES:
            rows = one(sql.SQL("SELECT count(*) FROM {}").format(ident))
            if rows is not None:
                item.update(rows=int(rows), rows_estimate=int(rows), has_rows=rows > 0)
                tables.append(item)
                continue
        estimate = one("SELECT approximate_row_count(%s::regclass)", oid, in_snapshot=False) if is_hypertable else None
        estimate = max(int(estimate if estimate is not None else reltuples), 0)
        has_rows = one(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(ident))
        item.update(rows_estimate=estimate if estimate or not has_rows else None)
        if has_rows is not None:
            item["has_rows"] = bool(has_rows)
        tables.append(item)
    return tables


# TimescaleDB 2.19 stores a compressed batch whose column is entirely NULL as a "NULL" block (two bytes on
# disk) that its pg_dump output has but its restore cannot read back ("function ... returned NULL":
# timescale/timescaledb#8893, fixed by #8153): per compressed chunk, its compressed columns
_NULL_BLOCKS_SQL = """
SELECT format('%I.%I', h.schema_name, h.table_name), format('%I.%I', cc.schema_name, cc.table_name),
       min(a.atttypid::regtype::text), string_agg(format('pg_column_size(%I) = 2', a.attname), ' OR ')
  FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
  JOIN _timescaledb_catalog.chunk cc ON cc.id = c.compressed_chunk_id
  JOIN pg_attribute a ON a.attrelid = format('%I.%I', cc.schema_name, cc.table_name)::regclass
 WHERE NOT cc.dropped AND a.attnum > 0 AND NOT a.attisdropped AND a.atttypid::regtype::text LIKE '%compressed_data'
 GROUP BY 1, 2 ORDER BY 1, 2
"""


def _check_restorable(conn, version: str) -> None:
    """Refuse (before anything is stored) a backup TimescaleDB could not restore: compressed batches with a
    column that is entirely NULL, where this TimescaleDB cannot read them back (probed, not guessed)."""
    chunks = conn.execute(_NULL_BLOCKS_SQL).fetchall()
    with contextlib.suppress(Exception):  # psycopg: TimescaleDB 2.19's "function ... returned NULL"
        if not chunks or conn.execute(f"SELECT 'Bg=='::{chunks[0][2]} IS NOT NULL").fetchone()[0]:
            return  # no compressed chunk, or a TimescaleDB that reads the block as pg_dump writes it
    affected: list[str] = []
    for hypertable, chunk, _, has_null_block in chunks:
        with contextlib.suppress(Exception):  # a chunk this role may not read: pg_dump will say why
            if hypertable not in affected and conn.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {chunk} WHERE {has_null_block})").fetchone()[0]:
                affected.append(hypertable)
    if affected:
        raise BackupFailed(f"TimescaleDB {version} cannot restore the compressed chunks of {', '.join(affected)}: "
                           "batches with a column that is entirely NULL, which its dump has but its restore cannot "
                           "read back (timescale/timescaledb#8893); nothing was stored and earlier backups are "
                           "untouched",
                           hint="upgrade TimescaleDB to a release with its fix (timescale/timescaledb#8153); until "
                                "then decompress those chunks (decompress_chunk) and pause their compression policy")


def _metadata(conn, snapshot: str | None, settings) -> dict[str, Any]:
    """What the manifest records about the database; ``conn`` in autocommit mode (see :func:`_tables`)."""
    conn.execute("SET row_security = off")
    row = conn.execute("SELECT current_database(), current_setting('server_version'), "
                       "current_setting('server_version_num')::int").fetchone()
    extensions = dict(conn.execute("SELECT extname, extversion FROM pg_extension ORDER BY 1").fetchall())
    revision = None
    version_table = db.version_table(settings)
    readable = conn.execute("SELECT has_schema_privilege(n.oid, 'USAGE') FROM pg_namespace n "
                            "WHERE n.nspname = %s", (version_table.split(".", 1)[0],)).fetchone()
    if readable and readable[0]:
        revision = ",".join(db.applied_revisions(conn, version_table) or []) or None
    tables = _tables(conn, "timescaledb" in extensions, snapshot)
    size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
    jobs = "\n  UNION ALL SELECT owner::oid, NULL FROM _timescaledb_config.bgw_job WHERE id >= 1000"
    roles = [r[0] for r in conn.execute(_ROLES_SQL.format(jobs=jobs if "timescaledb" in extensions else ""))]
    return {"roles": roles, "database": row[0], "server_version": row[1], "server_version_num": row[2],
            "extensions": extensions, "alembic_revision": revision, "tables": tables, "size": size}
