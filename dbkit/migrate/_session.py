"""The migration session: one PostgreSQL connection with dbkit's safety rails.

In order, before Alembic runs a single revision:

1. a **session-level** advisory lock on a fixed key (a second ``dbkit migrate``
   waits, with a message, then finds nothing to do; autocommit blocks do not release it).
   A waiting run polls ``pg_try_advisory_lock`` in short autocommit statements and holds
   no snapshot in between, so the running migration's ``CREATE INDEX CONCURRENTLY``
   (which waits for every snapshot in the database) never waits for it;
2. ``lock_timeout`` / ``statement_timeout`` from the settings;
3. preflight, as the connecting role: the required extensions exist or can be
   created (a clear error naming the extension before any DDL), the roles from
   role model (:mod:`dbkit.roles`) exist with their attributes, the ``dbkit`` schema
   (dbkit's checksum table) and the schema of Alembic's version table exist, and the owner
   role may create objects in the application's schema and write the version table where
   it did not create them (``public``: PostgreSQL 15+ no longer lets every role create there);
4. ``SET ROLE <owner>`` so every object the revisions create is owned by the owner role, and
   ``row_security = off``: a revision's statement that row-level security would filter (an
   ``UPDATE`` backfill of a FORCE RLS table, run as its owner with no claim set) fails and rolls
   back instead of silently touching no rows.

While revisions run, a watcher on a second connection records which sessions
block the migration, so a lock timeout can name them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from dbkit import _db as db
from dbkit import _target as target
from dbkit._db import quote_literal as _literal
from dbkit._urls import mask_secrets
from dbkit.errors import DbkitError, MissingDependency

#: What the owner role needs on a version table it did not create (a project plain Alembic migrated).
VERSION_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE")

log = logging.getLogger("dbkit.migrate")

#: Fixed advisory lock key: the bytes of "dbkitmig" as a signed 64-bit integer.
ADVISORY_LOCK_KEY = int.from_bytes(b"dbkitmig", "big", signed=True)
#: Schema that holds dbkit's own bookkeeping tables (and, by default, Alembic's version table).
BOOKKEEPING_SCHEMA = "dbkit"


@dataclass(frozen=True)
class Blocker:
    pid: int
    user: str | None
    state: str | None
    seconds_in_transaction: float | None
    query: str | None

    def describe(self) -> str:
        age = f" for {self.seconds_in_transaction:.0f}s" if self.seconds_in_transaction is not None else ""
        query = mask_secrets(" ".join((self.query or "").split()))[:120]
        return f"pid {self.pid} ({self.user}, {self.state}{age}: {query!r})"


_BLOCKERS_SQL = """
SELECT a.pid, a.usename, a.state, EXTRACT(EPOCH FROM now() - a.xact_start)::float8, a.query
FROM pg_stat_activity a WHERE a.pid = ANY(pg_blocking_pids(%s)) ORDER BY a.xact_start
"""


class BlockerWatcher:
    """Polls ``pg_blocking_pids`` of the migrating backend and keeps the last non-empty answer."""

    def __init__(self, url, backend_pid: int, interval: float = 0.1) -> None:
        self.url, self.backend_pid, self.interval = url, backend_pid, interval
        self.last: list[Blocker] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbkit-blocker-watcher", daemon=True)

    def start(self) -> BlockerWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            conn = db.connect(self.url, autocommit=True, connect_timeout=5)
        except DbkitError:
            return
        with conn:
            while not self._stop.wait(self.interval):
                try:
                    rows = conn.execute(_BLOCKERS_SQL, (self.backend_pid,)).fetchall()
                except Exception:  # noqa: BLE001 - the watcher must never break a migration
                    return
                if rows:
                    self.last = [Blocker(*r) for r in rows]


def _holder_of_lock(conn) -> str:
    row = conn.execute(
        "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
        "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.objid = (%s::bigint & 4294967295)::oid AND l.classid = (%s::bigint >> 32)::oid LIMIT 1",
        (ADVISORY_LOCK_KEY, ADVISORY_LOCK_KEY),
    ).fetchone()
    return f"pid {row[0]} ({row[1] or 'unknown client'})" if row else "another session"


#: Pauses between two tries for the advisory lock while another migration holds it (seconds).
LOCK_POLL_FIRST, LOCK_POLL_MAX = 0.05, 0.5


def _try_lock(conn) -> bool:
    return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0])


def _acquire_lock(conn) -> None:
    """Take the session-level advisory lock; while another migration holds it, poll.

    Never ``pg_advisory_lock``: a session blocked inside that statement holds a
    snapshot, and the running migration's ``CREATE INDEX CONCURRENTLY`` waits for
    every snapshot in the database: a deadlock.  Instead each try is one short
    autocommit statement, and the connection sits idle, with no transaction and
    no snapshot, between tries.
    """
    if _try_lock(conn):
        return
    log.warning("another migration is running (%s); waiting for it to finish", _holder_of_lock(conn))
    pause = LOCK_POLL_FIRST
    while not _try_lock(conn):
        time.sleep(pause)
        pause = min(pause * 2, LOCK_POLL_MAX)
    log.warning("the other migration finished; continuing")


def _preflight(conn, settings, keep_server_roles: bool = False) -> None:
    """Extensions, roles, bookkeeping schema; as the connecting role, before any revision runs.
    ``keep_server_roles``: see :func:`dbkit.roles.apply` (a rehearsal)."""
    from psycopg import errors, sql

    from dbkit import roles

    db.ensure_extensions(conn, settings.extensions)
    try:
        # the role model, and passwords from their variables (as SCRAM verifiers)
        roles.apply(settings, conn, keep_server_roles=keep_server_roles)
    except errors.InsufficientPrivilege as exc:
        raise MissingDependency(
            f"the connecting role may not create or correct the roles of the role model: {exc.diag.message_primary}",
            hint="connect as a role with CREATEROLE (a superuser for BYPASSRLS roles), "
            "or have a DBA run `dbkit roles apply` once",
        ) from None
    owner = settings.role_owner if settings.migrate_set_role else None
    for schema in dict.fromkeys((BOOKKEEPING_SCHEMA, settings.version_table_schema)):
        stmt = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
        if owner:
            stmt = sql.SQL("{} AUTHORIZATION {}").format(stmt, sql.Identifier(owner))
        conn.execute(stmt)
    if owner:
        for schema in _granted_schemas(settings):
            _grant_schema(conn, schema, owner)
        _grant_version_table(conn, settings, owner)


def _granted_schemas(settings) -> list[str]:
    """Schemas the owner role must be able to create in, though it may not own them."""
    return [s for s in dict.fromkeys((settings.schema, settings.version_table_schema)) if s != BOOKKEEPING_SCHEMA]


def _grant(conn, held, grant, what: str, statement: str) -> None:
    """``grant`` unless ``held()``; a GRANT without the right only warns, so ``held()`` is asked again."""
    from psycopg import errors

    if held():
        return
    with contextlib.suppress(errors.InsufficientPrivilege):
        conn.execute(grant)
    if not held():
        raise MissingDependency(f"{what}, and the connecting role may not grant it",
                                hint=f"have a DBA (or the schema's owner) run once: {statement}")


def _grant_schema(conn, schema: str, owner: str) -> None:
    """GRANT USAGE, CREATE ON SCHEMA to the owner role when it lacks them (idempotent): PostgreSQL 15+
    revoked CREATE on ``public`` from PUBLIC, and ``public`` belongs to pg_database_owner."""
    from psycopg import sql

    def held() -> bool:
        row = conn.execute("SELECT has_schema_privilege(%(r)s, oid, 'USAGE') AND has_schema_privilege(%(r)s, oid, "
                           "'CREATE') FROM pg_namespace WHERE nspname = %(s)s", {"r": owner, "s": schema}).fetchone()
        return row is None or row[0]  # a missing schema is the revisions' to create

    _grant(conn, held,
           sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(owner)),
           f"the owner role {owner} may not create objects in schema {schema} (migrations run as it; "
           "PostgreSQL 15+ no longer lets every role create in public)",
           f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {owner};")


def _grant_version_table(conn, settings, owner: str) -> None:
    """The owner role writes Alembic's version table: grant it when another role created the table."""
    from psycopg import sql

    name = f"{settings.version_table_schema}.{settings.version_table}"
    if not conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0]:
        return

    def held() -> bool:
        return all(conn.execute("SELECT has_table_privilege(%s, %s, %s)", (owner, name, p)).fetchone()[0]
                   for p in VERSION_TABLE_PRIVILEGES)

    table = sql.Identifier(settings.version_table_schema, settings.version_table)
    _grant(conn, held, sql.SQL("GRANT {} ON TABLE {} TO {}").format(
               sql.SQL(", ").join(map(sql.SQL, VERSION_TABLE_PRIVILEGES)), table, sql.Identifier(owner)),
           f"the owner role {owner} may not write Alembic's version table {name} (migrations run as it)",
           f"GRANT {', '.join(VERSION_TABLE_PRIVILEGES)} ON {name} TO {owner};")


