"""Connections, and the catalog queries more than one feature asks: the one place dbkit opens a
PostgreSQL connection.  Which database to connect to is :mod:`dbkit._target`'s business.

psycopg 3 for everything dbkit does itself; SQLAlchemy engines (for Alembic)
are built from the same :class:`~dbkit._urls.DbUrl`.  psycopg is imported
inside the functions so that ``dbkit --help`` stays fast.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dbkit._urls import DbUrl, first_line
from dbkit.errors import DatabaseUnavailable, MissingDependency

if TYPE_CHECKING:  # pragma: no cover
    import psycopg

APPLICATION_NAME = "dbkit"


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier (always quoted: for statements dbkit writes)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a SQL string literal (standard_conforming_strings: only ``'`` doubles)."""
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: BaseException) -> str:
    # libpq: 'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused'
    return first_line(str(exc), type(exc).__name__).removeprefix("connection failed: ")


def connect(url: DbUrl, *, autocommit: bool = False, connect_timeout: int = 5) -> psycopg.Connection:
    """Open a psycopg connection or raise :class:`DatabaseUnavailable` (password masked)."""
    import psycopg

    try:
        return psycopg.connect(url.conninfo, autocommit=autocommit, connect_timeout=max(1, connect_timeout),
                               application_name=APPLICATION_NAME)
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(
            f"cannot connect to {url.masked}: {_first_line(exc)}",
            hint="is the server running and reachable, and are DATABASE_URL's user and password right?",
        ) from None


def timed_ping(conn: psycopg.Connection) -> float:
    """Median round-trip of ``SELECT 1`` (of three) in milliseconds."""
    samples = []
    for _ in range(3):
        t0 = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        samples.append((time.perf_counter() - t0) * 1000)
    return sorted(samples)[1]


def ensure_extensions(conn: psycopg.Connection, names: Iterable[str]) -> list[str]:
    """``CREATE EXTENSION IF NOT EXISTS`` each of ``names``; returns the ones created.

    Checks first, before any DDL, that the server has each extension (and that
    timescaledb is preloaded); raises :class:`MissingDependency` naming the
    extension and how to install or preload it.
    """
    from psycopg import errors, sql

    names = list(names)
    installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    available = {r[0] for r in conn.execute("SELECT name FROM pg_available_extensions")}
    for name in names:
        if name not in installed and name not in available:
            raise MissingDependency(f"the PostgreSQL extension '{name}' is not installed on the server",
                                    hint=install_hint(name))
    if "timescaledb" in names and not timescaledb_preloaded(conn):
        raise MissingDependency("the extension 'timescaledb' is not preloaded", hint=install_hint("timescaledb"))
    created = []
    for name in names:
        if name in installed:
            continue
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(sql.Identifier(name)))
        except errors.InsufficientPrivilege:
            raise MissingDependency(
                f"the connecting role may not create the extension '{name}' (it is not a trusted extension)",
                hint=f"create it once as a superuser (CREATE EXTENSION {name}) or have a DBA allow it",
            ) from None
        created.append(name)
    return created


def timescaledb_preloaded(conn: psycopg.Connection) -> bool:
    """Whether ``timescaledb`` is in the server's shared_preload_libraries."""
    row = conn.execute("SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'").fetchone()
    if row is None:  # not superuser nor pg_read_all_settings: ask the loader's own setting instead
        loaded = conn.execute("SELECT current_setting('timescaledb.bgw_launcher_poll_time', true)").fetchone()[0]
        return loaded is not None
    return "timescaledb" in [v.strip().strip('"') for v in row[0].split(",")]


INSTALL_HINTS = {
    "vector": "install pgvector on the database server (Debian: build it with scripts/bootstrap, "
    "or apt-get install postgresql-<major>-pgvector where packaged)",
    "timescaledb": "install TimescaleDB on the database server (scripts/bootstrap builds it) and add "
    "shared_preload_libraries = 'timescaledb' to postgresql.conf, then restart",
    "pgcrypto": "install the contrib package on the database server (Debian: postgresql-contrib)",
}


def install_hint(name: str) -> str:
    return INSTALL_HINTS.get(name, f"install the '{name}' extension on the database server")


# --------------------------------------------------------------------- shared catalog queries

def role_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is not None


