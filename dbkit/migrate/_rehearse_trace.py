"""The tracer of ``dbkit migrate rehearse``: what each statement of each revision locks, rewrites, scans and writes.

Mechanism: SQLAlchemy's ``before_cursor_execute`` / ``after_cursor_execute`` / ``commit`` / ``rollback``
/ ``handle_error`` events, listened for on the :class:`~sqlalchemy.engine.Engine` class (every engine,
so the one :func:`dbkit.migrate._session.migration_connection` builds too: no change to env.py or the
session) and filtered to connections to the scratch database.  Around each statement issued by a
revision's code (found on the stack, as :func:`dbkit.migrate._runner_run._failing_revision` finds a
failing one) the tracer asks **the migrating connection itself**, in the revision's transaction, for
``pg_locks`` of its own backend, ``pg_class`` (relfilenode, reltuples, size) of the locked relations,
the transaction's scan counters (``pg_stat_get_xact_numscans`` / ``_tuples_returned``) and the WAL
insert position.  A second connection would not do: the relfilenode a rewrite gives a table is not
visible to other sessions until the revision commits.

Locks taken in a revision's transaction are held until its commit (or until an autocommit block,
such as ``op.create_index_concurrently``, commits it): each lock's hold time runs from the start of
the statement that took it to that commit.  Statements run outside a transaction (CONCURRENTLY)
release their locks when they end, so none are seen after them.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbkit import _db as db
from dbkit._urls import mask_secrets
from dbkit.errors import OperationFailed


class TraceFailed(OperationFailed):
    """The tracer's own query failed on the migrating connection (the rehearsal, not the revision, failed)."""


#: Lock modes that block the application's INSERT/UPDATE/DELETE (ROW EXCLUSIVE conflicts with them).
WRITE_BLOCKING = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")

_REL_FILTER = """
  c.oid >= 16384 AND c.relkind IN ('r', 'p', 'm', 'i', 'I')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast', 'dbkit')
  AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                  AND d.deptype = 'e')"""

_LOCKS = f"""
SELECT pg_current_wal_insert_lsn()::text, coalesce(json_agg(json_build_array(
         c.oid::int8, l.mode, pg_stat_get_xact_numscans(c.oid), pg_stat_get_xact_tuples_returned(c.oid),
         c.relfilenode::int8, c.relkind, c.reltuples, pg_table_size(c.oid),
         format('%I.%I', n.nspname, c.relname))), '[]')
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = pg_backend_pid() AND l.locktype = 'relation' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND {_REL_FILTER}
"""

#: Before each statement: the WAL position and the relation locks already held (no sizes: cheap).
_HELD = """
SELECT pg_current_wal_insert_lsn()::text, coalesce(array_agg(relation::int8 || ' ' || mode), '{}')
FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted AND relation >= 16384
"""

_SNAPSHOT = f"""
SELECT c.oid::int8, c.relfilenode::int8, CASE WHEN c.relkind IN ('r', 'p', 'm') THEN pg_table_size(c.oid) END,
       pg_stat_get_xact_numscans(c.oid),
       pg_stat_get_xact_tuples_returned(c.oid), format('%I.%I', n.nspname, c.relname), c.relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE {_REL_FILTER}
"""


_CHUNKS = """
SELECT format('%I.%I', c.schema_name, c.table_name), format('%I.%I', h.schema_name, h.table_name)
FROM _timescaledb_catalog.chunk c JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
"""

#: Partitions (and their indexes' tables) -> the partitioned table at the root.
_PARTITIONS = """
SELECT format('%I.%I', n.nspname, c.relname), format('%I.%I', rn.nspname, r.relname)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class r ON r.oid = pg_partition_root(c.oid) JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.relispartition AND c.relkind IN ('r', 'p')
"""

_OBSERVED = f"""
SELECT c.oid::int8, l.mode, c.relkind, c.reltuples, pg_table_size(c.oid), format('%%I.%%I', n.nspname, c.relname)
FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = %s AND l.locktype = 'relation' AND l.granted AND {_REL_FILTER}
"""