#: revisions see every row or fail: never a result row-level security filtered (online and offline)
ROW_SECURITY_OFF = "SET row_security = off"

#: dbkit's checksum table (created as the owner role, after SET ROLE), online and in the offline script.
CHECKSUMS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {BOOKKEEPING_SCHEMA}.migration_checksums ("
    " revision text PRIMARY KEY, filename text NOT NULL, sha256 text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())"
)


def _sql_statement(text: str) -> str:
    """A statement as the offline script writes it (Alembic adds the terminating ``;``)."""
    text = text.strip()
    return text[:-1].rstrip() if text.endswith(";") else text


def offline_preflight(settings, quote) -> list[str]:
    """The preflight as SQL, for the offline script (``dbkit migrate sql``): what
    :func:`migration_connection` does online before ``SET ROLE``, so that the script
    applies by itself to an empty cluster.

    In order: the required extensions, the roles (the model and ``sql/roles/``; no password:
    those are set online by ``dbkit roles apply`` or ``dbkit migrate``), dbkit's
    bookkeeping schema and the version table's (owned by the owner role), and the owner role's
    privileges on the application's schema and an existing version table (as online: granted when
    missing).  ``quote`` quotes an identifier.
    """
    from dbkit import roles

    stmts = [f"CREATE EXTENSION IF NOT EXISTS {quote(name)} CASCADE" for name in settings.extensions]
    stmts += [_sql_statement(s) for s in roles.statements(settings)]
    owner = settings.role_owner if settings.migrate_set_role else None
    for name in dict.fromkeys((BOOKKEEPING_SCHEMA, settings.version_table_schema)):
        schema = f"CREATE SCHEMA IF NOT EXISTS {quote(name)}"
        stmts.append(schema + (f" AUTHORIZATION {quote(owner)}" if owner else ""))
    if owner:
        stmts.append(_offline_grants(settings, owner, quote))
    return stmts


