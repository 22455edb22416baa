"""``dbkit migrate rehearse --load N``: the application's view of the rehearsal.

N client threads, each on its own connection to the scratch database, run scoped transactions as the
enforce role (``SET LOCAL ROLE`` and the RLS claims of the project's model through :func:`dbkit.rls.scoped`,
as the application does, with a tenant and a user id sampled from the tables' owner columns): three reads
(``SELECT … LIMIT 20``) for each write (``UPDATE t SET <owner column> = <owner column>`` of one row: a real
row lock and ROW EXCLUSIVE, changing nothing) on the application's tables the enforce role may use.  The
owner column of a table is the model's (``[tool.dbkit.rls]``, per table too).  Every operation's start and
latency is kept; :func:`windows` cuts them into the baseline (the same load before the first revision) and
each revision's run.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass

from dbkit import _db as db
from dbkit.errors import MissingDependency

_TABLES = """
SELECT format('%%I.%%I', n.nspname, c.relname), c.relname, has_table_privilege(%(role)s, c.oid, 'UPDATE'),
       ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0
             AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND has_table_privilege(%(role)s, c.oid, 'SELECT')
ORDER BY 1
"""


@dataclass
class LoadWindow:
    label: str  # "baseline" or a revision id
    ops: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    longest_stall_s: float | None  # the slowest operation that spent most of its time in the window
    rows: int = 0  # rows the operations read or wrote (0 in the baseline: the claims match no data)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def windows(samples, spans: list[tuple[str, float, float]]) -> list[LoadWindow]:
    """One :class:`LoadWindow` per ``(label, start, end)``: the operations (``(start, seconds, ok, rows)``)
    that overlapped it (ops, errors, percentiles, rows), and the longest of those that spent most of their time
    in it.  An operation blocked by one revision's lock ends just after that revision commits, so it overlaps
    the next revision by a few milliseconds (more on a busy machine): its stall belongs to the revision that
    held it."""

    def overlap(s: float, d: float, start: float, end: float) -> float:
        return min(end, s + d) - max(start, s)

    own: list[list[float]] = [[] for _ in spans]  # per span, the samples that overlapped it most (the first on a tie)
    for s, d, _, _ in samples:
        best = max(range(len(spans)), key=lambda k: (overlap(s, d, *spans[k][1:]), -k), default=None)
        if best is not None and overlap(s, d, *spans[best][1:]) > 0:
            own[best].append(d)
    out = []
    for k, (label, start, end) in enumerate(spans):
        hit = [(d, ok, rows) for s, d, ok, rows in samples if s < end and s + d > start]
        lat = [d for d, ok, _ in hit if ok]
        out.append(LoadWindow(label, len(hit), sum(1 for _, ok, _ in hit if not ok),
                              None if not lat else round(_pct(lat, 50) * 1000, 3),
                              None if not lat else round(_pct(lat, 99) * 1000, 3),
                              None if not own[k] else round(max(own[k]), 4), sum(n for _, _, n in hit)))
    return out


class Load:
    """``with Load(settings, url, clients) as load:`` … ``load.samples``: (start, seconds, ok, rows) per
    operation, start on ``time.perf_counter()``'s clock."""

    def __init__(self, settings, url, clients: int) -> None:
        self.settings, self.url, self.clients = settings, url, clients
        self.samples: list[tuple[float, float, bool]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.role = settings.role_enforce[0] if settings.role_enforce else None
        self.tables: list[tuple[str, str | None]] = []  # (table, the column its write sets, or None: read only)
        self.owners: dict[str, list[str]] = {}  # "tenant"/"user" -> ids sampled from a table they own

    def __enter__(self) -> Load:
        """Reads the tables and tenants the clients use, checks that the connecting role may act as the enforce
        role, and starts the clients."""
        from psycopg import errors, sql

        if self.role is None:
            raise MissingDependency("--load needs an enforce role (DBKIT_ROLE_ENFORCE): the clients act as it")
        from dbkit.rls._scoped import owner_and_column

        with db.connect(self.url, autocommit=True, connect_timeout=self.settings.connect_timeout) as conn:
            for table, name, can_update, columns in conn.execute(
                    _TABLES, {"role": self.role, "schema": self.settings.schema}).fetchall():
                if self.settings.rls_model == "none":  # no owner: a write sets the first column
                    self.tables.append((table, columns[0] if can_update and columns else None))
                    continue
                owner, column = owner_and_column(self.settings, name)
                owned = column in columns
                self.tables.append((table, column if owned and can_update else None))
                if owned and owner not in self.owners:
                    self.owners[owner] = [r[0] for r in conn.execute(
                        f"SELECT DISTINCT {db.quote_ident(column)}::text FROM {table} LIMIT 100")]
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(self.role)))
            except errors.InsufficientPrivilege:
                raise MissingDependency(
                    f"--load runs its clients as the enforce role {self.role} (SET ROLE), which the connecting role "
                    "may not become", hint=f"GRANT {self.role} TO <the role of DATABASE_URL>, or rehearse without "
                    "--load") from None
        if not self.tables:
            raise MissingDependency(f"--load found no table in schema {self.settings.schema} that {self.role} may read")
        self._threads = [threading.Thread(target=self._client, args=(i,), name=f"dbkit-rehearse-load-{i}", daemon=True)
                         for i in range(self.clients)]
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _client(self, index: int) -> None:
        from dbkit.rls import claims, scoped

        rng = random.Random(index)
        model = claims(self.settings)
        writable = [(t, c) for t, c in self.tables if c]
        try:
            conn = db.connect(self.url, connect_timeout=self.settings.connect_timeout)
        except Exception as exc:  # noqa: BLE001 - reported, never raised into the rehearsal
            self.errors.append(str(exc))
            return
        conn.prepare_threshold = None  # a prepared SELECT * fails once a revision adds a column
        with conn:
            n = 0
            while not self._stop.is_set():
                n += 1
                ids = {owner: rng.choice(values) for owner, values in self.owners.items() if values}
                write = writable and n % 4 == 0
                if write:
                    table, column = rng.choice(writable)
                    sql = (f"UPDATE {table} SET {db.quote_ident(column)} = {db.quote_ident(column)} WHERE ctid = "
                           f"(SELECT ctid FROM {table} LIMIT 1)")
                else:
                    sql = f"SELECT * FROM {rng.choice(self.tables)[0]} LIMIT 20"
                t0 = time.perf_counter()
                ok, rows = True, 0
                try:
                    with scoped(conn, tenant_id=ids.get("tenant"), user_id=ids.get("user"), role=self.role,
                                claims=model):
                        cur = conn.execute(sql)
                        rows = cur.rowcount if write else len(cur.fetchall())
                except Exception as exc:  # noqa: BLE001 - a failed operation is a figure (errors), not a crash
                    ok = False
                    if len(self.errors) < 20:
                        self.errors.append(" ".join(str(exc).split())[:200])
                    if conn.closed:
                        return
                self.samples.append((t0, time.perf_counter() - t0, ok, rows))
