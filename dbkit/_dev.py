"""The embedded development cluster: a private PostgreSQL under ``.dbkit/``.

Built with the machine's own PostgreSQL server programs, listening on
127.0.0.1 only (a free port chosen once and remembered), its unix socket in
``.dbkit/run``, its log in ``.dbkit/log``.  When the caller is root the server
runs as the ``postgres`` OS user, because PostgreSQL refuses to run as root.
TimescaleDB is preloaded when it is installed.  Authentication is ``trust``
on loopback: this cluster is for development and tests only.

No printing here: functions return :class:`ClusterStatus` and raise
:class:`~dbkit.errors.DevClusterError` / :class:`~dbkit.errors.MissingDependency`.

The pieces live in private modules: :mod:`dbkit._dev_binaries` (finding the server programs and their
layout) and :mod:`dbkit._dev_cluster` (the cluster's lifecycle); provisioning is here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dbkit._dev_binaries import find_bindir, server_layout
from dbkit._dev_cluster import ClusterStatus, DevCluster
from dbkit._urls import DbUrl, parse_database_url

__all__ = ["DevCluster", "Provisioned", "find_bindir", "provision", "server_layout"]


@dataclass(frozen=True)
class Provisioned:
    status: ClusterStatus
    url: DbUrl
    database_created: bool
    extensions_created: tuple[str, ...]

    def as_dict(self) -> dict:
        """The JSON of ``dbkit dev up --json``: the cluster's status, then what provisioning did."""
        return {**self.status.as_dict(), "database": self.url.dbname, "database_created": self.database_created,
                "extensions_created": list(self.extensions_created)}


def provision(cluster: DevCluster, extensions: Sequence[str] = ()) -> Provisioned:
    """Start the cluster if needed, create its database and the given extensions.

    What every command does first when ``DATABASE_URL`` is unset in dev, and
    what ``dbkit dev up`` does.
    """
    from dbkit import _db as db
    status = cluster.up()
    created = cluster.ensure_database()
    url = parse_database_url(cluster.url(port=status.port))
    made: list[str] = []
    if extensions:
        with db.connect(url, autocommit=True) as conn:
            made = db.ensure_extensions(conn, extensions)
    return Provisioned(status, url, created, tuple(made))
