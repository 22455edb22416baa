"""Adopting a history of plain ``*.sql`` migration files that a hand-written runner applied in name order
and recorded in a table of its own (e.g. ``migrations(id, filename, executed_at)``).

Two steps, as an Alembic user would expect them:

* :func:`import_sql` (``dbkit migrate import-sql DIR``) writes one ordinary Alembic revision per file, chained
  in file order after the project's head.  The revision holds the file's statements (split with PostgreSQL's
  own parser, libpg_query through pglast) and runs them with ``op.execute``: reviewable, offline-renderable
  (``migrate sql``/``lint``), covered by dbkit's checksums, independent of the old directory.  Each revision
  names its file and the old runner's table (``sql_file``, ``sql_history_table``, ``sql_history_column``).
  It touches no database.
* :func:`adopt`, which ``dbkit migrate`` runs before upgrading: a database whose version table is empty but
  whose old table lists imported files is stamped at the last of them (nothing runs), under the migration
  advisory lock, and the relations those files created are given to the owner role as if dbkit had made
  them.  Then the upgrade applies only what the old runner never ran.  A database without the old table
  (a new one) runs the imported revisions natively.  Every database, however many there are, is adopted
  by the same deploy command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbkit import _db as db
from dbkit.errors import ConfigError, UsageError

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
#: statements that cannot run inside a transaction block (the old runner ran each file in one)
_NO_TRANSACTION = ("VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt",
                   "DropTableSpaceStmt")
_RELATION_STMTS = {"CreateStmt": "relation", "CreateTableAsStmt": "into", "ViewStmt": "view",
                   "CreateSeqStmt": "sequence"}


# --------------------------------------------------------------------- reading SQL files

def split_statements(sql: str, source: str) -> list[str]:
    """The statements of a migration file, without the file's own ``BEGIN``/``COMMIT`` (every revision is
    one transaction).  One :class:`UsageError` line naming ``source`` for what cannot become a revision."""
    import pglast
    from pglast.parser import ParseError

    for number, line in enumerate(sql.splitlines(), 1):
        if line.lstrip().startswith("\\"):
            raise UsageError(f"{source}:{number} is a psql meta-command ({line.strip()[:40]}), not SQL",
                             hint="replace it with the SQL it stands for, then import again")
    try:
        parsed = pglast.parse_sql(sql)
    except ParseError as exc:  # args: (message, character index)
        index = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], int) else None
        where = f":{sql[:index].count(chr(10)) + 1}" if index is not None else ""
        raise UsageError(f"{source}{where} is not valid SQL: {exc.args[0] if exc.args else exc}",
                         hint="fix the file (the old runner could not have applied it either), then import again")
    statements = []
    for stmt in parsed:  # locations are character indexes of the statement's first token
        start = stmt.stmt_location
        text = (sql[start:start + stmt.stmt_len] if stmt.stmt_len else sql[start:]).strip()
        kind = type(stmt.stmt).__name__
        line = sql[:start].count("\n") + 1
        if kind == "TransactionStmt":
            if stmt.stmt.kind.name in ("TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_COMMIT"):
                continue  # the revision's own transaction replaces the file's
            raise UsageError(f"{source}:{line} controls the transaction ({text[:40]}): a revision runs in one "
                             "transaction", hint="remove the statement (or split the file), then import again")
        concurrent = kind in ("IndexStmt", "ReindexStmt") and (
            getattr(stmt.stmt, "concurrent", False) or "CONCURRENTLY" in text.upper().split())
        if kind in _NO_TRANSACTION or concurrent:
            raise UsageError(f"{source}:{line} cannot run inside a transaction ({text[:40]}…)",
                             hint="write it as a dbkit revision (e.g. op.create_index_concurrently) instead")
        statements.append(text)
    return statements


def created_relations(statements: list[str]) -> list[str]:
    """``schema.name`` (or ``name``) of the tables, views and sequences the statements create."""
    import pglast

    names = []
    for text in statements:
        for raw in pglast.parse_sql(text):
            attr = _RELATION_STMTS.get(type(raw.stmt).__name__)
            if attr is None:
                continue
            rel = getattr(raw.stmt, attr)
            rel = getattr(rel, "rel", rel)  # CREATE TABLE AS: IntoClause.rel
            names.append(f"{rel.schemaname}.{rel.relname}" if rel.schemaname else rel.relname)
    return names


# --------------------------------------------------------------------- writing revisions

@dataclass
class ImportResult:
    directory: str
    table: str
    column: str
    written: list[str] = field(default_factory=list)  # revision files, in chain order
    skipped: list[str] = field(default_factory=list)  # SQL files already imported


def _check_table(table: str, column: str) -> None:
    if not all(_IDENT.fullmatch(part) for part in table.split(".")) or table.count(".") > 1:
        raise UsageError(f"--table {table[:80]!r} is not a table name", hint="give NAME or SCHEMA.NAME, "
                         "e.g. --table migrations or --table public.schema_migrations")
    if not _IDENT.fullmatch(column):
        raise UsageError(f"--column {column[:80]!r} is not a column name", hint="e.g. --column filename")


def _next_ids(script, count: int) -> list[str]:
    numeric = [int(r.revision) for r in script.walk_revisions() if r.revision.isdigit()]
    if numeric or not list(script.walk_revisions()):
        start = max(numeric, default=0) + 1
        return [f"{n:04d}" for n in range(start, start + count)]
    from alembic.util import rev_id

    return [rev_id() for _ in range(count)]


def _slug(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", stem).strip("_").lower()[:40] or "sql"


def render_revision(rev: str, down: str | None, sql_file: str, shown_dir: str, table: str, column: str,
                    statements: list[str], date: str) -> str:
    """The source of one imported revision: plain Alembic, the statements as Python string literals."""
    body = "".join(f"    {s!r},\n" if "\n" not in s else f"    {_triple(s)},\n" for s in statements)
    return f'''"""{sql_file} (imported from {shown_dir}/{sql_file})

