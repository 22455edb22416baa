"""Lock-safety lint of migration SQL with squawk.

``dbkit migrate lint`` hands the offline SQL of each revision (Alembic's
``--sql`` output) to :func:`lint_sql`, which runs the real `squawk
<https://squawkhq.com>`_ linter (PyPI ``squawk-cli``) and turns its JSON report
into :class:`Violation` records.  dbkit has no rules of its own: every finding
is one of squawk's.

How squawk is run, once per revision, SQL on stdin::

    squawk --config /dev/null --reporter json [--exclude=RULE ...] [--pg-version=V]

Decisions, so that nothing is dropped silently:

* **One run per revision.**  Each revision is linted on its own, as if applied
  to a database that already has the previous revisions (online, dbkit runs
  every revision in its own transaction).  So ``CREATE INDEX`` on a table an
  *earlier* revision created is flagged; on a table created in the *same*
  revision it is not (squawk's own rule).
* **Transactions are what the SQL says.**  ``--assume-in-transaction`` is not
  used: Alembic writes its ``BEGIN;``/``COMMIT;`` itself (and ``COMMIT;`` …
  ``BEGIN;`` around an ``autocommit_block``).  The items may be whole scripts
  (``alembic upgrade a:b --sql``, one per revision) or consecutive pieces of one
  script cut at its ``-- Running upgrade`` comments.  For the latter,
  :func:`lint_sql` follows the transaction state from item to item and, when
  a piece starts or ends inside Alembic's transaction, wraps it in a synthetic
  ``BEGIN;``/``COMMIT;`` line, so squawk sees the state each statement really
  runs in: no ``ban-uncommitted-transaction``/``transaction-nesting``/
  ``prefer-robust-stmts`` noise from the cut, while ``CREATE INDEX
  CONCURRENTLY`` inside Alembic's transaction is still reported
  (``ban-concurrent-index-creation-in-transaction``).  Findings located on the
  synthetic lines are discarded (none are expected).  Items are assumed to
  start outside a transaction.
* **Alembic's bookkeeping is not linted.**  Findings on statements that create,
  fill, update or drop the ``alembic_version`` table (e.g. ``prefer-text-field``
  on its ``VARCHAR(32)``) are discarded, whatever the rule: that table belongs
  to Alembic, not to the migration's author.  Comments such as ``-- Running
  upgrade`` never produce findings.
* **Everything else squawk reports is kept**, including
  ``require-lock-timeout``/``require-statement-timeout`` (the SQL itself does not
  set the timeouts) and ``syntax-error``.  Rules are skipped only through
  ``ignore`` (``DBKIT_LINT_IGNORE``).
* **No .squawk.toml.**  squawk would pick one up from the working directory or
  its parents; ``--config /dev/null`` keeps dbkit's settings the only input.
* **Rule names are checked by squawk itself**: it has no command that lists its
  rules, but rejects an unknown ``--exclude`` name (exit code 2, ``invalid rule
  name``), so ``ignore`` is checked against the installed squawk's own rules.
* **Positions**: squawk's JSON gives 0-based lines and UTF-8 byte columns;
  :attr:`Violation.line` is 1-based within the revision's SQL as given.  The
  statement text is cut out of that SQL with PostgreSQL's own scanner (libpg_query,
  through pglast), which also tells which statements open or close a transaction.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dbkit.errors import ConfigError, DbkitError, MissingDependency

SQUAWK_TIMEOUT = 120  # seconds, per run
STATEMENT_MAX = 200


@dataclass(frozen=True)
class Violation:
    revision: str  # revision id the SQL came from
    rule: str  # squawk rule name, e.g. "require-concurrent-index-creation"
    message: str  # squawk's message (one line)
    statement: str  # the offending statement, whitespace-collapsed, at most STATEMENT_MAX chars
    line: int | None  # 1-based line within that revision's SQL, when squawk reports it
    help: str | None = None


def find_squawk() -> str:
    """Path of the squawk executable: next to ``sys.executable`` (the venv's bin) first, then PATH."""
    exe = (sys.executable and shutil.which("squawk", path=str(Path(sys.executable).parent))) or shutil.which("squawk")
    if exe is None:
        raise MissingDependency("the SQL migration linter 'squawk' is not installed (neither next to Python nor on "
                                "PATH)", hint="pip install squawk-cli")
    return exe


def lint_sql(items: Sequence[tuple[str, str]], *, ignore: Sequence[str] = (), pg_version: str | None = None,
             version_table: str = "alembic_version") -> list[Violation]:
    """Lint each ``(revision_id, sql_text)`` pair with squawk; violations in input order.

    ``ignore``: squawk rule names to skip (comma-separated entries are split).  Statements on Alembic's
    version table (``version_table``, DBKIT_VERSION_TABLE) are Alembic's own bookkeeping: not reported.
    Unknown names raise :class:`ConfigError` naming ``DBKIT_LINT_IGNORE``; a
    squawk that fails or prints something other than its JSON report raises
    :class:`DbkitError`; no squawk at all raises :class:`MissingDependency`.
    """
    if isinstance(ignore, str):
        ignore = [ignore]
    names = (part.strip().lower() for entry in ignore for part in str(entry).split(","))
    rules = list(dict.fromkeys(name for name in names if name))
    exe = find_squawk()
    _check_rules(exe, rules)  # runs squawk only when there are rules to check
    args = [f"--exclude={rule}" for rule in rules]
    if pg_version is not None and str(pg_version).strip():
        args.append(f"--pg-version={str(pg_version).strip()}")

    violations: list[Violation] = []
    in_transaction = False
    for revision, sql in items:
        spans = _statement_spans(sql)
        prefix = "BEGIN;\n" if in_transaction else ""
        in_transaction = _transaction_state_after(sql, spans, in_transaction)
        suffix = ""
        if in_transaction:
            suffix = ("" if not sql or sql.endswith("\n") else "\n") + "COMMIT;\n"
        text = prefix + sql + suffix
        res = _run(exe, args, text)
        if res.returncode not in (0, 1):
            raise _failure(res, f"squawk failed on revision {revision}")
        reported = _parse_report(res, revision)
        violations.extend(_violations(revision, sql, spans, reported, text, len(prefix), bool(suffix),
                                      _bookkeeping(version_table)))
    return violations


# -- running squawk ------------------------------------------------------------


def _run(exe: str, args: Sequence[str], sql: str) -> subprocess.CompletedProcess[str]:
    cmd = [exe, "--config", os.devnull, "--reporter", "json", *args]
    try:
        return subprocess.run(cmd, input=sql, capture_output=True, text=True, encoding="utf-8", errors="replace",
                              timeout=SQUAWK_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise DbkitError(f"squawk did not finish within {SQUAWK_TIMEOUT} s") from None
    except OSError as exc:
        raise DbkitError(f"cannot run squawk ({exe}): {exc.strerror or exc}") from None


def _first_line(text: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if line.strip()), None)


def _failure(res: subprocess.CompletedProcess[str], what: str) -> DbkitError:
    detail = _first_line(res.stderr) or _first_line(res.stdout) or "no output"
    return DbkitError(f"{what} (exit code {res.returncode}): {detail}")


_RULE_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_INVALID_RULE = re.compile(r"invalid value '([^']*)' for '--exclude")


def _check_rules(exe: str, rules: list[str]) -> None:
    """Raise ConfigError naming every rule the installed squawk does not know."""
    unknown = [r for r in rules if not _RULE_NAME.fullmatch(r)]
    remaining = [r for r in rules if r not in unknown]
    while remaining:
        res = _run(exe, [f"--exclude={r}" for r in remaining], "")
        if res.returncode in (0, 1):
            break
        match = _INVALID_RULE.search(res.stderr)
        if not match or match.group(1) not in remaining:
            raise _failure(res, "squawk failed while checking the ignored rules")
        unknown.append(match.group(1))
        remaining.remove(match.group(1))
    if unknown:
        raise ConfigError("DBKIT_LINT_IGNORE",
                          "names unknown squawk rule(s) " + ", ".join(f"'{r}'" for r in unknown),
                          purpose="lists squawk rules dbkit migrate lint skips (names: https://squawkhq.com/docs/rules)",
                          example="DBKIT_LINT_IGNORE=require-concurrent-index-creation,prefer-robust-stmts")


def _parse_report(res: subprocess.CompletedProcess[str], revision: str) -> list[dict]:
    try:
        report = json.loads(res.stdout)
    except ValueError:
        report = None
    if not isinstance(report, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("rule_name"), str) for entry in report):
        raise _failure(res, f"squawk's report on revision {revision} is not the expected JSON")
    return report


