"""What the operations share: quoting, and running statements as the session user."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from alembic.operations import Operations
from sqlalchemy import text

from dbkit._db import quote_literal as _literal
from dbkit.migrate import settings as dbkit_settings

VECTOR_METHODS = ("hnsw", "ivfflat")


def role_list(roles) -> tuple[str, ...]:
    """Role names from ``roles``: names, or tuples of names (a setting such as
    ``settings.role_enforce`` holds every role of its kind), flattened in order."""
    if isinstance(roles, str):
        return (roles,)
    return tuple(dict.fromkeys(name for item in roles for name in role_list(item)))


def _kept(original, message: str):
    """``reverse()`` of a drop/remove operation: the operation it was made from, else ``ValueError(message)``."""
    if original is None:
        raise ValueError(message)
    return original


def quote_name(dialect, name: str) -> str:
    """``name`` quoted when PostgreSQL needs it, for a statement run as text.  For a driver whose paramstyle is
    ``format`` the dialect's quoting doubles a ``%`` in the name, which SQLAlchemy doubles again when it runs
    the text: the quoted name keeps a single one, as PostgreSQL reads it."""
    preparer = dialect.identifier_preparer
    quoted = preparer.quote(name)
    return quoted.replace("%%", "%") if "%" in name and preparer.quote("%") == '"%%"' else quoted


def _q(operations: Operations, name: str) -> str:
    return quote_name(operations.migration_context.dialect, name)


def _qualified(operations: Operations, name: str, schema: str | None) -> str:
    return f"{_q(operations, schema)}.{_q(operations, name)}" if schema else _q(operations, name)


def _role_specs(operations: Operations, roles: Iterable[str]) -> str:
    """``a, "B", PUBLIC``: role names quoted, the role keywords of GRANT and CREATE POLICY as they are."""
    return ", ".join(r if r.upper() in ("PUBLIC", "CURRENT_ROLE", "CURRENT_USER", "SESSION_USER") else _q(operations, r)
                     for r in roles)


def roles_in_use(connection) -> tuple[str, str, bool]:
    """(current role, session role, whether the session role bypasses row-level security) of ``connection``."""
    return tuple(connection.exec_driver_sql(
        "SELECT current_user, session_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = session_user").one())


def _run_as_session_user(operations: Operations, statements: Iterable) -> None:
    """Run statements (text built by dbkit, or a SQLAlchemy clause) as the session (connecting) user, then
    return to the current role.

    Online, ``SET ROLE NONE`` switches to the session user and ``SET ROLE`` switches
    back; both are transactional, so a failure rolls the switch back with the DDL.
    Offline (``--sql``) the same switch to and from the owner role is written out.
    """
    ctx = operations.migration_context
    if ctx.as_sql:
        settings = dbkit_settings(operations)
        back = settings.role_owner if settings.migrate_set_role else None
    else:
        current, session, _ = roles_in_use(ctx.connection)
        back = current if current != session else None
    if back is not None:
        operations.execute("SET ROLE NONE")
    for stmt in statements:
        if isinstance(stmt, str):  # built by dbkit: its colons are SQL
            _execute(operations, stmt)
        else:
            operations.execute(stmt)
    # back to the role we were, unless a statement above dropped it
    if back is not None and (ctx.as_sql or ctx.connection.exec_driver_sql(
            "SELECT 1 FROM pg_roles WHERE rolname = %(r)s", {"r": back}).first()):
        _execute(operations, f"SET ROLE {_q(operations, back)}")


# ---- TimescaleDB operations: values written into SQL (each one quoted; never formatted in as it is)

def _regclass(operations: Operations, name: str, schema: str | None) -> str:
    """``'app.events'``: a relation as the text literal a ``regclass`` parameter takes (identifiers quoted)."""
    return _literal(_qualified(operations, name, schema))


def _interval(value, what: str, *, allow_none: bool = False) -> str:
    """An interval (``"7 days"``, a ``timedelta``) as ``INTERVAL '…'``, or an integer as it is (hypertables
    partitioned on an integer column take their offsets in the column's units)."""
    if value is None and allow_none:
        return "NULL"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, timedelta):
        parts = [f"{n} {unit}" for n, unit in ((value.days, "days"), (value.seconds, "seconds"),
                                                (value.microseconds, "microseconds")) if n]
        return f"INTERVAL {_literal(' '.join(parts) or '0 seconds')}"
    if isinstance(value, str) and value.strip():
        return f"INTERVAL {_literal(value.strip())}"
    raise ValueError(f"{what} must be an interval such as '7 days' (or an integer for a hypertable on integer "
                     f"time), not {value!r}")


def _start(value) -> str | None:
    """``initial_start`` (a ``datetime`` or text such as ``'2025-01-01 00:00+00'``) as ``TIMESTAMPTZ '…'``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        value = value.isoformat()
    if isinstance(value, str) and value.strip():
        return f"TIMESTAMPTZ {_literal(value.strip())}"
    raise ValueError(f"initial_start must be a datetime or a timestamp such as '2025-01-01 00:00+00', not {value!r}")


def _schedule(value) -> str | None:
    return None if value is None else _interval(value, "schedule_interval")


def _bool(value: bool) -> str | None:
    """``true``, or None: the argument is left out (TimescaleDB's flags default to false)."""
    return "true" if value else None


def _call(function: str, *args: str, **named: str | None) -> str:
    """``SELECT function(arg, …, name => value, …)`` from SQL fragments already quoted (None: left out)."""
    parts = list(args) + [f"{k} => {v}" for k, v in named.items() if v is not None]
    return f"SELECT {function}({', '.join(parts)})"


def _do_block(body: str) -> str:
    """``DO $dbkit$ … $dbkit$`` with a dollar-quote tag that does not occur in ``body``."""
    tag, n = "dbkit", 0
    while f"${tag}$" in body:
        n += 1
        tag = f"dbkit{n}"
    return f"DO ${tag}$ {body} ${tag}$"


def _execute(operations: Operations, stmt: str) -> None:
    """Run (online) or write (offline) one statement built by an operation, colons and all: Alembic runs a
    string as SQLAlchemy ``text()``, which reads ``:name`` (in a JSON config, a query) as a bind parameter;
    ``\\:name`` is a colon."""
    operations.execute(text(re.sub(r"(?<![:\w]):(?=\w+(?![:\w]))", r"\\:", stmt)))
