"""Close the paths around row-level security that PostgreSQL and TimescaleDB leave open.

RLS filters rows only when a query names the protected table.  Two paths reach the same
rows without naming it, and :func:`harden` closes both, idempotently:

1. **TimescaleDB chunks.**  Each chunk is an ordinary table that inherits from the
   hypertable; TimescaleDB copies the hypertable's privileges onto every chunk it creates
   (``ts_copy_relation_acl``) but not its RLS flags (timescale/timescaledb#7830), and puts
   chunks in ``_timescaledb_internal``, a schema every role may use (TimescaleDB itself needs
   that USAGE: revoking it breaks every query of the role).  So a role granted SELECT on the
   hypertable could read every tenant's rows from ``_timescaledb_internal._hyper_1_1_chunk``.
   The fix that also holds for chunks created later: the hypertable's *associated schema*
   (where TimescaleDB creates its chunks) becomes :data:`CHUNK_SCHEMA`, a schema owned by the
   owner role on which no other role has USAGE, and the existing chunks move there
   (``ALTER TABLE … SET SCHEMA``, which TimescaleDB tracks).  Queries through the hypertable
   do not look chunks up by name, so they keep working unchanged.
2. **Planner statistics.**  ``pg_stats`` (and ``pg_stats_ext``/``pg_stats_ext_exprs``) show the
   most common values and histograms of every column the caller may SELECT, hiding only
   tables with RLS active: for a chunk they would show other tenants' values.  ``SELECT`` on
   these views is revoked from PUBLIC in the database and granted back to the owner and bypass
   roles.  The planner reads ``pg_statistic`` itself and is not affected.

Both steps run only when the database has a table with RLS enabled, so a maintenance
database or one without RLS is left alone.  A step the connecting role may not do (it needs a
superuser: the TimescaleDB catalog and the system views are owned by one) is skipped with a
warning that names the statement; ``dbkit rls audit`` keeps reporting the path until it is done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dbkit import _db as db
from dbkit.roles._sql import quote_ident as _quote

#: Where the chunks of RLS-protected hypertables live: owned by the owner role, USAGE for no one else.
CHUNK_SCHEMA = "_dbkit_chunks"
#: System views that expose column statistics to any role with SELECT on the column.
STATS_VIEWS = ("pg_catalog.pg_stats", "pg_catalog.pg_stats_ext", "pg_catalog.pg_stats_ext_exprs")


@dataclass
class HardenResult:
    """What :func:`harden` changed (``actions``) and what it could not do (``warnings``)."""

    actions: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_HAS_RLS_SQL = """