def _offline_grants(settings, owner: str, quote) -> str:
    body = [f"  IF EXISTS (SELECT FROM pg_namespace WHERE nspname = {_literal(schema)}) THEN\n"
            f"    IF NOT (has_schema_privilege({_literal(owner)}, {_literal(schema)}, 'USAGE') AND "
            f"has_schema_privilege({_literal(owner)}, {_literal(schema)}, 'CREATE')) THEN\n"
            f"      GRANT USAGE, CREATE ON SCHEMA {quote(schema)} TO {quote(owner)};\n    END IF;\n  END IF;"
            for schema in _granted_schemas(settings)]
    table = f"{quote(settings.version_table_schema)}.{quote(settings.version_table)}"
    name = _literal(f"{settings.version_table_schema}.{settings.version_table}")
    body.append(f"  IF to_regclass({name}) IS NOT NULL THEN\n"
                f"    GRANT {', '.join(VERSION_TABLE_PRIVILEGES)} ON TABLE {table} TO {quote(owner)};\n  END IF;")
    return "DO $dbkit$ BEGIN\n" + "\n".join(body) + "\nEND $dbkit$"


def _postflight(conn, settings) -> None:
    """After the revisions, as the connecting role and still under the advisory lock: close the
    paths around RLS that new tables opened (chunks of new hypertables, pg_stats)."""
    from dbkit.rls import _isolation as isolation

    conn.rollback()
    conn.autocommit = True
    conn.execute("RESET ROLE")
    result = isolation.harden(conn, settings)
    for action in result.actions:
        log.info("tenant isolation: %s", action)
    for warning in result.warnings:
        log.warning("tenant isolation: %s", warning)


@contextlib.contextmanager
def migration_connection(settings, *, mutate: bool = True, check=None,
                         keep_server_roles: bool = False) -> Iterator[tuple[object, BlockerWatcher | None]]:
    """A SQLAlchemy Connection for Alembic on a dbkit-prepared psycopg connection.

    ``mutate=False`` (status, autogenerate, check) skips the lock, the preflight and
    the bookkeeping DDL; it still switches to the owner role when that role exists.
    ``check(conn)``, when given, runs as the connecting role under the lock and before
    the preflight (before any DDL); it refuses by raising.  ``keep_server_roles`` (a rehearsal): the preflight
    changes no role of the server (:func:`dbkit.roles.apply`).
    Yields ``(sqlalchemy_connection, watcher)``.
    """
    from psycopg import sql
    from sqlalchemy import create_engine, pool

    url = target.resolve_url(settings, direct=True)
    raw = db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout)
    watcher = None
    locked = False
    try:
        if mutate:
            _acquire_lock(raw)
            locked = True
        raw.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                    (settings.lock_timeout, settings.statement_timeout))
        if check is not None:
            check(raw)
        if mutate:
            _preflight(raw, settings, keep_server_roles)
        if settings.migrate_set_role and db.role_exists(raw, settings.role_owner):
            raw.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(settings.role_owner)))
        raw.execute(ROW_SECURITY_OFF)
        if mutate:
            raw.execute(CHECKSUMS_DDL)
            watcher = BlockerWatcher(url, raw.info.backend_pid).start()
        raw.autocommit = False
        engine = create_engine("postgresql+psycopg://", creator=lambda: raw, poolclass=pool.StaticPool)
        with engine.connect() as conn:
            yield conn, watcher
        if mutate:
            _postflight(raw, settings)
    finally:
        if watcher is not None:
            watcher.stop()
        with contextlib.suppress(Exception):
            raw.rollback()
            raw.autocommit = True
            if locked:
                raw.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        raw.close()