Written by `dbkit migrate import-sql`: the file's statements, in its order, in one transaction.
A database whose {table} table lists {sql_file} (the old runner applied it) is stamped
at this revision by `dbkit migrate` and never runs it again.  The SQL file had no downgrade:
write one below before you need `dbkit migrate down` past this revision.

Revision ID: {rev}
Revises: {down or ""}
Create Date: {date}
"""

import sqlalchemy as sa
from alembic import op

revision = {rev!r}
down_revision = {down!r}
branch_labels = None
depends_on = None

# where this revision came from: dbkit adopts databases whose {table}.{column} lists the file
sql_file = {sql_file!r}
sql_history_table = {table!r}
sql_history_column = {column!r}

STATEMENTS = [
{body}]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(sa.text(statement.replace(":", r"\\:")))  # text() would read ":name" as a parameter


def downgrade() -> None:
    raise NotImplementedError("revision {rev} ({sql_file}) has no downgrade yet: write it in this file")
'''


def _triple(text: str) -> str:
    if '"""' in text or text.endswith('"') or "\\" in text:
        return repr(text)
    return f'"""\\\n{text}"""'


def import_sql(settings, directory: str | Path, *, table: str = "migrations", column: str = "filename") -> ImportResult:
    """Write one revision per ``*.sql`` file of ``directory`` (name order, as the old runner applied them) that
    is not imported yet, chained after the project's head.  Nothing is written when any file is refused."""
    import datetime

    from dbkit.migrate._runner_state import _script, _shown

    _check_table(table, column)
    folder = settings.project_dir / directory  # an absolute directory stays as it is
    if not folder.is_dir():
        raise UsageError(f"{directory} is not a directory", hint="give the folder of the old runner's *.sql files, "
                         "e.g. dbkit migrate import-sql infra/migrations")
    files = sorted(folder.glob("*.sql"))
    if not files:
        raise UsageError(f"{directory} has no *.sql files", hint="give the folder the old runner applied")
    script = _script(settings)
    heads = list(script.get_heads())
    if len(heads) > 1:
        raise UsageError(f"the migrations have several heads ({', '.join(heads)})",
                         hint="merge them first (`alembic merge heads`), then import")
    done = {rev.module.sql_file for rev in script.walk_revisions()  # the SQL files imported already
            if isinstance(getattr(rev.module, "sql_file", None), str)}
    todo = [f for f in files if f.name not in done]
    shown = _shown(settings, folder)
    parsed = [(f, split_statements(f.read_text(encoding="utf-8"), f"{shown}/{f.name}")) for f in todo]
    versions = Path(settings.migrations_dir) / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    down = heads[0] if heads else None
    date = datetime.date.today().isoformat()
    out = []
    for (path, statements), rev in zip(parsed, _next_ids(script, len(parsed))):
        target = versions / f"{rev}_sql_{_slug(path.stem)}.py"
        if target.exists():
            raise UsageError(f"{target} exists already", hint="remove it or rename the SQL file")
        out.append((target, render_revision(rev, down, path.name, shown, table, column, statements, date)))
        down = rev
    written = []
    try:
        for target, text in out:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    except OSError as exc:
        for target in written:
            target.unlink(missing_ok=True)
        raise ConfigError(str(versions), f"cannot be written: {exc.strerror}") from None
    return ImportResult(shown, table, column, [f"{_shown(settings)}/versions/{t.name}" for t, _ in out],
                        [f.name for f in files if f.name in done])


