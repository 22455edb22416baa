"""The cognitive engine's database side: how it starts, connects and reads a user's memories.

* :func:`startup` runs once when the engine starts: with ``DBKIT_ENV=prod`` it refuses to start unless
  ``POSTGRES_USER_RLS_PASS`` and ``POSTGRES_USER_FULL_PASS`` are set (and the URL uses TLS, backups go
  to S3): one line naming what is missing, the document's "the system will fail to start without these".
* :func:`connect` logs in as ``cognitive_engine_rls`` (every request: RLS enforced) or, for trusted
  jobs, ``cognitive_engine_full`` (BYPASSRLS); the names and password variables are dbkit settings
  (pyproject.toml ``[tool.dbkit]``), the passwords come from the environment or ``.env``.
* :func:`similar_memories` is a request: the user's JWT ``sub`` is set as ``request.jwt.claims`` for one
  transaction (``dbkit.rls.scoped``, safe behind a pooler), and the HNSW index finds the nearest
  memories among that user's rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

import dbkit.rls
from dbkit.config import Settings, load_settings


def startup(settings: Settings | None = None) -> Settings:
    """The settings, or :class:`dbkit.errors.Refused` when ``DBKIT_ENV=prod`` requirements are unmet."""
    settings = settings or load_settings()
    settings.require_environment("the cognitive engine's startup")
    return settings


def connect(settings: Settings, *, trusted: bool = False, dbname: str | None = None) -> psycopg.Connection:
    """A connection as the enforce role, or as the bypass role for trusted jobs (``trusted=True``)."""
    role = (settings.role_bypass if trusted else settings.role_enforce)[0]
    if settings.database_url is None:
        raise RuntimeError("DATABASE_URL is not set: the engine connects to dev_db / prod_db through it")
    extra: dict[str, Any] = {"user": role, "password": settings.password_for(role)}
    if dbname:
        extra["dbname"] = dbname
    return psycopg.connect(make_conninfo(settings.database_url.conninfo, **extra))


def similar_memories(conn: psycopg.Connection, settings: Settings, user_id: Any, embedding: Sequence[float],
                     k: int = 5) -> list[tuple[Any, Any, str, float]]:
    """(memory id, user id, content, cosine distance) of the user's ``k`` memories nearest to ``embedding``."""
    literal = "[" + ",".join(repr(float(x)) for x in embedding) + "]"
    with dbkit.rls.scoped(conn, user_id=user_id, claims=dbkit.rls.claims(settings)):
        # pgvector >= 0.8: the HNSW scan goes on until k rows pass the user's policy (without it, a user
        # with few memories among many users' could get fewer than k of them)
        conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        return conn.execute(
            f'SELECT id, user_id, content, embedding <=> %s::vector AS distance FROM "{settings.schema}".memories '
            "ORDER BY embedding <=> %s::vector LIMIT %s", (literal, literal, k)).fetchall()
