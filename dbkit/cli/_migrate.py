"""`dbkit migrate`: Alembic with safety rails (dbkit.migrate._runner)."""

from __future__ import annotations

import sys

import click

from dbkit import _render as render
from dbkit._render import Table
from dbkit.cli._common import State, check_revision, json_option, pass_state, setup_migrate_logging
from dbkit.errors import ConfigError, Refused


def _show_run(result, as_json: bool, verb: str) -> None:
    def describe(result):
        adopted = getattr(result, "adopted", None)
        if adopted:
            yield (f"adopted the SQL-file history: {adopted.table} lists {len(adopted.files)} file(s) "
                   f"({adopted.files[0]} … {adopted.files[-1]}); stamped {adopted.stamped}, nothing re-ran"
                   + (f"; owner role now owns {', '.join(adopted.owned)}" if adopted.owned else "")
                   + f"; the old table is kept as {adopted.kept_as}")
        if not result.applied:
            yield f"nothing to {verb}: at {', '.join(result.after) or 'base'}"
            return
        for rev in result.applied:
            yield f"{verb}d {rev.revision}  {rev.message}"
        yield f"now at {', '.join(result.after) or 'base'}"

    render.show(result, describe, as_json=as_json)


@click.group(invoke_without_command=True)
@click.option("--to", "to_rev", default="head", show_default=True, metavar="REV", help="Target revision.")
@json_option
@click.pass_context
def migrate(ctx: click.Context, to_rev: str, as_json: bool) -> None:
    """Upgrade the database to head (or --to REV), with safety rails.

    Session advisory lock (concurrent runs wait), lock_timeout/statement_timeout,
    one transaction per revision, runs as the owner role, extensions checked first.
    """
    if ctx.invoked_subcommand:
        return
    from dbkit.migrate import _runner as runner

    state = ctx.find_object(State)
    check_revision("--to", to_rev)
    setup_migrate_logging(state.verbose)
    _show_run(runner.upgrade(state.settings, to_rev), as_json, "upgrade")