# -- turning squawk's report into Violations -----------------------------------


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _violations(revision: str, sql: str, spans: list[tuple[int, int]], reported: list[dict], text: str,
                prefix_chars: int, has_suffix: bool, bookkeeping: re.Pattern[str]) -> list[Violation]:
    """Violations in ``sql``, which squawk saw as ``text`` (``sql`` plus synthetic lines around it)."""
    prefix_lines = text.count("\n", 0, prefix_chars)
    line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
    found: list[tuple[tuple[int, int], Violation]] = []
    for entry in reported:
        line0, column = entry.get("line"), entry.get("column")
        column = column if isinstance(column, int) else 0
        statement, line, position = "", None, (sys.maxsize, 0)
        if isinstance(line0, int):
            offset = _offset(text, line_starts, line0, column) - prefix_chars
            if offset < 0 or offset > len(sql) or (has_suffix and offset == len(sql)):
                continue  # on a synthetic BEGIN;/COMMIT; line
            line = line0 - prefix_lines + 1
            position = (line0, column)
            span = _statement_at(spans, offset)
            if span is not None:
                statement = _collapse(sql[span[0] : span[1]])
        if statement and bookkeeping.match(statement):
            continue
        if len(statement) > STATEMENT_MAX:
            statement = statement[: STATEMENT_MAX - 1].rstrip() + "…"
        help_text = entry.get("help")
        found.append((position, Violation(
            revision=revision, rule=entry["rule_name"], message=_collapse(str(entry.get("message") or "")),
            statement=statement, line=line,
            help=_collapse(help_text) if isinstance(help_text, str) and help_text.strip() else None)))
    found.sort(key=lambda pair: pair[0])  # stable: squawk's order within one position
    return [v for _, v in found]


