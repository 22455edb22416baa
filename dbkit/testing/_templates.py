"""Template databases that stay copyable.

``CREATE DATABASE … TEMPLATE t`` fails ("source database … is being accessed by other users", 55006) when
any backend is connected to ``t``, and waits only 5 seconds for one to leave.  On a server that preloads
TimescaleDB, its launcher starts a "TimescaleDB Background Worker Scheduler" in every database that allows
connections, the new template included, whether it has the extension or not; ending such backends right
before the copy (what pytest-postgresql's janitor does) races with the launcher starting one again.  A
template that no longer allows connections gets none: the launcher skips it and so does everyone else.
"""

from __future__ import annotations


def seal(admin, name: str) -> int:
    """Close database ``name`` to new connections and end the ones it has (``admin``: a superuser's
    autocommit connection to another database).  Returns how many backends were ended.  Copies made from it
    with ``CREATE DATABASE … TEMPLATE`` allow connections as usual."""
    from psycopg import sql

    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
    ended = admin.execute("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchone()[0]
    return int(ended)