@migrate.command("down", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-prod", is_flag=True, help="Allow a downgrade when DBKIT_ENV=prod.")
@json_option
@pass_state
def migrate_down(state: State, revision: str, yes: bool, allow_prod: bool, as_json: bool) -> None:
    """Downgrade to REVISION (an id, -1 or base).  Asks first unless --yes."""
    from dbkit.migrate import _runner as runner
    from dbkit.migrate.env import guard_downgrade

    check_revision("REVISION", revision)
    settings = state.settings
    guard_downgrade(settings, allow_prod=allow_prod)  # before asking: the one refusal, shared with plain alembic
    runner.check_target(settings, revision)  # and not "confirm", then "no such revision"
    if not yes:
        if not sys.stdin.isatty():
            raise Refused(f"downgrade to {revision} needs confirmation", hint="rerun with --yes")
        click.confirm(f"Downgrade the database to {revision}? Data in dropped tables is lost", abort=True)
    setup_migrate_logging(state.verbose)
    _show_run(runner.downgrade(settings, revision, allow_prod=allow_prod), as_json, "downgrade")


def _describe_status(st):
    yield f"version table: {st.version_table}"
    if st.problem:  # never "base" for a database whose revision is elsewhere or unknown
        yield f"current: unknown: {st.problem}"
    else:
        yield f"current: {', '.join(st.current) or 'base (no revision of your migrations applied)'}"
    yield f"head:    {', '.join(st.heads) or f'none ({st.migrations_dir}/versions has no revisions yet)'}"
    if not st.problem:  # the problem is the advice, said above
        if st.pending:
            yield Table(["pending", "message"], [(r.revision, r.message) for r in st.pending])
        yield st.advice() or "up to date"


@migrate.command("status")
@json_option
@pass_state
def migrate_status(state: State, as_json: bool) -> None:
    """Current revision, head and pending revisions.  Exit 0 even when behind."""
    from dbkit.migrate import _runner as runner

    render.show(runner.status(state.settings), _describe_status, as_json=as_json)


def _describe_history(revs):
    yield Table(["revision", "down", "applied", "message"],
                [(r.revision + (" (head)" if r.is_head else ""), r.down_revision or "base",
                  "yes" if r.applied else "no", r.message) for r in revs])


@migrate.command("history")
@json_option
@pass_state
def migrate_history(state: State, as_json: bool) -> None:
    """Every revision, base first, and whether it is applied."""
    from dbkit.migrate import _runner as runner

    render.show(runner.history(state.settings), _describe_history, as_json=as_json)


@migrate.command("new")
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--autogenerate", is_flag=True, help="Fill it with the diff between models and database.")
@pass_state
def migrate_new(state: State, message: str, autogenerate: bool) -> None:
    """Create a new revision file in migrations/versions/."""
    from dbkit.migrate import _runner as runner

    if not message.strip():
        raise ConfigError("--message", "is empty: it names the revision file", example='-m "add invoices table"')
    render.line(str(runner.new(state.settings, message, autogenerate=autogenerate)))


@migrate.command("sql")
@click.option("--from", "from_rev", metavar="REV", help="Start after this revision (default: base).")
@click.option("--to", "to_rev", default="head", show_default=True, metavar="REV")
@pass_state
def migrate_sql(state: State, from_rev: str | None, to_rev: str) -> None:
    """Print the SQL an upgrade would run, for review.  Needs no database."""
    from dbkit.migrate import _runner as runner

    check_revision("--from", from_rev)
    check_revision("--to", to_rev)
    render.line(runner.offline_sql(state.settings, from_rev, to_rev).rstrip())


def _describe_check(result):
    if result.problem:
        yield _check_summary(result)
        return
    for r in result.pending:
        yield f"pending: {r.revision}  {r.message}"
    for d in result.schema_diffs or ():
        yield f"schema differs from models: {d}"
    for e in result.edited:
        what = "was deleted" if e.current_sha256 is None else "was edited after it was applied"
        yield (f"revision {e.revision} ({e.filename}) {what}: recorded sha256 {e.recorded_sha256[:12]}, "
               f"now {(e.current_sha256 or '-')[:12]}")
    if result.unrecorded:
        yield (f"applied without dbkit (no checksum recorded, so not compared): {', '.join(result.unrecorded)}; "
               "`dbkit migrate` records checksums for the revisions it applies")
    yield _check_summary(result)


@migrate.command("check")
@json_option
@pass_state
def migrate_check(state: State, as_json: bool) -> None:
    """Exit 1 when revisions are pending, the schema differs from the models,
    or an applied revision's file was edited after it was applied."""
    from dbkit.migrate import _runner as runner

    result = runner.check(state.settings)
    render.show(result, _describe_check, as_json=as_json)
    sys.exit(0 if result.clean else 1)


def _check_summary(result) -> str:
    """One line saying what `migrate check` compared, what it did not, and the verdict."""
    if result.problem:
        return f"migrate check failed: {result.problem}"
    checked = ["at head" if not result.pending else f"{len(result.pending)} revision(s) pending",
               "revision files unchanged" if not result.edited else f"{len(result.edited)} revision file(s) changed"]
    if result.schema_diffs is None:  # not compared: only at head, and only with models to compare against
        why = "not at head yet" if result.pending else "migrations/env.py passes no target_metadata"
        checked.append(f"schema NOT compared ({why})")
    elif result.schema_diffs:
        checked.append(f"schema differs from the models in {len(result.schema_diffs)} place(s)")
    else:
        checked.append("schema matches the models")
    return ("clean: " if result.clean else "migrate check failed: ") + ", ".join(checked)


def _describe_stamp(result):
    before, after = ", ".join(result.before) or "base", ", ".join(result.after) or "base"
    yield f"stamped {after} (was {before}); no revision ran"


@migrate.command("stamp")
@click.argument("revision")
@click.option("--allow-prod", is_flag=True, help="Allow stamping an earlier revision when DBKIT_ENV=prod.")
@json_option
@pass_state
def migrate_stamp(state: State, revision: str, allow_prod: bool, as_json: bool) -> None:
    """Record REVISION (an id, head or base) as applied without running it.

    For a database whose schema is already at REVISION.  Same rails as `dbkit migrate`
    (advisory lock, preflight); stamping an earlier revision than the current one needs
    --allow-prod when DBKIT_ENV=prod, as a downgrade does.
    """
    from dbkit.migrate import _runner as runner

    check_revision("REVISION", revision)
    setup_migrate_logging(state.verbose)
    render.show(runner.stamp(state.settings, revision, allow_prod=allow_prod), _describe_stamp, as_json=as_json)


def _describe_import(result):
    for name in result.skipped:
        yield f"already imported: {result.directory}/{name}"
    for path in result.written:
        yield f"written  {path}"
    if result.written:
        yield (f"next: write each revision's downgrade, then `dbkit migrate`: it stamps a database whose "
               f"{result.table} table lists the files (nothing runs twice) and runs the rest")
    else:
        yield "nothing to import: every file has its revision"


@migrate.command("import-sql")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--table", default="migrations", show_default=True, metavar="[SCHEMA.]NAME",
              help="The old runner's table of applied files.")
@click.option("--column", default="filename", show_default=True, metavar="NAME",
              help="Its column holding the file name (with or without .sql).")
@json_option
@pass_state
def migrate_import_sql(state: State, directory: str, table: str, column: str, as_json: bool) -> None:
    """Write one revision per DIRECTORY/*.sql file (name order), chained after the head.

    For a history a hand-written runner applied and recorded in --table: `dbkit migrate`
    then stamps such a database at the last file it lists and runs only the rest.
    Touches no database.
    """
    from dbkit.migrate import _runner as runner

    render.show(runner.import_sql(state.settings, directory, table=table, column=column), _describe_import,
                as_json=as_json)


def _describe_lint(found):
    revs, violations = found
    for v in violations:
        yield f"{v.revision}: {v.rule}: {v.message}"
        yield f"    {v.statement}"
    yield f"{len(violations)} violation(s) in {len(revs)} revision(s)" + ("" if violations else ": clean")


@migrate.command("lint")
@click.option("--all", "all_revisions", is_flag=True, help="Lint every revision, not only pending ones.")
@json_option
@pass_state
def migrate_lint(state: State, all_revisions: bool, as_json: bool) -> None:
    """Lock-safety lint (squawk) of the SQL of pending (or all) revisions.  Exit 1 on violations."""
    from dbkit.migrate import _runner as runner

    revs, violations = found = runner.lint(state.settings, all_revisions=all_revisions)
    render.show(found, _describe_lint, as_json=as_json,
                json_data={"revisions": [r.revision for r in revs], "violations": render.jsonable(list(violations))})
    sys.exit(1 if violations else 0)


from dbkit.cli._rehearse import rehearse  # noqa: E402 - registered last: `dbkit migrate rehearse`

migrate.add_command(rehearse)
