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
import functools
from collections.abc import Iterator
from typing import Any

from dbkit.rls._claims import OWNERS, Claims, claims

__all__ = ["scoped", "scoped_session", "Claims", "claims", "configured_claims", "OWNERS",
           "DEFAULT_TENANT_CLAIM", "DEFAULT_USER_CLAIM"]

DEFAULT_TENANT_CLAIM = "app.tenant_id"
DEFAULT_USER_CLAIM = "app.user_id"


@functools.cache
def configured_claims() -> Claims:
    """The project's RLS model (``DBKIT_RLS_MODEL`` & co.), read once per process."""
    from dbkit.config import load_settings

    return claims(load_settings())


def _model(model: Claims | None, tenant_claim: str | None, user_claim: str | None) -> Claims:
    if model is not None:
        return model
    if tenant_claim or user_claim:  # explicit setting names: the tenant-claim model
        return Claims("tenant", tenant_claim or DEFAULT_TENANT_CLAIM, user_claim or DEFAULT_USER_CLAIM)
    return configured_claims()


@contextlib.contextmanager
def scoped(conn, *, tenant_id: Any = None, user_id: Any = None, role: str | None = None,
           claims: Claims | None = None, tenant_claim: str | None = None,
           user_claim: str | None = None) -> Iterator[Any]:
    """A transaction on a psycopg connection with the RLS claims set (and ``SET LOCAL ROLE role``).

    The claims follow the project's RLS model (``claims``, default: the configured one): under
    ``tenant`` the tenant and user settings, under ``jwt`` one JSON object (``{"sub": user_id,
    "<tenant key>": tenant_id}``).  A claim not given is set empty, which the policies treat as
    "nobody": no rows.  The connection must not be inside a transaction already (a nested block
    would leak the claims into the outer transaction).
    """
    from psycopg import pq, sql

    model = _model(claims, tenant_claim, user_claim)
    params = model.parameters(tenant_id, user_id)
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise RuntimeError("dbkit.rls.scoped() must start its own transaction: commit or roll back first")
    with conn.transaction():
        if role:
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        if params:
            conn.execute(model.set_sql(), params)
        yield conn


@contextlib.contextmanager
def scoped_session(session, *, tenant_id: Any = None, user_id: Any = None, role: str | None = None,
                   claims: Claims | None = None, tenant_claim: str | None = None,
                   user_claim: str | None = None) -> Iterator[Any]:
    """The SQLAlchemy ``Session`` variant of :func:`scoped`: ``with scoped_session(s, tenant_id=t): ...``

    Begins the session's transaction (it must not have one), sets the claims and commits
    at the end of the block (rolls back on an exception).
    """
    from sqlalchemy import text

    from dbkit._db import quote_ident

    model = _model(claims, tenant_claim, user_claim)
    pairs = model.assignments(tenant_id, user_id)
    if session.in_transaction():
        raise RuntimeError("dbkit.rls.scoped_session() must start its own transaction: commit or roll back first")
    with session.begin():
        if role:
            session.execute(text(f"SET LOCAL ROLE {quote_ident(role)}"))
        if pairs:
            calls = ", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(pairs)))
            session.execute(text(f"SELECT {calls}"),
                            {k: v for i, (n, val) in enumerate(pairs) for k, v in ((f"n{i}", n), (f"v{i}", val))})
        yield session
