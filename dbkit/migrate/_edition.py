"""TimescaleDB's editions: the Apache-2 one (what Debian's ``+dfsg`` source package builds) has hypertables
only; the community one (Timescale License: Timescale's packages, the ``timescale/timescaledb-ha`` image)
adds compression, policies, continuous aggregates and jobs.  The server says which through
``timescaledb.license`` (``apache`` or ``timescale``).

Before any DDL, the migrate preflight reads it and refuses a pending revision that uses a community
feature on an Apache server, instead of failing half-way with "functionality not supported under the
current apache license".
"""

from __future__ import annotations

import re
from pathlib import Path

from dbkit.errors import MissingDependency

#: dbkit's operations that need the community edition (dbkit.migrate._ops_timescale)
COMMUNITY_OPS = (
    "enable_compression", "disable_compression", "add_compression_policy", "remove_compression_policy",
    "add_retention_policy", "remove_retention_policy", "create_continuous_aggregate",
    "drop_continuous_aggregate", "add_refresh_policy", "remove_refresh_policy", "add_reorder_policy",
    "remove_reorder_policy", "add_job", "delete_job",
)
_OP_CALL = re.compile(r"\bop\.(" + "|".join(COMMUNITY_OPS) + r")\s*\(")
# the same features written as SQL in op.execute(...)
_SQL = re.compile(r"(timescaledb\.(?:compress|continuous)\b|\b(?:add|remove)_(?:compression|retention|reorder|"
                  r"continuous_aggregate)_policy\s*\(|\badd_job\s*\(|\bcompress_chunk\s*\()", re.IGNORECASE)

HOW_TO_GET = ("install the community edition: Timescale's packages (packagecloud.io/timescale), the "
              "timescale/timescaledb-ha image of docker-compose.yml, or dbkit's scripts/bootstrap with "
              "DBKIT_TIMESCALEDB_SOURCE pointing at TimescaleDB's full source (tsl/ included)")


def community_features(path: str | Path) -> list[str]:
    """What the revision file at ``path`` uses of the community edition (``op.add_job``, ``timescaledb.compress``
    …), in order of first use; empty when nothing."""
    text = Path(path).read_text(errors="replace")
    found = [f"op.{m[1]}" for m in _OP_CALL.finditer(text)] + [m[1].rstrip(" (") for m in _SQL.finditer(text)]
    return list(dict.fromkeys(found))


def edition_of(conn) -> str | None:
    """``community`` (``timescaledb.license`` is ``timescale``) or ``apache`` (None: TimescaleDB not loaded)."""
    row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    if not row or not row[0]:
        return None
    return "community" if row[0] == "timescale" else "apache"


def refuse_community_on_apache(settings, script, target: str | None):
    """A check for :func:`dbkit.migrate._session.migration_connection` (under the lock, before any DDL): the
    revisions an upgrade to ``target`` (default: the heads) would run must not use community features when
    the server runs the Apache edition."""

    def check(conn) -> None:
        if edition_of(conn) != "apache":
            return
        from dbkit import _db as db

        current = db.applied_revisions(conn, db.version_table(settings)) or []
        try:
            pending = list(script.iterate_revisions(target or "heads", tuple(current) or "base"))
        except Exception:  # noqa: BLE001 - a relative or unknown target: Alembic reports it itself
            pending = list(script.iterate_revisions("heads", tuple(current) or "base"))
        for rev in reversed(pending):  # oldest first: the first one that would fail
            uses = community_features(rev.path)
            if uses:
                raise MissingDependency(
                    f"revision {rev.revision} ({Path(rev.path).name}) uses TimescaleDB's community edition "
                    f"({', '.join(uses[:3])}), but this server runs the Apache-2 edition (timescaledb.license = "
                    "apache); nothing was changed", hint=HOW_TO_GET)

    return check