def database_exists(conn: psycopg.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


# What of the server's roles belongs to no database: the roles and their attributes, memberships, and the
# settings of roles and of other databases (ALTER ROLE … SET; those of the connection's database are its own).
# Passwords are left out (pg_authid is for superusers only).
_SERVER_ROLES_SQL = """
SELECT format('role %I', rolname), concat_ws(' ', rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,
                                             rolreplication, rolbypassrls, rolconnlimit, rolvaliduntil)
FROM pg_roles
UNION ALL
SELECT format('membership of %s in %s', m.member::regrole, m.roleid::regrole), to_jsonb(m)::text
FROM pg_auth_members m
UNION ALL
SELECT concat_ws(' ', 'settings of', CASE WHEN s.setrole = 0 THEN 'every role' ELSE s.setrole::regrole::text END,
                 'in database ' || quote_ident(d.datname)), s.setconfig::text
FROM pg_db_role_setting s LEFT JOIN pg_database d ON d.oid = s.setdatabase
WHERE s.setdatabase IS DISTINCT FROM (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def server_roles(conn: psycopg.Connection) -> dict[str, str]:
    """The server-wide state of its roles (see ``_SERVER_ROLES_SQL``), to compare with :func:`role_changes`."""
    return dict(conn.execute(_SERVER_ROLES_SQL).fetchall())


def role_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """What changed between two :func:`server_roles`: ``role "x" created``, ``membership of a in b dropped``…"""
    return ([f"{k} created" for k in after if k not in before] + [f"{k} dropped" for k in before if k not in after]
            + [f"{k} changed" for k in before if k in after and before[k] != after[k]])


def uncommitted_role_changes(conn: psycopg.Connection, other: psycopg.Connection) -> list[str]:
    """What the open transaction of ``conn`` changed of the server's roles: its view against the view of
    ``other``, an autocommit connection to the same database, which does not see it, so that what other sessions
    commit meanwhile is not counted (read again when the outside view moved while ``conn`` was asked)."""
    for _ in range(3):
        outside = server_roles(other)
        inside = server_roles(conn)
        if server_roles(other) == outside:
            break
    return role_changes(outside, inside)


def version_table(settings) -> str:
    """The project's Alembic version table, ``schema.table``: DBKIT_VERSION_TABLE_SCHEMA and
    DBKIT_VERSION_TABLE (default ``dbkit.alembic_version``)."""
    return f"{settings.version_table_schema}.{settings.version_table}"


def applied_revisions(conn: psycopg.Connection, version_table: str = "dbkit.alembic_version") -> list[str] | None:
    """The revision ids in Alembic's version table (``schema.table``, see :func:`version_table`),
    or None when it does not exist."""
    if not conn.execute("SELECT to_regclass(%s)", (version_table,)).fetchone()[0]:
        return None
    schema, _, table = version_table.rpartition(".")
    from psycopg import sql

    name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    return [r[0] for r in conn.execute(sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(name))]


@dataclass(frozen=True)
class VersionTable:
    """A table that looks like Alembic's version table; ``revisions`` is None when it could not be read."""

    schema: str
    table: str
    revisions: tuple[str, ...] | None

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"


_VERSION_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'version_num' AND NOT a.attisdropped
WHERE c.relkind IN ('r', 'p') AND (c.relname LIKE '%%alembic_version%%' OR c.relname = %s)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY n.nspname <> 'public', n.nspname, c.relname
"""


def version_tables(conn: psycopg.Connection, named: str = "alembic_version") -> list[VersionTable]:
    """Every table in any schema named like ``alembic_version`` (or exactly ``named``) with a
    ``version_num`` column (``public`` first), with the revisions it holds."""
    from psycopg import errors, sql

    found = []
    for schema, table in conn.execute(_VERSION_TABLES_SQL, (named,)).fetchall():
        try:
            with conn.transaction():
                rows = conn.execute(sql.SQL("SELECT version_num FROM {} ORDER BY 1").format(
                    sql.Identifier(schema, table))).fetchall()
            revisions: tuple[str, ...] | None = tuple(str(r[0]) for r in rows)
        except errors.InsufficientPrivilege:
            revisions = None
        found.append(VersionTable(schema, table, revisions))
    return found


_UNVERSIONED_SQL = r"""
SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT c.relispartition
  AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg\_%%' AND n.nspname NOT LIKE '\_timescaledb%%'
  AND c.relname NOT LIKE '%%alembic_version%%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')
ORDER BY 1 LIMIT %s
"""


def unversioned_tables(conn: psycopg.Connection, skip_schemas: Iterable[str] = (), limit: int = 3) -> list[str]:
    """Up to ``limit`` tables (``schema.table``) of the database that no extension owns, outside
    the system schemas and ``skip_schemas``: a database that has them but no version table holds
    a schema that some other tool created."""
    return [r[0] for r in conn.execute(_UNVERSIONED_SQL, (list(skip_schemas), limit)).fetchall()]
