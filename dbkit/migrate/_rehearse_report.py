"""The verdict and the report of ``dbkit migrate rehearse`` (pure: no database).

A statement is flagged (exit 1) for a relation bigger than ``min_size`` that existed before the
revision (a table created in the same transaction is invisible to the application) when:

* **rewrite**: the table's relfilenode changed: every row was copied under ACCESS EXCLUSIVE;
* **scan**: it read the table with a sequential scan while its transaction held a lock that blocks the
  application's writes (SHARE, SHARE ROW EXCLUSIVE, EXCLUSIVE, ACCESS EXCLUSIVE: taken by this statement
  or an earlier one of the revision, since locks are held until commit): the writes wait as long as
  the scan takes, which grows with the table (SET NOT NULL, CREATE INDEX, a validated FOREIGN KEY or
  CHECK, a backfill in the same transaction as the ALTER);
* **lock**: it took such a lock and the revision held it longer than ``max_lock`` seconds.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from dbkit.migrate._rehearse_load import LoadWindow
from dbkit.migrate._rehearse_trace import WRITE_BLOCKING, LockTaken, StatementTrace, Touched

#: Relations up to this size are never flagged (``--min-size``).
DEFAULT_MIN_SIZE = 10 * 1024 * 1024
_TABLES = ("r", "p", "m")


def mode_name(mode: str) -> str:
    """``AccessExclusiveLock`` -> ``ACCESS EXCLUSIVE``."""
    return " ".join(re.findall(r"[A-Z][a-z]*", mode.removesuffix("Lock"))).upper()


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024


@dataclass
class Finding:
    """One verdict line: what a statement of a revision did to a relation, its figures, the safe way."""

    rule: str  # rewrite | scan | lock
    revision: str
    file: str
    line: int | None
    statement: str
    relation: str
    mode: str | None  # the write-blocking lock involved (ACCESS EXCLUSIVE, SHARE, …)
    figures: str
    alternative: str

    def describe(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = {"rewrite": "rewrites", "scan": "scans", "lock": "holds",
                "stall": "stalled the load on"}[self.rule]
        stmt = self.statement if len(self.statement) <= 120 else self.statement[:117] + "..."
        return (f"revision {self.revision} ({where}): {stmt!r} {what} {self.relation}: {self.figures}; "
                f"safe alternative: {self.alternative}")


@dataclass
class RevisionRun:
    revision: str
    file: str
    message: str
    duration_s: float
    statements: list[StatementTrace] = field(default_factory=list)
    start_s: float = 0.0  # since the run started


@dataclass
class RehearsalReport:
    source: str
    scratch: str | None
    copy_method: str  # clone | backup <id>
    target: str
    before: list[str]
    pending: list[str]
    min_size: int
    max_lock_s: float
    after: list[str] = field(default_factory=list)
    revisions: list[RevisionRun] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    failed: str | None = None  # the failing revision's message (it was rolled back on the scratch copy)
    kept: bool = False
    load_clients: int = 0
    load: list[LoadWindow] = field(default_factory=list)  # baseline first, then one per revision
    load_errors: list[str] = field(default_factory=list)  # the first few failed operations of the load
    copy_s: float = 0.0
    run_s: float = 0.0
    trace_s: float = 0.0  # of run_s, the tracer's own queries
    drop_s: float = 0.0
    total_s: float = 0.0

    @property
    def nothing_pending(self) -> bool:
        return not self.pending

    @property
    def ok(self) -> bool:
        return not self.findings and not self.failed

    def summary(self) -> str:
        if self.nothing_pending:
            return f"nothing to rehearse: {self.source} is at {', '.join(self.before) or 'base'} (target {self.target})"
        verdict = "FAIL" if not self.ok else "ok"
        extra = f"; revision failed: {self.failed}" if self.failed else ""
        kept = f"; scratch database {self.scratch} kept" if self.kept else ""
        return (f"{verdict}: {len(self.revisions)} of {len(self.pending)} revision(s) rehearsed on a "
                f"{self.copy_method} of {self.source}, {len(self.findings)} finding(s) "
                f"(min size {human_size(self.min_size)}, "
                f"max lock {self.max_lock_s:g}s); copy {self.copy_s:.2f}s, run {self.run_s:.2f}s (tracer "
                f"{self.trace_s:.2f}s), "
                f"total {self.total_s:.2f}s{extra}{kept}")

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, nothing_pending=self.nothing_pending, summary=self.summary(),
                    findings=[{**asdict(f), "message": f.describe()} for f in self.findings])
        return data


NO_ROWS = ("the load's clients read no rows in the baseline: its tables are empty, or the claims they set (ids "
           "from the owner columns of [tool.dbkit.rls]) match no row, so its figures say little")


# --------------------------------------------------------------------- the verdict

_ALTERNATIVES = [
    (r"\bCREATE\s+(UNIQUE\s+)?INDEX\b", "build it with op.create_index_concurrently (CREATE INDEX CONCURRENTLY, "
     "in its own revision): writes continue while it builds"),
    (r"\bREINDEX\b", "REINDEX … CONCURRENTLY"),
    (r"\bSET\s+NOT\s+NULL\b", "ADD CONSTRAINT … CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later "
     "revision (SHARE UPDATE EXCLUSIVE: writes continue), then SET NOT NULL (no scan since PostgreSQL 12) and drop "
     "the check"),
    (r"\bFOREIGN\s+KEY\b|\bREFERENCES\b", "ADD CONSTRAINT … FOREIGN KEY … NOT VALID, then VALIDATE CONSTRAINT in a "
     "later revision (SHARE UPDATE EXCLUSIVE: writes continue)"),
    (r"\bADD\s+(CONSTRAINT\s+\S+\s+)?(PRIMARY\s+KEY|UNIQUE)\b", "CREATE UNIQUE INDEX CONCURRENTLY, then ADD "
     "CONSTRAINT … USING INDEX"),
    (r"\bCHECK\b", "ADD CONSTRAINT … CHECK (…) NOT VALID, then VALIDATE CONSTRAINT in a later revision"),
    (r"\bADD\s+(COLUMN\b|\S+\s+\S+.*\bDEFAULT\b)", "add the column nullable without a default (or with a constant "
     "default: no rewrite since PostgreSQL 11), then backfill it in batches in later revisions"),
    (r"\bTYPE\b", "add a new column of the new type, backfill it in batches, switch the application, then drop the "
     "old column (binary-compatible changes such as varchar(n) -> text do not rewrite)"),
    (r"\bSET\s+TABLESPACE\b|\bCLUSTER\b|\bVACUUM\s+FULL\b", "pg_repack or pg_squeeze, which hold ACCESS "
     "EXCLUSIVE only briefly"),
    (r"^\s*(UPDATE|DELETE|INSERT)\b", "run the backfill in its own revision, after the statement that took the "
     "lock has committed, in batches (e.g. WHERE id BETWEEN …)"),
]
_LOCK_ALTERNATIVE = ("keep the lock-taking statement alone in its revision (locks are held until commit), move "
                     "slow statements out of that transaction, and keep lock_timeout short with retries")


def _alternative(sql: str, rule: str) -> str:
    fallback = _LOCK_ALTERNATIVE if rule == "lock" else ("split the change so that the table is not rewritten or "
                                                          "scanned under a lock that blocks writes")
    return next((text for pattern, text in _ALTERNATIVES if re.search(pattern, sql, re.IGNORECASE)), fallback)


def _strongest(modes) -> str | None:
    return max((m for m in modes if m in WRITE_BLOCKING), key=WRITE_BLOCKING.index, default=None)


def _rows(n: int | None) -> str:
    return "? rows" if n is None else f"~{n:,} rows"


def _sum(a: int | None, b: int | None) -> int | None:
    """``a + b``, a missing figure counting as 0; None when both are missing."""
    return None if a is None and b is None else (a or 0) + (b or 0)


def grouped(st: StatementTrace) -> tuple[list[Touched], list[LockTaken], dict[str, int]]:
    """The statement's relations with TimescaleDB chunks and partitions folded into the table the application
    sees (sizes and rows summed, the strongest modes kept): a hypertable or a partitioned table is judged
    as one table.  Also returns the number of chunks or partitions folded into each."""
    touched: dict[str, Touched] = {}
    for t in st.touched:
        key = t.parent or t.relation
        if key not in touched:
            touched[key] = replace(t, relation=key, modes_held=list(t.modes_held), parent=None,
                                   relkind="r" if t.parent else t.relkind)
            continue
        g = touched[key]
        g.size_before, g.rows = _sum(g.size_before, t.size_before), _sum(g.rows, t.rows)
        g.size_after += t.size_after
        g.rewritten, g.created = g.rewritten or t.rewritten, g.created and t.created
        g.scans, g.rows_read = g.scans + t.scans, g.rows_read + t.rows_read
        g.modes_held = sorted(set(g.modes_held) | set(t.modes_held))
    locks: dict[tuple[str, str], LockTaken] = {}
    for lk in st.locks:
        key = (lk.parent or lk.relation, lk.mode)
        if key not in locks:
            locks[key] = replace(lk, relation=key[0], parent=None, relkind="r" if lk.parent else lk.relkind)
            continue
        g = locks[key]
        g.size_bytes += lk.size_bytes
        g.rows = _sum(g.rows, lk.rows)
        g.created = g.created and lk.created
        g.held_s = None if g.held_s is None or lk.held_s is None else max(g.held_s, lk.held_s)
    return list(touched.values()), list(locks.values()), dict(Counter(t.parent for t in st.touched if t.parent))


def _statement_findings(run: RevisionRun, st: StatementTrace, min_size: int, max_lock_s: float) -> list[Finding]:
    found: dict[str, Finding] = {}
    all_touched, all_locks, chunks = grouped(st)

    def add(rule, relation, mode, figures):
        if relation not in found:
            found[relation] = Finding(rule, run.revision, run.file, st.line, st.sql, relation,
                                      mode_name(mode) if mode else None, figures, _alternative(st.sql, rule))

    held = {lock.relation: lock for lock in all_locks}
    for t in all_touched:
        size = max(t.size_before or 0, t.size_after)
        if t.created or t.relkind not in _TABLES or size <= min_size:
            continue
        mode = _strongest(t.modes_held)
        lock = held.get(t.relation)
        hold = f", held {lock.held_s:.3f}s until commit" if lock is not None and lock.held_s is not None else ""
        note = f" ({chunks[t.relation]} chunk(s) or partition(s))" if chunks.get(t.relation) else ""
        if t.rewritten:
            indexes = sum(1 for o in all_touched if o.rewritten and o.relkind in ("i", "I"))
            rebuilt = f", {indexes} index(es) rebuilt" if indexes else ""
            mode = mode or "AccessExclusiveLock"
            add("rewrite", t.relation, mode,
                f"table{note} rewritten ({human_size(t.size_before)} -> {human_size(t.size_after)}, {_rows(t.rows)}"
                f"{rebuilt}) under {mode_name(mode)}, statement {st.duration_s:.3f}s{hold}, "
                f"WAL {human_size(st.wal_bytes)}")
        elif t.scans and mode:
            add("scan", t.relation, mode,
                f"{t.scans} sequential scan(s){note} reading {t.rows_read:,} of {_rows(t.rows)} ({human_size(size)}) "
                f"while holding {mode_name(mode)}, which blocks writes; statement {st.duration_s:.3f}s{hold}")
    for lock in all_locks:
        if (lock.created or not lock.blocks_writes or lock.held_s is None or lock.held_s <= max_lock_s
                or lock.size_bytes <= min_size):
            continue
        add("lock", lock.relation, lock.mode,
            f"{mode_name(lock.mode)} ({human_size(lock.size_bytes)}, {_rows(lock.rows)}) held {lock.held_s:.3f}s "
            f"until commit, over --max-lock {max_lock_s:g}s")
    return list(found.values())


def verdict(runs: list[RevisionRun], *, min_size: int, max_lock_s: float) -> list[Finding]:
    """Every flagged statement of every revision, in the order they ran."""
    return [f for run in runs for st in run.statements if st.error is None
            for f in _statement_findings(run, st, min_size, max_lock_s)]


def stall_findings(runs: list[RevisionRun], load: list[LoadWindow], *, max_lock_s: float) -> list[Finding]:
    """A revision during which an operation of the load took longer than ``max_lock_s``; the statement
    named is the one that took the strongest write-blocking lock of the revision (else its first)."""
    found = []
    by_rev = {w.label: w for w in load}
    base = by_rev.get("baseline")
    for run in runs:
        w = by_rev.get(run.revision)
        if w is None or w.longest_stall_s is None or w.longest_stall_s <= max_lock_s or not run.statements:
            continue
        ranked = [(WRITE_BLOCKING.index(lk.mode), st, lk) for st in run.statements for lk in st.locks
                  if lk.blocks_writes and not lk.created]
        _, st, lock = max(ranked, key=lambda x: x[0]) if ranked else (0, run.statements[0], None)
        relation = lock.relation if lock else "the application's tables"
        baseline = (f"; without the migration p50 {base.p50_ms} ms, p99 {base.p99_ms} ms, longest "
                    f"{base.longest_stall_s:.3f}s" if base and base.longest_stall_s is not None else "")
        found.append(Finding("stall", run.revision, run.file, st.line, st.sql, relation,
                             mode_name(lock.mode) if lock else None,
                             f"an operation of the load waited {w.longest_stall_s:.3f}s (over --max-lock "
                             f"{max_lock_s:g}s); p50 {w.p50_ms} ms, p99 {w.p99_ms} ms over {w.ops} operations"
                             f"{baseline}", _alternative(st.sql, "lock")))
    return found


# --------------------------------------------------------------------- markdown (a pull-request comment)

def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: RehearsalReport) -> str:
    """The report as Markdown for a pull-request comment."""
    out = [f"### dbkit migrate rehearse: {'✅ ok' if report.ok else '❌ FAIL'}", "", _md(report.summary()), ""]
    if report.nothing_pending:
        return "\n".join(out)
    out += ["| revision | file | time | statements | findings |", "|---|---|---|---|---|"]
    for run in report.revisions:
        n = sum(1 for f in report.findings if f.revision == run.revision)
        out.append(f"| {run.revision} | {_md(run.file)} | {run.duration_s:.3f}s | {len(run.statements)} | {n} |")
    if report.load:
        out += ["", f"The application's view ({report.load_clients} clients as the enforce role):", "",
                "| window | operations | rows | errors | p50 ms | p99 ms | longest s |", "|---" * 7 + "|"]
        out += [f"| {w.label} | {w.ops} | {w.rows} | {w.errors} | {w.p50_ms} | {w.p99_ms} | {w.longest_stall_s} |"
                for w in report.load]
        if not report.load[0].rows:
            out += ["", NO_ROWS]
    if report.findings:
        out += ["", "| revision | statement | relation | finding | safe alternative |", "|---|---|---|---|---|"]
        for f in report.findings:
            stmt = f.statement if len(f.statement) <= 100 else f.statement[:97] + "..."
            out.append(f"| {f.revision} ({_md(f.file)}:{f.line or '?'}) | `{_md(stmt)}` | {_md(f.relation)} | "
                       f"**{f.rule}**: {_md(f.figures)} | {_md(f.alternative)} |")
    if report.failed:
        out += ["", f"**Revision failed** (rolled back on the scratch copy): {_md(report.failed)}"]
    return "\n".join(out) + "\n"