class LockSampler:
    """Samples, from a second connection, the relation locks a backend holds while one statement runs
    outside a transaction (CONCURRENTLY, autocommit blocks): they end with the statement, so the
    migrating connection cannot see them afterwards.  Statements shorter than ``interval`` may be missed."""

    def __init__(self, url, pid: int, interval: float = 0.005) -> None:
        self.pid, self.interval = pid, interval
        self.conn = db.connect(url, autocommit=True, connect_timeout=5)

    def start(self) -> None:
        self.seen: dict[tuple[int, str], list] = {}  # (oid, mode) -> [row, first seen, last seen]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dbkit-rehearse-locks", daemon=True)
        self._thread.start()

    def stop(self) -> dict[tuple[int, str], list]:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.seen

    def close(self) -> None:
        self.stop()
        self.conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.conn.execute(_OBSERVED, (self.pid,)).fetchall()
            except Exception:  # noqa: BLE001 - sampling must never break the rehearsal
                return
            now = time.perf_counter()
            for row in rows:
                entry = self.seen.setdefault((row[0], row[1]), [row, now, now])
                entry[2] = now
            self._stop.wait(self.interval)


@dataclass
class LockTaken:
    """A lock a statement took: held from the statement's start to the commit (``held_s``)."""

    relation: str
    relkind: str
    mode: str
    size_bytes: int
    rows: int | None  # reltuples: PostgreSQL's estimate (None: never analyzed)
    created: bool  # the relation was created in the same transaction: nobody else can see it
    held_s: float | None = None  # None while the transaction is open
    parent: str | None = None  # a TimescaleDB chunk or a partition: the table the application sees

    @property
    def blocks_writes(self) -> bool:
        return self.mode in WRITE_BLOCKING


@dataclass
class Touched:
    """A relation the statement held a lock on afterwards (or just released, outside a transaction)."""

    relation: str
    relkind: str
    size_before: int | None
    size_after: int
    rows: int | None
    rewritten: bool  # relfilenode changed: every row was copied
    created: bool
    scans: int  # sequential/index scans this statement ran on it
    rows_read: int  # tuples its sequential scans returned
    modes_held: list[str]  # every lock mode the transaction holds on it after the statement
    parent: str | None = None  # a TimescaleDB chunk or a partition: the table the application sees


@dataclass
class StatementTrace:
    revision: str
    file: str
    line: int | None
    sql: str
    started_s: float  # since the run started
    duration_s: float = 0.0
    autocommit: bool = False  # outside a transaction (CONCURRENTLY): its locks ended with it
    wal_bytes: int | None = None
    locks: list[LockTaken] = field(default_factory=list)
    touched: list[Touched] = field(default_factory=list)
    error: str | None = None
    parts: int = 0  # TimescaleDB chunks and partitions it touched


def _lsn(text: str) -> int:
    hi, _, lo = text.partition("/")
    return (int(hi, 16) << 32) + int(lo, 16)


def _rows(reltuples: float) -> int | None:
    return None if reltuples is None or reltuples < 0 else int(reltuples)


def _revision_frame(prefixes: tuple[str, ...]) -> tuple[str, str, int] | None:
    """(revision id, file name, line) of the revision module whose code issued the statement."""
    frame = sys._getframe(2)
    while frame is not None:
        g = frame.f_globals
        rev = g.get("revision")
        if isinstance(rev, str) and "down_revision" in g and frame.f_code.co_filename.startswith(prefixes):
            return rev, Path(frame.f_code.co_filename).name, frame.f_lineno
        frame = frame.f_back
    return None