# --------------------------------------------------------------------- adopting a database

@dataclass
class Adoption:
    """What :func:`adopt` did: ``table`` listed ``files``; the version table was stamped at ``stamped``."""

    table: str
    files: list[str]
    stamped: str
    owned: list[str] = field(default_factory=list)  # relations given to the owner role
    kept_as: str = ""  # where the old table is now (dbkit's bookkeeping schema)


def _listed(conn, table: str, column: str) -> list[str] | None:
    """The file names the old runner recorded (None when its table does not exist here)."""
    from psycopg import sql

    if not conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0]:
        return None
    name = sql.Identifier(*table.split("."))
    try:
        rows = conn.execute(sql.SQL("SELECT {}::text FROM {}").format(sql.Identifier(column), name)).fetchall()
    except Exception as exc:  # noqa: BLE001 - psycopg.errors.UndefinedColumn and the like
        raise ConfigError(f"{table}.{column}", f"cannot be read: {str(exc).splitlines()[0]}",
                          purpose="lists the SQL files the old runner applied") from None
    return [r[0] for r in rows if r[0] is not None]


def _plan(conn, settings, script) -> tuple[str, list[str], str] | None:
    """(history table, files it lists in chain order, revision to stamp), or None: nothing to adopt (the version
    table has revisions, or the old table lists none)."""
    if db.applied_revisions(conn, db.version_table(settings)):
        return None
    chain = [r for r in reversed(list(script.walk_revisions())) if isinstance(getattr(r.module, "sql_file", None), str)]
    if not chain:
        return None
    table, column = chain[0].module.sql_history_table, chain[0].module.sql_history_column
    listed = _listed(conn, table, column)
    if not listed:
        return None
    by_name = {r.module.sql_file: r for r in chain}
    by_stem = {Path(name).stem: r for name, r in by_name.items()}
    unknown = [n for n in listed if n not in by_name and n not in by_stem]
    if unknown:
        raise UsageError(f"{table} lists {', '.join(sorted(unknown)[:3])}, which no imported revision comes from "
                         "(the old runner applied a file that is not in migrations/versions)",
                         hint="restore the file and import it (`dbkit migrate import-sql DIR`), then run again")
    applied = {(by_name.get(n) or by_stem[n]).revision for n in listed}
    last = max(i for i, r in enumerate(chain) if r.revision in applied)
    gaps = [r.module.sql_file for r in chain[:last] if r.revision not in applied]
    if gaps:
        raise UsageError(f"{table} does not list {', '.join(gaps[:3])} but lists the later "
                         f"{chain[last].module.sql_file}: the old runner never applied it",
                         hint="run the old runner once more so it applies every file, then `dbkit migrate`")
    return table, [r.module.sql_file for r in chain[: last + 1]], chain[last].revision


def _found(settings):
    """(script, plan) for a database to adopt, else (script, None); what cannot be adopted raises."""
    from dbkit import _target as target
    from dbkit.migrate._runner_state import _script

    script = _script(settings)
    if not any(isinstance(getattr(r.module, "sql_file", None), str) for r in script.walk_revisions()):
        return script, None
    url = target.resolve_url(settings, direct=True)
    with db.connect(url, autocommit=True, connect_timeout=settings.connect_timeout) as conn:
        return script, _plan(conn, settings, script)


