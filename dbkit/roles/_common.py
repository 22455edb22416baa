"""Helpers shared by apply, check and the PgBouncer userlist: connections, passwords, quoted names."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from dbkit._db import quote_ident
from dbkit.roles._model import Role

_PLAIN_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


def _ident(name: str) -> str:
    """An identifier for the one-line fixes we print (quoted only when it must be)."""
    return name if _PLAIN_IDENT.fullmatch(name) else quote_ident(name)


def _connection(settings, conn) -> contextlib.AbstractContextManager:
    """``conn`` as it is, or a new autocommit connection closed at the end of the block."""
    if conn is not None:
        return contextlib.nullcontext(conn)
    from dbkit import _db as db
    from dbkit import _target as target

    # roles are the administrator's work: DIRECT_DATABASE_URL (not the application's pooled DATABASE_URL) when set
    return contextlib.closing(db.connect(target.resolve_url(settings, direct=True), autocommit=True,
                                         connect_timeout=settings.connect_timeout))


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


def _write_atomically(path: Path, text: str, mode: int, encoding: str | None = None) -> None:
    """Write ``text`` through a temporary file in the same directory, chmod ``mode``, and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding) as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
