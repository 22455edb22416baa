"""``dbkit reset``: drop and recreate the database, migrate to head, seed a profile.

For dev and test.  Refused when DBKIT_ENV is staging/prod or the host is not local,
unless ``force`` *and* the database name is confirmed (typed, or ``--yes-i-know NAME``).
Only the configured database is touched; the connection to drop it goes to ``postgres``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dbkit import _db as db
from dbkit import _target as target
from dbkit.errors import Refused


def is_local(url) -> bool:
    """True for loopback hosts and unix sockets."""
    return url.is_local


@dataclass
class ResetResult:
    database: str
    migrated_to: list[str]
    seeded_rows: int
    seconds: float
    #: the "now" the seeded time series end at (``--anchor`` takes it back)
    anchor: str = ""


def reset(settings, *, profile: str = "small", seed: int = 0, force: bool = False,
          confirmed_name: str | None = None, anchor: str | None = None) -> ResetResult:
    from psycopg import sql

    from dbkit.migrate import _runner as runner
    from dbkit.seed import _engine as engine
    from dbkit.seed._context import format_anchor, parse_anchor

    if anchor is not None:  # a bad --anchor is refused before the database is dropped
        anchor = parse_anchor(anchor, variable="--anchor")
    url = target.resolve_url(settings, direct=True)
    name = url.dbname
    risky = []
    if settings.env in ("staging", "prod"):
        risky.append(f"DBKIT_ENV={settings.env}")
    if not is_local(url):
        risky.append(f"the host of {url.masked} is not local")
    if name in (None, "postgres", "template0", "template1"):
        raise Refused(f"reset refuses to drop the database {name!r}",
                      hint="point DATABASE_URL at an application database")
    if risky:
        settings.require_environment("reset")
        if not force:
            raise Refused(f"reset is refused: {' and '.join(risky)}", hint="pass --force and confirm the database name")
        if confirmed_name != name:
            raise Refused(f"reset of {name} needs the database name confirmed",
                          hint=f"type it when asked, or pass --yes-i-know {name}")
    t0 = time.perf_counter()
    with db.connect(url.with_dbname("postgres"), autocommit=True, connect_timeout=settings.connect_timeout) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrated = runner.upgrade(settings)
    seeded = engine.run(settings, profile=profile, seed=seed, allow_prod=True, yes=True, anchor=anchor)
    return ResetResult(name, migrated.after, sum(t.rows for t in seeded.tables), round(time.perf_counter() - t0, 3),
                       format_anchor(seeded.anchor))
