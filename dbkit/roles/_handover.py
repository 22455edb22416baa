"""Handing the application schema's objects over to the owner role: the one step of adopting a database that
another tool migrated (plain Alembic connected as the application's role, often a superuser, and so that role
owns every table; dbkit's migrations run as the owner role and cannot alter or grant on them).

``REASSIGN OWNED BY <role> TO <owner>`` does it in one statement, but PostgreSQL refuses it for the bootstrap
superuser (the image's ``POSTGRES_USER`` in docker-compose set-ups: "cannot reassign ownership of objects owned
by role … because they are required by the database system") and it moves every object of that role in the
database, whatever its schema.  :func:`plan` lists, in ``DBKIT_SCHEMA`` only, what the owner role does not own
(tables and partitions, views, materialized views, foreign tables, sequences not linked to a column, types,
functions and procedures, and the schema itself unless it is ``public``), leaving out what belongs to an
extension and Alembic's version table, as ``dbkit roles check`` does; :func:`hand_over` runs one
``ALTER … OWNER TO`` per object, in one transaction, under the roles lock.  Linked sequences and indexes follow
their table.
"""

from __future__ import annotations

from dataclasses import dataclass

from dbkit.errors import ConfigError, MissingDependency
from dbkit.roles._apply import ROLES_LOCK_KEY
from dbkit.roles._common import _connection, _ident
from dbkit.roles._model import model

_NOT_AN_EXTENSION_MEMBER = ("NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = {cls}::regclass "
                            "AND d.objid = {oid} AND d.deptype = 'e')")

# (kind, name as the statement needs it, display name, current owner), in the order they are handed over
_OBJECTS_SQL = f"""
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                      WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       format('%%I.%%I', n.nspname, c.relname), n.nspname || '.' || c.relname, pg_get_userbyid(c.relowner),
       CASE c.relkind WHEN 'r' THEN 1 WHEN 'p' THEN 1 WHEN 'f' THEN 1 WHEN 'S' THEN 2 WHEN 'v' THEN 3 ELSE 4 END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S') AND c.relowner <> %(owner)s::regrole
  AND NOT (n.nspname = %(vt_schema)s AND c.relname = %(vt_name)s)
  AND {_NOT_AN_EXTENSION_MEMBER.format(cls="'pg_class'", oid="c.oid")}
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
           AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%%I.%%I', n.nspname, t.typname),
       n.nspname || '.' || t.typname, pg_get_userbyid(t.typowner), 5
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = %(schema)s AND t.typowner <> %(owner)s::regrole
  AND (t.typtype IN ('e', 'd', 'r')
       OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
  AND {_NOT_AN_EXTENSION_MEMBER.format(cls="'pg_type'", oid="t.oid")}
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       format('%%I.%%I(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       format('%%s.%%s(%%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
       pg_get_userbyid(p.proowner), 6
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.prokind IN ('f', 'p', 'w') AND p.proowner <> %(owner)s::regrole
  AND {_NOT_AN_EXTENSION_MEMBER.format(cls="'pg_proc'", oid="p.oid")}
UNION ALL
SELECT 'SCHEMA', format('%%I', n.nspname), n.nspname, pg_get_userbyid(n.nspowner), 0
FROM pg_namespace n
WHERE n.nspname = %(schema)s AND n.nspname <> 'public' AND n.nspowner <> %(owner)s::regrole
ORDER BY 5, 3
"""


@dataclass(frozen=True)
class HandOver:
    """One object the owner role does not own yet, and the statement that gives it to it."""

    kind: str  # TABLE, VIEW, MATERIALIZED VIEW, FOREIGN TABLE, SEQUENCE, TYPE, DOMAIN, FUNCTION, PROCEDURE, SCHEMA
    name: str  # schema.name (functions with their argument types)
    previous_owner: str
    statement: str


def _owner(settings, conn) -> str:
    owner = model(settings).owner.name
    if conn.execute("SELECT to_regrole(%s)", (f'"{owner}"',)).fetchone()[0] is None:
        raise ConfigError("DBKIT_ROLE_OWNER", f"names {owner}, which does not exist on the server yet",
                          example="run `dbkit roles apply` (or `dbkit migrate`) first")
    return owner


def _plan(settings, conn) -> list[HandOver]:
    owner = _owner(settings, conn)
    params = {"schema": settings.schema, "owner": f'"{owner}"', "vt_schema": settings.version_table_schema,
              "vt_name": settings.version_table}
    to = _ident(owner)
    return [HandOver(kind, display, was, f"ALTER {kind} {target} OWNER TO {to}")
            for kind, target, display, was, _ in conn.execute(_OBJECTS_SQL, params).fetchall()]


def plan(settings, conn=None) -> list[HandOver]:
    """What :func:`hand_over` would change (nothing is changed)."""
    with _connection(settings, conn) as c:
        return _plan(settings, c)


def hand_over(settings, conn=None) -> list[HandOver]:
    """Give every object of ``DBKIT_SCHEMA`` that the owner role does not own to it; returns what was handed over
    (empty when nothing was to do).  One transaction: a refusal changes nothing and raises
    :class:`~dbkit.errors.MissingDependency` naming the object and the statement a superuser must run."""
    from psycopg import errors

    with _connection(settings, conn) as c, c.transaction():
        c.execute("SELECT pg_advisory_xact_lock(%s)", (ROLES_LOCK_KEY,))
        todo = _plan(settings, c)
        for item in todo:
            try:
                with c.transaction():
                    c.execute(item.statement)
            except errors.InsufficientPrivilege as exc:
                raise MissingDependency(
                    f"the connecting role may not give {item.kind.lower()} {item.name} (owned by "
                    f"{item.previous_owner}) to the owner role: {exc.diag.message_primary}",
                    hint=f"connect as a superuser, or have a DBA run: {item.statement}") from None
        return todo