def _offset(text: str, line_starts: list[int], line0: int, column_bytes: int) -> int:
    """Character offset in ``text`` of squawk's (0-based line, UTF-8 byte column), clamped to the text."""
    if line0 < 0:
        return 0
    if line0 >= len(line_starts):
        return len(text)
    start = line_starts[line0]
    end = text.find("\n", start)
    line = text[start : len(text) if end < 0 else end]
    return start + len(line.encode("utf-8")[: max(0, column_bytes)].decode("utf-8", errors="ignore"))


def _statement_at(spans: list[tuple[int, int]], offset: int) -> tuple[int, int] | None:
    """The statement containing ``offset``, else the next one, else the last one."""
    return next((span for span in spans if offset < span[1]), spans[-1] if spans else None)


@functools.cache
def _bookkeeping(version_table: str) -> re.Pattern[str]:
    """Statements on Alembic's version table (any schema)."""
    return re.compile(
        r"(?:CREATE\s+TABLE(?:\s+IF\s+NOT\s+EXISTS)?|DROP\s+TABLE(?:\s+IF\s+EXISTS)?|INSERT\s+INTO|UPDATE|"
        r"DELETE\s+FROM)\s+(?:(?:\"[^\"]+\"|\w+)\.)?\"?" + re.escape(version_table) + r"\"?(?=[\s(;]|$)",
        re.IGNORECASE)


# -- statement boundaries and transaction state --------------------------------
# PostgreSQL's own scanner and parser (libpg_query, through pglast) find where statements end
# and which ones open or close a transaction: no hand-written SQL lexing here.

_COMMENTS = frozenset({"SQL_COMMENT", "C_COMMENT"})


def _statement_spans(sql: str) -> list[tuple[int, int]]:
    """(start, end) of each statement: its first token (comments skipped) to its ``;`` inclusive."""
    from pglast.parser import ParseError, scan

    try:
        tokens = scan(sql)
    except ParseError:  # e.g. an unterminated quote: the rest is one statement, as PostgreSQL would read it
        stripped = sql.strip()
        return [(sql.index(stripped[0]), len(sql.rstrip()))] if stripped else []
    spans: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    for tok in tokens:
        if tok.name in _COMMENTS:
            continue
        if tok.name == "ASCII_59":  # ;
            if start is not None:
                spans.append((start, tok.end + 1))
            start = None
            continue
        if start is None:
            start = tok.start
        end = tok.end + 1
    if start is not None:
        spans.append((start, end))
    return spans


def _transaction_state_after(sql: str, spans: list[tuple[int, int]], in_transaction: bool) -> bool:
    """Whether a transaction is open after ``sql`` ran, given the state before it."""
    import pglast
    from pglast.enums import TransactionStmtKind as Kind

    for start, end in spans:
        try:
            parsed = pglast.parse_sql(sql[start:end])
        except pglast.parser.ParseError:
            continue  # not SQL the parser knows: it cannot be BEGIN or COMMIT either
        for raw in parsed:
            stmt = raw.stmt
            if type(stmt).__name__ != "TransactionStmt":
                continue
            if stmt.kind in (Kind.TRANS_STMT_BEGIN, Kind.TRANS_STMT_START):
                in_transaction = True
            elif stmt.kind in (Kind.TRANS_STMT_COMMIT, Kind.TRANS_STMT_ROLLBACK):
                in_transaction = bool(stmt.chain)
    return in_transaction
