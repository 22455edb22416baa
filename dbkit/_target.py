"""Which database a command uses: ``DATABASE_URL``, ``DIRECT_DATABASE_URL`` or the embedded dev cluster.

Above :mod:`dbkit._db` (connections) and :mod:`dbkit._dev` (the cluster), below every feature.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from dbkit._urls import DbUrl
    from dbkit.config import Settings

log = logging.getLogger("dbkit")


def resolve_url(settings: Settings, *, direct: bool = False) -> DbUrl:
    """The database URL commands use.

    ``DATABASE_URL`` when set; otherwise, in dev, the embedded cluster (started
    and provisioned on first use); otherwise a ConfigError naming DATABASE_URL.
    ``direct``: the command needs a session of its own (advisory locks, SET ROLE, pg_dump), not
    PgBouncer in transaction mode: DIRECT_DATABASE_URL wins, and a PgBouncer port gets a warning.
    """
    if direct and settings.direct_database_url is not None:
        return settings.direct_database_url
    if not settings.uses_dev_cluster:
        url = settings.require_database_url()
        if direct and url.port is not None and str(url.port) in settings.pgbouncer_ports:
            log.warning("DATABASE_URL uses port %s, usually PgBouncer: this command needs a direct connection "
                        "to PostgreSQL; set DIRECT_DATABASE_URL", url.port)
        return url
    from dbkit import _dev as dev

    return dev.provision(dev.DevCluster.from_settings(settings), settings.extensions).url