SELECT EXISTS (SELECT FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relrowsecurity AND c.relkind IN ('r', 'p')
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema'))
"""

# Hypertables whose main table has RLS enabled and whose chunks are (or would be created) outside CHUNK_SCHEMA.
_EXPOSED_HYPERTABLES_SQL = """
SELECT h.id, format('%%I.%%I', h.schema_name, h.table_name), h.associated_schema_name, pg_get_userbyid(c.relowner),
       ARRAY(SELECT format('%%I.%%I', ch.schema_name, ch.table_name) FROM _timescaledb_catalog.chunk ch
             WHERE ch.hypertable_id = h.id AND NOT ch.dropped AND ch.schema_name <> %(schema)s ORDER BY ch.id),
       (SELECT d.interval_length FROM _timescaledb_catalog.dimension d
        WHERE d.hypertable_id = h.id AND d.interval_length IS NOT NULL ORDER BY d.id LIMIT 1)
FROM _timescaledb_catalog.hypertable h
JOIN pg_namespace n ON n.nspname = h.schema_name
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.table_name
WHERE c.relrowsecurity
  AND (h.associated_schema_name <> %(schema)s
       OR EXISTS (SELECT FROM _timescaledb_catalog.chunk ch
                  WHERE ch.hypertable_id = h.id AND NOT ch.dropped AND ch.schema_name <> %(schema)s))
ORDER BY h.id
"""

_PUBLIC_CAN_READ_STATS_SQL = """
SELECT EXISTS (SELECT FROM pg_class c, aclexplode(COALESCE(c.relacl, acldefault('r', c.relowner))) a
               WHERE c.oid = ANY(%s::regclass[]) AND a.grantee = 0 AND a.privilege_type = 'SELECT')
"""


class _NotDone(Exception):
    """The statements ran but did not do it (REVOKE by a non-owner only warns)."""


def _step(conn, result: HardenResult, what: str, statements: list[str], done=None) -> bool:
    """Run ``statements`` in a savepoint; a refusal for lack of privilege becomes a warning.

    ``done(conn)``, when given, must be true afterwards (else the savepoint rolls back: a warning).
    """
    from psycopg import errors

    try:
        with conn.transaction():
            for stmt in statements:
                conn.execute(stmt)
            if done is not None and not done(conn):
                raise _NotDone("the connecting role lacks the privilege")
    except (errors.InsufficientPrivilege, _NotDone) as exc:
        reason = exc.diag.message_primary if isinstance(exc, errors.Error) else str(exc)
        shown = "; ".join(statements)
        if len(shown) > 300:
            shown = shown[:297] + "..."
        result.warnings.append(f"could not {what} ({reason}): a superuser must run: {shown}")
        return False
    result.actions.append(what)
    return True


def timescaledb_installed(conn) -> bool:
    return conn.execute("SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL").fetchone()[0]


def _harden_chunks(conn, settings, result: HardenResult) -> None:
    owner = settings.role_owner
    if not db.role_exists(conn, owner):
        return
    rows = conn.execute(_EXPOSED_HYPERTABLES_SQL, {"schema": CHUNK_SCHEMA}).fetchall()
    if not rows:
        return
    schema = _quote(CHUNK_SCHEMA)
    created = _step(conn, result, f"create schema {CHUNK_SCHEMA} for the chunks of RLS-protected hypertables", [
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {_quote(owner)}",
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        f"COMMENT ON SCHEMA {schema} IS 'dbkit: chunks of RLS-protected hypertables; no application role may "
        "use this schema (see dbkit.rls._isolation)'",
    ])
    if not created:
        return
    schema_owner = conn.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
                                (CHUNK_SCHEMA,)).fetchone()[0]
    for ht_id, hypertable, associated, ht_owner, chunks, interval in rows:
        statements = []
        if ht_owner != schema_owner:  # TimescaleDB creates chunks there as the hypertable's owner
            statements.append(f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {_quote(ht_owner)}")
        if associated != CHUNK_SCHEMA:
            statements.append(
                f"UPDATE _timescaledb_catalog.hypertable SET associated_schema_name = '{CHUNK_SCHEMA}' "
                f"WHERE id = {int(ht_id)}")
            if interval is not None:  # the same interval: TimescaleDB's own way to invalidate its hypertable cache
                statements.append(f"SELECT set_chunk_time_interval('{hypertable.replace(chr(39), chr(39) * 2)}'"
                                  f"::regclass, {int(interval)}::bigint)")
        statements += [f"ALTER TABLE {chunk} SET SCHEMA {schema}" for chunk in chunks]
        moved = f" and move its {len(chunks)} chunks" if chunks else ""
        _step(conn, result, f"create the chunks of {hypertable} in {CHUNK_SCHEMA}{moved}", statements)


def _harden_statistics(conn, settings, result: HardenResult) -> None:
    views = [v for v in STATS_VIEWS if conn.execute("SELECT to_regclass(%s)", (v,)).fetchone()[0]]
    if not views or not conn.execute(_PUBLIC_CAN_READ_STATS_SQL, (views,)).fetchone()[0]:
        return
    trusted = [r for r in (settings.role_owner, *settings.role_bypass) if db.role_exists(conn, r)]
    statements = [f"REVOKE SELECT ON {', '.join(views)} FROM PUBLIC"]
    if trusted:
        statements.append(f"GRANT SELECT ON {', '.join(views)} TO {', '.join(_quote(r) for r in trusted)}")
    _step(conn, result, "revoke the column statistics views (pg_stats) from PUBLIC", statements,
          done=lambda c: not c.execute(_PUBLIC_CAN_READ_STATS_SQL, (views,)).fetchone()[0])


def harden(conn, settings) -> HardenResult:
    """Close the chunk and statistics paths in the connection's database (see the module docstring).

    ``conn`` is a psycopg connection as a superuser or the database owner; each step runs in
    its own savepoint, so a refused step changes nothing and becomes a warning.  Idempotent:
    a second call finds nothing to do and returns an empty result.
    """
    result = HardenResult()
    if not conn.execute(_HAS_RLS_SQL).fetchone()[0]:
        return result
    if timescaledb_installed(conn):
        _harden_chunks(conn, settings, result)
    _harden_statistics(conn, settings, result)
    return result