def advice(settings) -> str | None:
    """For ``migrate status``: what ``dbkit migrate`` will adopt (or why it cannot), None when nothing."""
    try:
        _, plan = _found(settings)
    except UsageError as exc:
        return f"the SQL-file history cannot be adopted: {exc}"
    if plan is None:
        return None
    table, files, rev = plan
    return (f"{table} lists {len(files)} SQL file(s) the old runner applied (last: {files[-1]}): `dbkit migrate` "
            f"stamps revision {rev} without running them, then runs the revisions after it")


def adopt(settings) -> Adoption | None:
    """Stamp a database the old runner migrated (see the module's doc); None when there is nothing to adopt
    (no imported revisions, a version table with revisions, no old table, or an empty one).  Under the
    migration lock (re-planned there: a concurrent run may have adopted it): move the old table, give the
    files' relations to the owner role, stamp; one transaction, one line when it fails."""
    script, plan = _found(settings)
    if plan is None:
        return None
    import psycopg
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import exc as sa_exc

    from dbkit.errors import OperationFailed
    from dbkit.migrate._session import migration_connection

    found: dict[str, Any] = {}

    def check(raw) -> None:  # as the connecting role, under the advisory lock, before any DDL
        found["plan"] = _plan(raw, settings, script)

    try:
        with migration_connection(settings, check=check) as (conn, _):
            if not found.get("plan"):
                return None  # another run adopted (or migrated) it meanwhile
            table, files, rev = found["plan"]
            kept, owned = _take_over(conn.connection.driver_connection, settings, script, table, rev)
            ctx = MigrationContext.configure(conn, opts={"version_table_schema": settings.version_table_schema,
                                                         "version_table": settings.version_table})
            ctx.stamp(script, rev)
            conn.commit()
    except (psycopg.Error, sa_exc.DBAPIError) as exc:
        orig = getattr(exc, "orig", None) or exc
        diag = getattr(orig, "diag", None)
        primary = (diag.message_primary if diag is not None and diag.message_primary else str(orig)).splitlines()[0]
        raise OperationFailed(f"adopting the SQL-file history failed and was rolled back (nothing was stamped): "
                              f"{primary} [SQLSTATE {getattr(orig, 'sqlstate', None)}]",
                              hint="connect as the role that ran the old runner, or as a superuser") from None
    return Adoption(table, files, rev, owned, kept)


def _take_over(raw, settings, script, table: str, rev: str) -> tuple[str, list[str]]:
    """As the connecting role (which ran the old runner, or a superuser): the old table moves to dbkit's schema
    as ``adopted_<name>`` (kept as history, out of the application's schema, and a database migrated down to
    base and up again is never adopted twice); the relations the imported files create go to the owner role,
    as if dbkit had run them.  Returns (where the table is now, relations given to the owner)."""
    from psycopg import sql

    from dbkit.migrate._session import BOOKKEEPING_SCHEMA

    raw.execute("RESET ROLE")
    name = table.rpartition(".")[2]
    kept = f"adopted_{name}"
    raw.execute(sql.SQL("ALTER TABLE {} SET SCHEMA {}").format(sql.Identifier(*table.split(".")),
                                                              sql.Identifier(BOOKKEEPING_SCHEMA)))
    raw.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(BOOKKEEPING_SCHEMA, name),
                                                             sql.Identifier(kept)))
    owned: list[str] = []
    if not settings.migrate_set_role:
        return f"{BOOKKEEPING_SCHEMA}.{kept}", owned
    owner = settings.role_owner
    statements = [s for r in script.iterate_revisions(rev, "base") if hasattr(r.module, "sql_file")
                  for s in getattr(r.module, "STATEMENTS", ())]
    for relation in dict.fromkeys(created_relations(statements)):
        row = raw.execute("SELECT c.oid::regclass::text FROM pg_class c WHERE c.oid = to_regclass(%s) "
                          "AND pg_get_userbyid(c.relowner) <> %s", (relation, owner)).fetchone()
        if row:
            raw.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.SQL(row[0]), sql.Identifier(owner)))
            owned.append(row[0])
    raw.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(owner)))
    return f"{BOOKKEEPING_SCHEMA}.{kept}", owned
