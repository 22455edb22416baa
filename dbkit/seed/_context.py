"""What a seeder gets: seeded random sources, Faker pools, parent rows, vectors, the time window.

Everything is derived from ``(seed, table)``, so a table's contents do not depend
on which other tables are seeded in the same run, nor on their order.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any


def parse_anchor(value: str | date | datetime, *, variable: str = "--anchor") -> datetime:
    """The "now" that time series count back from, as an aware UTC datetime.

    An ISO date means midnight UTC, a timestamp without a zone is UTC; anything else is one
    ConfigError naming ``variable`` (``--anchor`` or ``DBKIT_SEED_ANCHOR``) with an example.
    """
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime.combine(value, time())
    else:
        text = str(value).strip()
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            from dbkit.errors import ConfigError

            shown = text if len(text) <= 40 else text[:40] + "…"
            raise ConfigError(variable, f"is {shown!r}, not an ISO date or timestamp",
                              purpose='fixes the "now" that seeded time series end at',
                              example=f"{variable} 2026-01-01 (midnight UTC) or 2026-01-01T12:00:00+00:00"
                              if variable.startswith("--") else f"{variable}=2026-01-01") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def default_anchor(now: datetime | None = None) -> datetime:
    """The start of the current day in UTC: two runs on the same day write the same rows."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def format_anchor(when: datetime) -> str:
    """``2026-01-01`` for midnight UTC, the full UTC timestamp otherwise: what ``--anchor`` takes back."""
    utc = when.astimezone(UTC)
    return f"{utc:%Y-%m-%d}" if utc == default_anchor(utc) else utc.isoformat()


def _int_seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big")


class FakerPools:
    """Faker values generated once per run and per (provider, size), seeded; sampled by seeders."""

    def __init__(self, seed: int, locale: str = "en_US") -> None:
        self.seed, self.locale = seed, locale
        self._pools: dict[tuple[str, int], list[Any]] = {}

    def get(self, provider: str, size: int) -> list[Any]:
        key = (provider, size)
        if key not in self._pools:
            from faker import Faker

            fake = Faker(self.locale, use_weighting=False)
            fake.seed_instance(_int_seed(self.seed, provider, size))
            make = getattr(fake, provider)
            self._pools[key] = [make() for _ in range(size)]
        return self._pools[key]


class SeedContext:
    """Handed to each seeder function.

    ``rows``        how many rows to produce
    ``rng``         ``random.Random`` seeded by (seed, table)
    ``np``          ``numpy.random.Generator`` seeded by (seed, table)
    ``anchor``      the run's "now" (aware, UTC): ``--anchor``, DBKIT_SEED_ANCHOR or the start of today (UTC)
    ``window``      how far back time series go: :meth:`times` spreads them over ``(anchor - window, anchor)``
    """

    def __init__(self, *, table: str, rows: int, seed: int, profile: str, conn, schema: str,
                 pools: FakerPools, anchor: datetime, tenant_skew: float = 0.0, window_days: int = 30) -> None:
        import numpy

        self.table, self.rows, self.seed, self.profile = table, rows, seed, profile
        self.schema, self._conn, self._pools = schema, conn, pools
        self.tenant_skew = tenant_skew
        self.rng = random.Random(_int_seed(seed, table))
        self.np = numpy.random.default_rng(_int_seed(seed, table, "numpy"))
        self.anchor = parse_anchor(anchor)
        self.window = timedelta(days=window_days)
        self.copying = False  # set by the engine once the first row was produced

    # ------------------------------------------------------------------ identifiers

    def uuid(self) -> uuid.UUID:
        """A version-4 UUID from the seeded generator."""
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    # ------------------------------------------------------------------ parents

    def fetch(self, table: str, *columns: str) -> list[tuple]:
        """Rows of an already seeded table (as the loader sees them), ordered by the given columns."""
        from psycopg import sql

        if self.copying:
            raise RuntimeError(f"seeder for {self.table}: read parent rows (ctx.fetch/ctx.ids) before the first "
                               "yield; once rows flow, the connection is busy with COPY")
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        query = sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
            cols, sql.Identifier(self.schema), sql.Identifier(table), cols)
        return self._conn.execute(query).fetchall()

    def ids(self, table: str, column: str = "id") -> list[Any]:
        return [r[0] for r in self.fetch(table, column)]

    # ------------------------------------------------------------------ sampling

    def weights(self, n: int) -> list[float]:
        """Probabilities over ``n`` items: uniform, or Zipf-like (``1/rank**tenant_skew``) when skewed."""
        raw = [1.0 / (i + 1) ** self.tenant_skew for i in range(n)]
        total = sum(raw)
        return [w / total for w in raw]

    def spread(self, items: Sequence[Any], k: int) -> list[Any]:
        """``k`` picks from ``items`` following the tenant distribution (uniform or skewed)."""
        return self.sample(items, k, self.weights(len(items)) if self.tenant_skew else None)

    def sample(self, items: Sequence[Any], k: int, p: Sequence[float] | None = None) -> list[Any]:
        """``k`` picks from ``items`` with replacement (probabilities ``p``, default uniform); vectorized."""
        import numpy

        if not items:
            raise ValueError(f"seeder for {self.table}: nothing to pick from (is the parent table empty?)")
        if p is not None:
            p = numpy.asarray(p, dtype=numpy.float64)
            p = p / p.sum()
        idx = self.np.choice(len(items), size=k, p=p)
        pool = numpy.empty(len(items), dtype=object)
        pool[:] = list(items)
        return pool[idx].tolist()

    def pool(self, provider: str, size: int = 1000) -> list[Any]:
        """A list of ``size`` values of a Faker provider (``name``, ``sentence``, ...), made once per run."""
        return self._pools.get(provider, size)

    # ------------------------------------------------------------------ vectors and time

    def vector_dim(self, table: str, column: str) -> int:
        """The dimension of a pgvector column, read from its type (``vector(384)`` -> 384)."""
        row = self._conn.execute(
            "SELECT a.atttypmod FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
            (f'"{self.schema}"."{table}"', column),
        ).fetchone()
        if row is None or row[0] is None or row[0] < 1:
            raise ValueError(f"{self.schema}.{table}.{column} is not a vector column with a dimension")
        return int(row[0])

    def unit_vectors(self, n: int, dim: int):
        """``n`` deterministic unit-length float32 vectors (an ``n x dim`` numpy array)."""
        import numpy

        v = self.np.standard_normal((n, dim), dtype=numpy.float32)
        v /= numpy.linalg.norm(v, axis=1, keepdims=True)
        return v

    def times(self, n: int) -> list[datetime]:
        """``n`` timestamps evenly spread over the window ending at the anchor, oldest first: the newest
        is one step (``window / n``) before the anchor; a later anchor shifts them all by the difference."""
        import itertools

        if n <= 0:
            return []
        step = self.window / n  # timedelta arithmetic is exact in microseconds, so every run agrees
        return list(itertools.accumulate(itertools.repeat(step, n - 1), initial=self.anchor - self.window))