class Tracer:
    """Listens to SQLAlchemy's engine events while installed (a context manager), for one database."""

    def __init__(self, dbname: str, migrations_dir: str, url) -> None:
        self.dbname, self.url = dbname, url
        self._sampler: LockSampler | None = None
        folder = Path(migrations_dir)
        self.prefixes = tuple(dict.fromkeys((str(folder.absolute()), str(folder.resolve()))))
        self.statements: list[StatementTrace] = []
        self.commits: dict[str, float] = {}  # revision -> time (since t0) of its last commit
        self.own_s = 0.0  # time spent in the tracer's own queries (its overhead)
        self.t0 = time.perf_counter()
        self._pending: StatementTrace | None = None
        self._counters: dict[int, tuple[int, int]] = {}  # oid -> (scans, rows read) of the transaction so far
        self._held_before: set[tuple[int, str]] = set()
        self._lsn_before = 0
        self._t_start = 0.0
        self._held: dict[tuple[int, str], tuple[LockTaken, float]] = {}  # the open transaction's locks and their start
        self._created: set[int] = set()
        self._files: dict[int, int] | None = None  # oid -> relfilenode, taken when a revision starts
        self._sizes: dict[int, int] = {}
        self._revision: str | None = None
        self._parents: dict[str, str] = {}  # chunk or partition -> its table

    # ---------------------------------------------------------------- install / remove
    def __enter__(self) -> Tracer:
        self._listen(True)
        return self

    def __exit__(self, *exc) -> None:
        self._listen(False)
        if self._sampler is not None:
            self._sampler.close()

    def _listen(self, on: bool) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        for name, fn in [("before_cursor_execute", self._on_before), ("after_cursor_execute", self._on_after),
                         ("commit", self._on_end), ("rollback", self._on_end), ("handle_error", self._on_error)]:
            if on:
                event.listen(Engine, name, fn)
            elif event.contains(Engine, name, fn):
                event.remove(Engine, name, fn)

    # ---------------------------------------------------------------- helpers
    def _raw(self, conn):
        try:
            raw = conn.connection.dbapi_connection
        except Exception:  # noqa: BLE001 - a closed or invalidated connection is not ours to trace
            return None
        info = getattr(raw, "info", None)
        return raw if info is not None and getattr(info, "dbname", None) == self.dbname else None

    @staticmethod
    def _query(raw, sql: str):
        """One catalog query on the migrating connection.  Should it fail (a revision's own SET, a timeout), the
        revision's transaction is lost: the rehearsal stops with one line saying so, never a wrong verdict."""
        import psycopg

        try:
            with raw.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()
        except psycopg.Error as exc:
            raise TraceFailed(f"the rehearsal's tracer could not read the catalog on the scratch database: "
                              f"{' '.join(str(exc).split())[:200]}",
                              hint="rerun with -v; the revisions themselves were not judged") from exc

    # ---------------------------------------------------------------- events
    def _on_before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        raw = self._raw(conn)
        if raw is None:
            return
        where = _revision_frame(self.prefixes)
        if where is None:
            self._pending = None
            return
        rev, filename, lineno = where
        t_own = time.perf_counter()
        if rev != self._revision or self._files is None:
            self._revision = rev
            self._files, self._sizes, self._counters = {}, {}, {}
            for oid, filenode, size, scans, read, _, _ in self._query(raw, _SNAPSHOT):
                self._files[oid], self._sizes[oid], self._counters[oid] = filenode, size, (scans, read)
            parts = self._query(raw, _PARTITIONS)
            if self._query(raw, "SELECT to_regclass('_timescaledb_catalog.chunk') IS NOT NULL")[0][0]:
                parts += self._query(raw, _CHUNKS)
            self._parents = dict(parts)
        lsn, held = self._query(raw, _HELD)[0]
        self._lsn_before = _lsn(lsn)
        self._held_before = {(int(oid), mode) for oid, _, mode in (h.partition(" ") for h in held)}
        text = mask_secrets(" ".join(str(statement).split()))  # the report may be posted on a pull request
        self._pending = StatementTrace(rev, filename, lineno, text, time.perf_counter() - self.t0,
                                       autocommit=bool(raw.autocommit))
        if raw.autocommit:
            if self._sampler is None:
                self._sampler = LockSampler(self.url, raw.info.backend_pid)
            self._sampler.start()
        self._t_start = time.perf_counter()
        self.own_s += self._t_start - t_own

    def _on_after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        st, self._pending = self._pending, None
        if st is None:
            return
        t_own = time.perf_counter()
        st.duration_s = t_own - self._t_start
        raw = self._raw(conn)
        if st.autocommit:
            self._after_autocommit(raw, st)
        lsn, locks = self._query(raw, _LOCKS)[0]  # psycopg loads the json array
        st.wal_bytes = max(0, _lsn(lsn) - self._lsn_before)
        by_oid: dict[int, list] = {}
        for r in locks:
            by_oid.setdefault(r[0], []).append(r)
        for oid, entries in by_oid.items():
            _, _, scans, read, filenode, relkind, reltuples, size, name = entries[0]
            known = self._files.get(oid)
            created = oid in self._created or known is None
            if created:
                self._created.add(oid)
            scans0, read0 = self._counters.get(oid, (0, 0))
            self._counters[oid] = (scans or 0, read or 0)
            st.touched.append(Touched(
                relation=name, relkind=relkind, size_before=self._sizes.get(oid), size_after=size,
                rows=_rows(reltuples), rewritten=bool(known) and bool(filenode) and filenode != known,
                created=created, scans=max(0, (scans or 0) - scans0), rows_read=max(0, (read or 0) - read0),
                modes_held=sorted(e[1] for e in entries)))
            self._files[oid] = filenode
            for e in entries:
                key = (oid, e[1])
                if key in self._held_before or key in self._held:
                    continue
                lock = LockTaken(name, relkind, e[1], max(size, self._sizes.get(oid) or 0), _rows(reltuples),
                                 created)
                st.locks.append(lock)
                self._held[key] = (lock, self._t_start)
        for item in [*st.touched, *st.locks]:
            item.parent = self._parents.get(item.relation)
        st.parts = sum(1 for t in st.touched if t.parent)
        self.statements.append(st)
        self.own_s += time.perf_counter() - t_own

    def _after_autocommit(self, raw, st: StatementTrace) -> None:
        """Outside a transaction: the locks the sampler saw (held at most while the statement ran), and the
        relations whose relfilenode changed or that are new (compared with the revision's snapshot)."""
        seen = self._sampler.stop()
        for (oid, mode), (row, first, last) in seen.items():
            _, _, relkind, reltuples, size, name = row
            st.locks.append(LockTaken(name, relkind, mode, size, _rows(reltuples), oid not in self._files,
                                      held_s=min(st.duration_s, last - first + self._sampler.interval)))
        for oid, filenode, size, _, _, name, relkind in self._query(raw, _SNAPSHOT):
            known = self._files.get(oid)
            if known is None or (known and filenode and known != filenode):
                st.touched.append(Touched(name, relkind, self._sizes.get(oid), size or 0, None, known is not None,
                                          known is None, 0, 0, []))
                self._files[oid], self._sizes[oid] = filenode, size

    def _on_error(self, context) -> None:
        st, self._pending = self._pending, None
        if st is None or self._raw(context.connection) is None:
            return
        if self._sampler is not None:
            self._sampler.stop()
        st.duration_s = time.perf_counter() - self._t_start
        st.error = " ".join(str(context.original_exception).split())[:300]
        self.statements.append(st)

    def _on_end(self, conn) -> None:
        """Commit or rollback: every lock of the transaction is released now."""
        if self._raw(conn) is None:
            return
        end = time.perf_counter()
        for lock, start in self._held.values():
            lock.held_s = end - start
        self._held, self._created = {}, set()
        self._files = None  # a rollback puts the old relfilenodes back: read them again
        if self._revision is not None:
            self.commits[self._revision] = end - self.t0
