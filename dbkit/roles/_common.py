"""Helpers shared by apply, check and the PgBouncer userlist: connections, passwords, quoted names."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

from dbkit.roles._model import Role

_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def _ident(name: str) -> str:
    """An identifier for the one-line fixes we print (quoted only when it must be)."""
    return name if _PLAIN_IDENT.fullmatch(name) else '"' + name.replace('"', '""') + '"'


@contextlib.contextmanager
def _connection(settings, conn) -> Iterator[object]:
    if conn is not None:
        yield conn
        return
    from dbkit import _db as db
    from dbkit import _target as target

    # roles are the administrator's work: DIRECT_DATABASE_URL (not the application's pooled DATABASE_URL) when set
    opened = db.connect(target.resolve_url(settings, direct=True), autocommit=True,
                        connect_timeout=settings.connect_timeout)
    try:
        yield opened
    finally:
        opened.close()


def _can_read_authid(conn) -> bool:
    return bool(conn.execute("SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT')").fetchone()[0])


def _stored_passwords(conn, names: list[str]) -> dict[str, str | None] | None:
    """``{role: rolpassword}`` from pg_authid, or None when it is not readable (not a superuser)."""
    if not _can_read_authid(conn):
        return None
    return dict(conn.execute("SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = ANY(%s)",
                             (names,)).fetchall())


def password_of(settings, role: Role) -> str | None:
    """The password of a LOGIN role from its variable (environment, .env, .env.<env>), or None."""
    if role.password_env is None:
        return None
    return settings.passwords.get(role.password_env) or None
