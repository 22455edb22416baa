"""`dbkit migrate rehearse`: the pending revisions on a scratch copy, traced and judged
(dbkit.migrate._rehearse).  Registered on the `migrate` group by dbkit/cli/_migrate.py."""

from __future__ import annotations

import sys

import click

from dbkit import _render as render
from dbkit._render import Table
from dbkit.cli._common import State, check_revision, from_option, json_option, pass_state, setup_migrate_logging
from dbkit.errors import UsageError


def _locks(st) -> str:
    from dbkit.migrate._rehearse_report import grouped, mode_name

    _, locks, _ = grouped(st)
    shown = [f"{mode_name(lock.mode)} {lock.relation}" for lock in locks
             if not lock.created and lock.relkind in ("r", "p", "m") and lock.blocks_writes]
    if st.autocommit and not shown:
        return "(outside a transaction: none that blocks writes)"
    return ", ".join(shown) or "-"


def _touched(st) -> str:
    from dbkit.migrate._rehearse_report import grouped, human_size

    touched, _, parts_of = grouped(st)
    parts = []
    for t in touched:
        if t.created and t.relkind in ("i", "I"):
            parts.append(f"built index {t.relation} ({human_size(t.size_after)})")
        if t.created or t.relkind not in ("r", "p", "m"):
            continue
        what = [f"rewritten {human_size(t.size_before)}->{human_size(t.size_after)}"] if t.rewritten else []
        if t.scans:
            what.append(f"scanned {t.rows_read:,} rows")
        if what:
            n = parts_of.get(t.relation)
            parts.append(f"{t.relation}{f' ({n} parts)' if n else ''}: {', '.join(what)}")
    return "; ".join(parts) or "-"


def _describe(report):
    from dbkit.migrate._rehearse_report import NO_ROWS, human_size

    if report.nothing_pending:
        yield report.summary()
        return
    rows = []
    for run in report.revisions:
        for st in run.statements:
            sql = st.sql if len(st.sql) <= 60 else st.sql[:57] + "..."
            rows.append((run.revision, sql, f"{st.duration_s:.3f}s", _locks(st), _touched(st),
                         human_size(st.wal_bytes), "error" if st.error else ""))
    yield Table(["revision", "statement", "time", "write-blocking locks", "rewrites / scans", "WAL", ""], rows,
                title=f"statements on {report.scratch or 'the scratch copy'}")
    yield Table(["revision", "file", "time", "statements", "WAL", "findings"],
                [(r.revision, r.file, f"{r.duration_s:.3f}s", len(r.statements),
                  human_size(sum(s.wal_bytes or 0 for s in r.statements)),
                  sum(1 for f in report.findings if f.revision == r.revision)) for r in report.revisions],
                title="revisions")
    if report.load:
        yield Table(["window", "operations", "rows", "errors", "p50 ms", "p99 ms", "longest s"],
                    [(w.label, w.ops, w.rows, w.errors, w.p50_ms, w.p99_ms, w.longest_stall_s) for w in report.load],
                    title=f"the application's view: {report.load_clients} client(s) as the enforce role")
        if not report.load[0].rows:
            yield f"load: {NO_ROWS}"
    for error in report.load_errors:
        yield f"load: an operation failed: {error}"
    for finding in report.findings:
        yield f"FAIL {finding.describe()}"
    if report.failed:
        yield f"FAIL the revision failed on the scratch copy: {report.failed}"
    yield report.summary()


@click.command("rehearse")
@click.option("--to", "to_rev", default="head", show_default=True, metavar="REV", help="Target revision.")
@click.option("--clone", is_flag=True, help="Copy with CREATE DATABASE … TEMPLATE of the current database "
              "(dev/test: needs no other session on it).")
@click.option("--from-backup", "backup_id", metavar="ID",
              help="Restore this backup (an id or latest) as the copy [default: latest, unless --clone].")
@from_option(help="Where the backups are (default: DBKIT_BACKUP_URI), with --from-backup.")
@click.option("--keep", is_flag=True, help="Keep the scratch database afterwards (its name is printed).")
@click.option("--min-size", default="10MB", show_default=True, metavar="SIZE",
              help="Relations up to this size are never flagged (e.g. 0, 512kB, 1GB).")
@click.option("--load", "load", type=click.IntRange(0, 256), default=0, metavar="N",
              help="N clients run tenant-scoped reads and writes as the enforce role while each revision runs "
                   "(after a baseline without the migration).")
@click.option("--max-lock", metavar="DURATION", help="Longest a write-blocking lock may be held "
              "[default: DBKIT_LOCK_TIMEOUT].")
@click.option("--change-roles", is_flag=True, help="Let the role model and the revisions change the server's roles "
              "(a rehearsal server: roles are shared by every database of a server).")
@json_option
@click.option("--markdown", "as_markdown", is_flag=True, help="Print Markdown for a pull-request comment.")
@pass_state
def rehearse(state: State, to_rev: str, clone: bool, backup_id: str | None, source: str | None, keep: bool,
             min_size: str, load: int, max_lock: str | None, change_roles: bool, as_json: bool,
             as_markdown: bool) -> None:
    """Run the pending revisions on a scratch copy of the database and report what each statement
    locks, rewrites and scans.  Exit 1 when a statement would block the application's writes on a
    relation bigger than --min-size (a rewrite, a scan under a write-blocking lock, or such a lock held
    longer than --max-lock) or a revision fails.  The scratch database is dropped at the end, on
    failure and on Ctrl-C, unless --keep; the source is never written, nor (without --change-roles) the
    server's roles."""
    from dbkit.migrate import _rehearse as rh
    from dbkit.migrate._rehearse_report import markdown

    check_revision("--to", to_rev)
    if as_json and as_markdown:
        raise UsageError("--json and --markdown are exclusive", hint="pick one output format")
    if clone and backup_id is not None:
        raise UsageError("--clone and --from-backup are exclusive", hint="copy either by cloning or from a backup")
    if source is not None and backup_id is None:
        raise UsageError("--from needs --from-backup", hint="add --from-backup latest (or a backup id)")
    if not clone and backup_id is None:
        backup_id = "latest"  # the default copy: the newest complete backup
    size = rh.parse_size(min_size)
    seconds = None if max_lock is None else rh.parse_duration(max_lock)
    settings = state.settings
    copy, method = None, "clone"
    if backup_id is not None:
        from dbkit import _lifecycle as lifecycle
        from dbkit.cli._backup import check_backup_uri

        if not backup_id.strip():
            raise UsageError("--from-backup is empty", hint="give a backup id (see `dbkit backup list`) or latest")
        check_backup_uri("--from", source, settings)

        def copy(name: str) -> None:  # `dbkit restore ID --into <scratch>`: roles created, checks as in a restore
            lifecycle.restore(settings, backup_id, source=source, into=name, keep_server_roles=not change_roles)

        method = f"restore of backup {backup_id}"
    setup_migrate_logging(state.verbose)
    report = rh.rehearse(settings, to=to_rev, min_size=size, max_lock=seconds, keep=keep, copy=copy,
                         copy_method=method, load=load, change_roles=change_roles,
                         on_scratch=lambda name: render.error_line(f"dbkit: rehearsing on scratch database {name}"))
    if as_markdown:
        sys.stdout.write(markdown(report))
    else:
        render.show(report, _describe, as_json=as_json)
    sys.exit(0 if report.ok else 1)
