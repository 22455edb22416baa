"""What the operations share: quoting, and running statements as the session user."""

from __future__ import annotations

from collections.abc import Iterable

from alembic.operations import Operations

from dbkit.migrate import settings as dbkit_settings

COMMANDS = ("ALL", "SELECT", "INSERT", "UPDATE", "DELETE")


VECTOR_METHODS = ("hnsw", "ivfflat")


def role_list(roles) -> tuple[str, ...]:
    """Role names from ``roles``: names, or tuples of names (a setting such as
    ``settings.role_enforce`` holds every role of its kind), flattened in order."""
    if isinstance(roles, str):
        return (roles,)
    out: list[str] = []
    for item in roles:
        out.extend((item,) if isinstance(item, str) else role_list(item))
    return tuple(dict.fromkeys(out))


def _q(operations: Operations, name: str) -> str:
    return operations.migration_context.dialect.identifier_preparer.quote(name)


def _qualified(operations: Operations, name: str, schema: str | None) -> str:
    return f"{_q(operations, schema)}.{_q(operations, name)}" if schema else _q(operations, name)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _run_as_session_user(operations: Operations, statements: Iterable[str]) -> None:
    """Run statements as the session (connecting) user, then return to the current role.

    Online, ``SET ROLE NONE`` switches to the session user and ``SET ROLE`` switches
    back; both are transactional, so a failure rolls the switch back with the DDL.
    Offline (``--sql``) the same switch to and from the owner role is written out.
    """
    ctx = operations.migration_context
    if ctx.as_sql:
        settings = dbkit_settings(operations)
        if settings.migrate_set_role:
            operations.execute("SET ROLE NONE")
        for stmt in statements:
            operations.execute(stmt)
        if settings.migrate_set_role:
            operations.execute(f"SET ROLE {_q(operations, settings.role_owner)}")
        return
    current, session = ctx.connection.exec_driver_sql("SELECT current_user, session_user").one()
    switch = current != session
    if switch:
        operations.execute("SET ROLE NONE")
    for stmt in statements:
        operations.execute(stmt)
    if switch:  # back to the role we were, unless a statement above dropped it
        still_there = ctx.connection.exec_driver_sql(
            "SELECT 1 FROM pg_roles WHERE rolname = %(r)s", {"r": current}).first()
        if still_there:
            operations.execute(f"SET ROLE {_q(operations, current)}")
