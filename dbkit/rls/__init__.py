"""Row-level security: scoped sessions for applications and tests, and the catalog audit.

The application connects as the enforce role and sets its claims per transaction::

    with dbkit.rls.scoped(conn, tenant_id=tenant, user_id=user):
        conn.execute("SELECT * FROM app.documents")   # only this tenant's rows

``set_config(name, value, true)`` makes the claims transaction-local, so nothing is
left on the connection afterwards: safe with connection pools and with PgBouncer in
transaction mode.  Values are always bound parameters, never formatted into SQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

__all__ = ["scoped", "scoped_session", "DEFAULT_TENANT_CLAIM", "DEFAULT_USER_CLAIM"]

DEFAULT_TENANT_CLAIM = "app.tenant_id"
DEFAULT_USER_CLAIM = "app.user_id"

_CLAIMS_SQL = "SELECT set_config(%s, %s, true), set_config(%s, %s, true)"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@contextlib.contextmanager
def scoped(conn, *, tenant_id: Any = None, user_id: Any = None, role: str | None = None,
           tenant_claim: str = DEFAULT_TENANT_CLAIM, user_claim: str = DEFAULT_USER_CLAIM) -> Iterator[Any]:
    """A transaction on a psycopg connection with the RLS claims set (and ``SET LOCAL ROLE role``).

    ``tenant_id=None`` sets the claim to empty, which the reference policies treat as
    "no tenant": no rows.  The connection must not be inside a transaction already
    (a nested block would leak the claims into the outer transaction).
    """
    from psycopg import pq, sql

    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise RuntimeError("dbkit.rls.scoped() must start its own transaction: commit or roll back first")
    with conn.transaction():
        if role:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute(_CLAIMS_SQL, (tenant_claim, _text(tenant_id), user_claim, _text(user_id)))
        yield conn


@contextlib.contextmanager
def scoped_session(session, *, tenant_id: Any = None, user_id: Any = None, role: str | None = None,
                   tenant_claim: str = DEFAULT_TENANT_CLAIM, user_claim: str = DEFAULT_USER_CLAIM) -> Iterator[Any]:
    """The SQLAlchemy ``Session`` variant of :func:`scoped`: ``with scoped_session(s, tenant_id=t): ...``

    Begins the session's transaction (it must not have one), sets the claims and commits
    at the end of the block (rolls back on an exception).
    """
    from sqlalchemy import text

    if session.in_transaction():
        raise RuntimeError("dbkit.rls.scoped_session() must start its own transaction: commit or roll back first")
    with session.begin():
        if role:
            quoted = session.get_bind().dialect.identifier_preparer.quote(role)
            session.execute(text(f"SET LOCAL ROLE {quoted}"))
        session.execute(text("SELECT set_config(:tc, :t, true), set_config(:uc, :u, true)"),
                        {"tc": tenant_claim, "t": _text(tenant_id), "uc": user_claim, "u": _text(user_id)})
        yield session
