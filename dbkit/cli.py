"""The ``dbkit`` command line: a thin map from options onto library functions.

No SQL here and no heavy imports at module level: each command imports what
it needs, so ``dbkit --help`` stays fast.  Errors are caught once, in
:func:`main`, and rendered as one line (traceback only with ``-v``).
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import click

from dbkit import __version__
from dbkit.errors import DbkitError
from dbkit.urls import first_line, mask_secrets

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@dataclass
class State:
    overrides: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False
    _settings: Any = None

    @property
    def settings(self):
        if self._settings is None:
            from dbkit.config import load_settings

            self._settings = load_settings(self.overrides)
        return self._settings


_state = State()  # the error handler in main() reads .verbose


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="dbkit")
@click.option("--env", "env", metavar="ENV", help="Environment: dev, test, staging or prod (DBKIT_ENV).")
@click.option(
    "--database-url", "database_url", metavar="URL",
    help="Database URL (DATABASE_URL). A URL with a password is refused here: it would show in `ps`.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, env: str | None, database_url: str | None, verbose: bool) -> None:
    """dbkit: migrations, seeds, backups and row-level security for PostgreSQL
    with pgvector and TimescaleDB.

    Without DATABASE_URL (and with DBKIT_ENV=dev, the default) every command
    uses the embedded dev cluster in .dbkit/, starting it when needed.
    """
    _state.verbose = verbose or _state.verbose
    if database_url is not None:
        from dbkit.errors import ConfigError
        from dbkit.urls import parse_database_url

        if not database_url.strip():  # an empty script variable must not silently mean "the default database"
            raise ConfigError("--database-url", "is empty", example="--database-url postgresql://app@db.internal/app")

        if parse_database_url(database_url, variable="--database-url").password is not None:
            raise ConfigError(
                "--database-url", "contains a password, which other users can read in the process list",
                example="export DATABASE_URL=postgresql://app:secret@host/app (or put it in .env)",
            )
    _state.overrides = {"env": env, "database_url": database_url or None}
    _state._settings = None
    ctx.obj = _state


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf (click's FloatRange lets nan through every bound)."""

    name = "number"

    def convert(self, value, param, ctx):
        import math

        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


SEED_INT = click.IntRange(-(2**63), 2**63 - 1)  # recorded in a bigint column
MAX_NAME_BYTES = 63  # PostgreSQL truncates longer identifiers (NAMEDATALEN - 1)


def _check_db_name(option: str, name: str | None) -> str | None:
    """A database name from the command line: refused (one line, exit 2) unless PostgreSQL keeps it as typed."""
    from dbkit.errors import ConfigError

    if name is None:
        return None
    example = f"{option} appdb_restored"
    shown = repr(name if len(name) <= 80 else name[:80] + "…")
    if not name.strip():
        raise ConfigError(option, "is empty", example=example)
    if any("\ud800" <= ch <= "\udfff" for ch in name):
        raise ConfigError(option, f"is {shown}, which is not valid UTF-8", example=example)
    if any(not ch.isprintable() for ch in name):
        raise ConfigError(option, f"is {shown}, which contains a control or invisible character",
                          example=example)
    if name != name.strip():
        raise ConfigError(option, f"is {shown}, with leading or trailing whitespace", example=example)
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        raise ConfigError(option, f"is {size} bytes long ({shown}); PostgreSQL names are at most "
                          f"{MAX_NAME_BYTES} bytes and it would silently cut it", example=example)
    return name


def _check_revision(option: str, rev: str | None) -> str | None:
    from dbkit.errors import ConfigError

    if rev is not None and not rev.strip():
        raise ConfigError(option, "is empty", example=f"{option} head (or an id from `dbkit migrate history`)")
    return rev


def _check_backup_uri(option: str, uri: str | None, settings) -> None:
    """Parse --from/--to here, so a bad value is reported under the option the user typed."""
    from dbkit.backup.storage import parse_storage_uri
    from dbkit.errors import ConfigError

    if uri is None:
        return
    example = f"{option} s3://bucket/prefix (or file:///srv/backups, or a path)"
    shown = repr(uri if len(uri) <= 80 else uri[:80] + "…")
    if any("\ud800" <= ch <= "\udfff" for ch in uri):
        raise ConfigError(option, f"is {shown}, which is not valid UTF-8", example=example)
    if any(not ch.isprintable() for ch in uri):
        raise ConfigError(option, f"is {shown}, which contains a control character", example=example)
    if len(uri.encode()) > 4096:
        raise ConfigError(option, f"is {len(uri.encode())} bytes long ({shown}); paths are at most 4096",
                          example=example)
    parse_storage_uri(uri, base=settings.project_dir, variable=option)


# ------------------------------------------------------------------ check

@cli.command()
@json_option
@click.option("--prometheus", "as_prometheus", is_flag=True, help="Print Prometheus text exposition format.")
@click.option("--max-backup-age", type=FiniteFloat(min=0, min_open=True), default=26.0, show_default=True,
              metavar="HOURS",
              help="Newest complete backup older than this: degraded.")
@pass_state
def check(state: State, as_json: bool, as_prometheus: bool, max_backup_age: float) -> None:
    """Is the database side healthy?  Settings, database, extensions, connections, roles,
    migrations, RLS, backup target and backups, each with a fix hint.

    Exit code: 0 healthy, 1 degraded, 2 unhealthy.
    """
    from dbkit import health, render

    report = health.check(state.settings, max_backup_age_hours=max_backup_age)
    if as_prometheus:
        sys.stdout.write(health.prometheus(report))
    elif as_json:
        render.emit_json(report.as_dict())
    else:
        _render_check(report)
    sys.exit(report.exit_code)


def _service_detail(name: str, svc: dict) -> str:
    if svc.get("error"):
        return svc["error"] + (f"; fix: {svc['hint']}" if svc.get("hint") else "")
    if name == "database":
        return (f"{svc['url']}  PostgreSQL {svc['server_version']}  latency {svc['latency_ms']} ms "
                f"(connect {svc['connect_ms']} ms)")
    if name == "environment":
        return f"DBKIT_ENV={svc['env']}" + (f"; {'; '.join(svc['problems'])}" if svc["problems"] else "")
    if name == "connections":
        return f"{svc['used']} of max_connections {svc['max_connections']}"
    if name == "roles" and "errors" in svc:
        return f"{len(svc['errors'])} error(s), {len(svc['warnings'])} warning(s)" + (
            f"; fix: {svc['hint']}" if svc.get("hint") else "")
    if name == "migrations" and "current" in svc:
        text = f"at {', '.join(svc['current']) or 'base'}, head {', '.join(svc['head'])}"
        if svc["pending"]:
            text += f"; {len(svc['pending'])} pending"
        if svc["edited"]:
            text += f"; edited: {', '.join(svc['edited'])}"
        return text + (f"; fix: {svc['hint']}" if svc.get("hint") else "")
    if name == "rls" and "tables_checked" in svc:
        return f"{svc['tables_checked']} tables; {len(svc['errors'])} error(s), {len(svc['warnings'])} warning(s)" + (
            f"; fix: {svc['hint']}" if svc.get("hint") else "")
    if name == "storage":
        return f"{svc['target']} reachable in {svc['latency_ms']} ms"
    if name == "backups":
        if "latest" in svc:
            return (f"newest {svc['latest']} is {svc['latest_age_hours']:.1f} h old (limit {svc['max_age_hours']:g} h), "
                    f"{svc['complete']} complete, last attempt {svc['last_status']}"
                    + (f"; fix: {svc['hint']}" if svc.get("hint") else ""))
        return f"none complete; fix: {svc.get('hint', 'run `dbkit backup`')}"
    return svc.get("note", "")


def _render_check(report) -> None:
    from dbkit import render

    render.table(["setting", "value", "source"], [(s["variable"], s["value"], s["source"]) for s in report.settings],
                 title="Settings")
    render.line()
    rows = []
    for name, svc in report.services.items():
        if name == "extensions" and "items" in svc:
            for item in svc["items"]:
                if item["status"] != "ok":
                    detail = f"fix: {item['hint']}"
                elif item["installed"]:
                    detail = f"installed {item['installed']}"
                else:
                    detail = f"available {item['available']}; {item['note']}"
                if item["name"] == "timescaledb" and item["available"]:
                    detail += "; preloaded" if svc["timescaledb_preloaded"] else "; NOT preloaded"
                rows.append((f"extension {item['name']}", item["status"], detail))
            continue
        rows.append((name, svc["status"], _service_detail(name, svc)))
    render.table(["check", "status", "detail"], rows, title="Health")
    render.line()
    render.line(f"status: {report.status}")


# ------------------------------------------------------------------ config

@cli.group()
def config() -> None:
    """Inspect the resolved settings."""


@config.command("show")
@json_option
@pass_state
def config_show(state: State, as_json: bool) -> None:
    """Every setting with its value (secrets masked) and where it came from."""
    from dbkit import render

    rows = state.settings.describe()
    if as_json:
        render.emit_json([{"variable": v, "value": val, "source": src} for v, val, src in rows])
    else:
        render.table(["setting", "value", "source"], rows)


# ------------------------------------------------------------------ dev cluster

@cli.group()
def dev() -> None:
    """The embedded local PostgreSQL cluster in .dbkit/ (development and tests)."""


def _cluster(state: State):
    from dbkit.dev import DevCluster

    return DevCluster.from_settings(state.settings)


def _render_status(status, as_json: bool) -> None:
    from dbkit import render

    if as_json:
        render.emit_json(status.as_dict())
        return
    for note in status.notes:
        render.line(f"note: {note}")
    if status.running:
        render.line(f"running  {status.url}  (pid {status.pid}, data {status.data_dir})")
    else:
        where = status.data_dir if status.initialized else f"{status.base_dir} (not initialized)"
        render.line(f"stopped  {where}")


@dev.command("up")
@click.option("--no-extensions", is_flag=True, help="Do not create the configured extensions.")
@json_option
@pass_state
def dev_up(state: State, no_extensions: bool, as_json: bool) -> None:
    """Start the cluster (initializing it the first time), create the database and extensions."""
    from dbkit import dev as devmod
    from dbkit import render

    settings = state.settings
    result = devmod.provision(_cluster(state), () if no_extensions else settings.extensions)
    if as_json:
        render.emit_json({**result.status.as_dict(), "database": settings.dev_database,
                          "database_created": result.database_created,
                          "extensions_created": list(result.extensions_created)})
        return
    _render_status(result.status, False)
    if result.database_created:
        render.line(f"created database {settings.dev_database}")
    if result.extensions_created:
        render.line(f"created extensions: {', '.join(result.extensions_created)}")


@dev.command("down")
@click.option("--purge", is_flag=True, help="Also delete the cluster's data directory.")
@pass_state
def dev_down(state: State, purge: bool) -> None:
    """Stop the cluster (fast shutdown); --purge deletes its data too."""
    _render_status(_cluster(state).down(purge=purge), False)


@dev.command("status")
@json_option
@pass_state
def dev_status(state: State, as_json: bool) -> None:
    """Running or stopped, with the URL.  Exit 0 when running, 1 when stopped."""
    status = _cluster(state).status()
    _render_status(status, as_json)
    sys.exit(0 if status.running else 1)


@dev.command("url")
@click.option("--database", "dbname", metavar="NAME", help="Database name (default: DBKIT_DEV_DATABASE).")
@pass_state
def dev_url(state: State, dbname: str | None) -> None:
    """Print the cluster's URL (starts it when needed), e.g. for DATABASE_URL=$(dbkit dev url)."""
    from dbkit import dev as devmod
    from dbkit import render

    _check_db_name("--database", dbname)
    cluster = _cluster(state)
    result = devmod.provision(cluster, state.settings.extensions)
    render.line(result.url.with_dbname(dbname).masked if dbname else result.url.masked)


@dev.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def dev_psql(state: State, psql_args: tuple[str, ...]) -> None:
    """Open psql on the dev cluster's database (extra arguments go to psql)."""
    import shutil

    from dbkit import dev as devmod
    from dbkit.errors import MissingDependency

    dbname, rest = _psql_dbname(psql_args)
    _check_db_name("-d", dbname)
    result = devmod.provision(_cluster(state), state.settings.extensions)
    psql = shutil.which("psql")
    if psql is None:
        raise MissingDependency("psql was not found on PATH", hint="install it: apt-get install postgresql-client")
    url = result.url.with_dbname(dbname) if dbname else result.url
    os.execv(psql, [psql, url.conninfo, *rest])


def _psql_dbname(args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """Take psql's -d/--dbname out of ``args``: dbkit connects to that database on the dev cluster.

    psql lets a later -d replace the whole connection string dbkit passes (host, port, user), so
    ``dbkit dev psql -d other`` would land on the default socket; the name goes into dbkit's URL instead.
    """
    dbname, rest, i = None, [], 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in ("-d", "--dbname") and i + 1 < len(args):
            dbname, i = args[i + 1], i + 2
            continue
        if arg.startswith("--dbname="):
            dbname = arg.split("=", 1)[1]
        elif arg.startswith("-d") and not arg.startswith("--") and len(arg) > 2:
            dbname = arg[2:]
        else:
            rest.append(arg)
        i += 1
    if dbname is not None and ("=" in dbname or "://" in dbname):  # a whole conninfo/URL: psql uses it as given
        return None, list(args)
    return dbname, rest


# ------------------------------------------------------------------ migrate

def _setup_logging(level: int, alembic_level: int | None = None) -> None:
    """dbkit's warnings (and, with -v during migrations, Alembic's "Running upgrade …" lines) go to stderr."""
    import logging

    handler = getattr(_setup_logging, "handler", None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("dbkit: %(message)s"))
        handler.addFilter(lambda r: not r.getMessage().startswith(("Context impl", "Will assume")))
        _setup_logging.handler = handler
    for name in ("alembic.runtime.migration", "dbkit"):
        logger = logging.getLogger(name)
        logger.setLevel(level if name == "dbkit" or alembic_level is None else alembic_level)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False


def _setup_migrate_logging() -> None:
    """dbkit's own notes at INFO; Alembic's "Running upgrade A -> B" only with -v, since the command
    prints each applied revision itself (both would list every migration twice)."""
    import logging

    _setup_logging(logging.INFO, logging.INFO if _state.verbose else logging.WARNING)


def _render_run(result, as_json: bool, verb: str) -> None:
    from dbkit import render

    if as_json:
        render.emit_json(result.as_dict())
        return
    if not result.applied:
        render.line(f"nothing to {verb}: at {', '.join(result.after) or 'base'}")
        return
    for rev in result.applied:
        render.line(f"{verb}d {rev.revision}  {rev.message}")
    render.line(f"now at {', '.join(result.after) or 'base'}")


@cli.group(invoke_without_command=True)
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
    from dbkit.migrate import runner

    _check_revision("--to", to_rev)
    _setup_migrate_logging()
    _render_run(runner.upgrade(ctx.find_object(State).settings, to_rev), as_json, "upgrade")


@migrate.command("down", context_settings={"ignore_unknown_options": True})
@click.argument("revision")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--allow-prod", is_flag=True, help="Allow a downgrade when DBKIT_ENV=prod.")
@json_option
@pass_state
def migrate_down(state: State, revision: str, yes: bool, allow_prod: bool, as_json: bool) -> None:
    """Downgrade to REVISION (an id, -1 or base).  Asks first unless --yes."""
    from dbkit.errors import Refused
    from dbkit.migrate import runner
    from dbkit.migrate.env import guard_downgrade

    _check_revision("REVISION", revision)
    settings = state.settings
    guard_downgrade(settings, allow_prod=allow_prod)  # before asking: the one refusal, shared with plain alembic
    if not yes:
        if not sys.stdin.isatty():
            raise Refused(f"downgrade to {revision} needs confirmation", hint="rerun with --yes")
        click.confirm(f"Downgrade the database to {revision}? Data in dropped tables is lost", abort=True)
    _setup_migrate_logging()
    _render_run(runner.downgrade(settings, revision, allow_prod=allow_prod), as_json, "downgrade")


@migrate.command("status")
@json_option
@pass_state
def migrate_status(state: State, as_json: bool) -> None:
    """Current revision, head and pending revisions.  Exit 0 even when behind."""
    from dbkit import render
    from dbkit.migrate import runner

    st = runner.status(state.settings)
    if as_json:
        render.emit_json(st.as_dict())
        return
    render.line(f"current: {', '.join(st.current) or 'base (nothing applied)'}")
    render.line(f"head:    {', '.join(st.heads)}")
    if st.pending:
        render.table(["pending", "message"], [(r.revision, r.message) for r in st.pending])
    else:
        render.line("up to date")


@migrate.command("history")
@json_option
@pass_state
def migrate_history(state: State, as_json: bool) -> None:
    """Every revision, base first, and whether it is applied."""
    from dataclasses import asdict

    from dbkit import render
    from dbkit.migrate import runner

    revs = runner.history(state.settings)
    if as_json:
        render.emit_json([asdict(r) for r in revs])
        return
    render.table(["revision", "down", "applied", "message"],
                 [(r.revision + (" (head)" if r.is_head else ""), r.down_revision or "base",
                   "yes" if r.applied else "no", r.message) for r in revs])


@migrate.command("new")
@click.option("-m", "--message", required=True, help="What the revision does.")
@click.option("--autogenerate", is_flag=True, help="Fill it with the diff between models and database.")
@pass_state
def migrate_new(state: State, message: str, autogenerate: bool) -> None:
    """Create a new revision file in migrations/versions/."""
    from dbkit import render
    from dbkit.errors import ConfigError
    from dbkit.migrate import runner

    if not message.strip():
        raise ConfigError("--message", "is empty: it names the revision file", example='-m "add invoices table"')
    render.line(str(runner.new(state.settings, message, autogenerate=autogenerate)))


@migrate.command("sql")
@click.option("--from", "from_rev", metavar="REV", help="Start after this revision (default: base).")
@click.option("--to", "to_rev", default="head", show_default=True, metavar="REV")
@pass_state
def migrate_sql(state: State, from_rev: str | None, to_rev: str) -> None:
    """Print the SQL an upgrade would run, for review.  Needs no database."""
    from dbkit import render
    from dbkit.migrate import runner

    _check_revision("--from", from_rev)
    _check_revision("--to", to_rev)
    render.line(runner.offline_sql(state.settings, from_rev, to_rev).rstrip())


@migrate.command("check")
@json_option
@pass_state
def migrate_check(state: State, as_json: bool) -> None:
    """Exit 1 when revisions are pending, the schema differs from the models,
    or an applied revision's file was edited after it was applied."""
    from dbkit import render
    from dbkit.migrate import runner

    result = runner.check(state.settings)
    if as_json:
        render.emit_json(result.as_dict())
    else:
        for r in result.pending:
            render.line(f"pending: {r.revision}  {r.message}")
        for d in result.schema_diffs or ():
            render.line(f"schema differs from models: {d}")
        for e in result.edited:
            what = "was deleted" if e.current_sha256 is None else "was edited after it was applied"
            render.line(f"revision {e.revision} ({e.filename}) {what}: recorded sha256 {e.recorded_sha256[:12]}, "
                        f"now {(e.current_sha256 or '-')[:12]}")
        render.line(_check_summary(result))
    sys.exit(0 if result.clean else 1)


def _check_summary(result) -> str:
    """One line saying what `migrate check` compared, what it did not, and the verdict."""
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


@migrate.command("lint")
@click.option("--all", "all_revisions", is_flag=True, help="Lint every revision, not only pending ones.")
@json_option
@pass_state
def migrate_lint(state: State, all_revisions: bool, as_json: bool) -> None:
    """Lock-safety lint (squawk) of the SQL of pending (or all) revisions.  Exit 1 on violations."""
    from dataclasses import asdict

    from dbkit import render
    from dbkit.migrate import runner

    revs, violations = runner.lint(state.settings, all_revisions=all_revisions)
    if as_json:
        render.emit_json({"revisions": [r.revision for r in revs], "violations": [asdict(v) for v in violations]})
    else:
        for v in violations:
            render.line(f"{v.revision}: {v.rule}: {v.message}")
            render.line(f"    {v.statement}")
        render.line(f"{len(violations)} violation(s) in {len(revs)} revision(s)"
                    + ("" if violations else ": clean"))
    sys.exit(1 if violations else 0)


# ------------------------------------------------------------------ seed

def _seed_progress():
    """A progress callback: a rich bar per table with rows/s on a TTY, plain lines elsewhere."""
    from dbkit import render

    if not render.is_tty():
        def plain(table: str, done: int, total: int) -> None:
            if done == 0:
                render.error_line(f"dbkit: seeding {table} ({total} rows)")
        return plain, None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn)

    bar = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.speed} rows/s"), TimeElapsedColumn(), transient=False)
    tasks: dict[str, int] = {}

    def fancy(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bar.add_task(table, total=total)
        bar.update(tasks[table], completed=done, total=max(total, done))

    return fancy, bar


@cli.group(invoke_without_command=True)
@click.option("--profile", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True)
@click.option("--scale", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every row count (above 0).")
@click.option("--seed", "seed_value", type=SEED_INT, default=0, show_default=True, help="Random seed.")
@click.option("--only", metavar="TABLE,...", help="Seed only these tables (their parents must hold rows).")
@click.option("--truncate", is_flag=True, help="Empty the tables first (reload).")
@click.option("--dry-run", is_flag=True, help="Show the plan; write nothing.")
@click.option("--defer-indexes", is_flag=True, help="Drop non-constraint indexes during the load, rebuild after.")
@click.option("--tenant-skew", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="Spread rows over tenants: 0 uniform, >0 Zipf-like (1.0: a few big tenants).")
@click.option("--allow-prod", is_flag=True, help="Allow seeding when DBKIT_ENV=prod (needs --yes too).")
@click.option("--yes", is_flag=True, help="Confirm --allow-prod.")
@json_option
@click.pass_context
def seed(ctx: click.Context, profile: str, scale: float, seed_value: int, only: str | None, truncate: bool,
         dry_run: bool, defer_indexes: bool, tenant_skew: float, allow_prod: bool, yes: bool, as_json: bool) -> None:
    """Deterministic, FK-consistent fake data from seeds/ (Faker pools + binary COPY)."""
    if ctx.invoked_subcommand:
        return
    from dbkit import render
    from dbkit.seed import engine

    callback, bar = (None, None) if as_json else _seed_progress()
    only_list = None if only is None else [t.strip() for t in only.split(",") if t.strip()]
    if bar is not None:
        bar.start()
    try:
        result = engine.run(ctx.find_object(State).settings, profile=profile, scale=scale, seed=seed_value,
                            only=only_list, truncate=truncate, dry_run=dry_run, defer_indexes=defer_indexes,
                            tenant_skew=tenant_skew, allow_prod=allow_prod, yes=yes, progress=callback)
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        render.emit_json(result.as_dict())
        return
    _render_seed(result)


def _render_seed(result) -> None:
    """Timings only for tables that were written: a no-op or a dry run has none to show."""
    from dbkit import render

    about = f"seed {result.seed}, profile {result.profile}, scale {result.scale:g}"
    if result.tenant_skew:
        about += f", tenant skew {result.tenant_skew:g}"
    if result.status == "seeded":
        with_index = any(t.index_seconds is not None for t in result.tables)
        rows = [(t.table, f"{t.rows:,}", f"{t.seconds:.2f}", f"{t.rows_per_s:,.0f}",
                 *(("" if t.index_seconds is None else f"{t.index_seconds:.2f}",) if with_index else ()),
                 t.checksum or "") for t in result.tables]
        render.table(["table", "rows", "seconds", "rows/s", *(("index s",) if with_index else ()), "checksum"],
                     rows, title=f"seeded: {about}")
    elif result.status == "noop":
        render.table(["table", "rows", "checksum"], [(t.table, f"{t.rows:,}", t.checksum or "")
                                                      for t in result.tables], title=f"unchanged: {about}")
    else:
        render.table(["table", "rows to write"], [(t.table, f"{t.rows:,}") for t in result.tables],
                     title=f"plan: {about}")
    render.line(result.message)


@seed.command("status")
@json_option
@pass_state
def seed_status(state: State, as_json: bool) -> None:
    """What was seeded, when, with which seed/profile, and the current row counts."""
    from dbkit import render
    from dbkit.seed import engine

    info = engine.status(state.settings)
    if as_json:
        render.emit_json(info)
        return
    render.table(["table", "rows now"], [(t, "missing" if n is None else n) for t, n in info["tables"].items()])
    render.line()
    if not info["runs"]:
        render.line("no seed runs recorded")
        return
    render.table(["run", "finished", "seed", "profile", "scale", "skew", "rows"],
                 [(r["id"], f"{r['finished_at']:%Y-%m-%d %H:%M:%S}", r["seed"], r["profile"], r["scale"],
                   r["tenant_skew"], sum(v["rows"] for v in r["tables"].values())) for r in info["runs"]],
                 title="recent runs")


# ------------------------------------------------------------------ roles

@cli.group()
def roles() -> None:
    """Roles as code: sql/roles/*.sql, passwords from DBKIT_PASSWORD_<ROLE>."""


@roles.command("apply")
@json_option
@pass_state
def roles_apply(state: State, as_json: bool) -> None:
    """Create missing roles, correct drifted attributes, set passwords (SCRAM verifiers only)."""
    from dbkit import render
    from dbkit import roles as roles_mod

    result = roles_mod.apply(state.settings)
    if as_json:
        render.emit_json(result.as_dict())
        return
    d = result.as_dict()
    for key in ("created", "altered", "password_set"):
        if d.get(key):
            render.line(f"{key.replace('_', ' ')}: {', '.join(d[key])}")
    for action in result.hardened:
        render.line(f"tenant isolation: {action}")
    for warning in d.get("warnings", []):
        render.line(f"warning: {warning}")
    render.line("roles match sql/roles/" + ("" if result.changed else " (nothing to change)"))


@roles.command("list")
@json_option
@pass_state
def roles_list(state: State, as_json: bool) -> None:
    """The configured roles: attributes, memberships, whether a password is set."""
    from dbkit import render
    from dbkit import roles as roles_mod

    infos = [r.as_dict() for r in roles_mod.list_roles(state.settings)]
    if as_json:
        render.emit_json(infos)
        return
    yes = lambda v: "-" if v is None else ("yes" if v else "no")  # noqa: E731
    render.table(["kind", "role", "exists", "login", "bypassrls", "superuser", "member of", "password"],
                 [(r["kind"], r["name"], yes(r["exists"]), yes(r["login"]), yes(r["bypassrls"]), yes(r["superuser"]),
                   ",".join(r["member_of"]) or "-", yes(r["has_password"])) for r in infos])


@roles.command("check")
@json_option
@pass_state
def roles_check(state: State, as_json: bool) -> None:
    """Drift from the declared roles, grants and default privileges.  Exit 1 on any error-level drift."""
    from dbkit import render
    from dbkit import roles as roles_mod

    drifts = roles_mod.check(state.settings)
    errors = [d for d in drifts if d.severity == "error"]
    if as_json:
        render.emit_json({"clean": not errors, "drift": [d.as_dict() for d in drifts]})
    else:
        for d in drifts:
            render.line(f"{d.severity}: {d.describe()}")
        render.line(f"{len(errors)} error(s), {len(drifts) - len(errors)} warning(s)"
                    + ("" if errors else ": roles and grants match the declared state"))
    sys.exit(1 if errors else 0)


# ------------------------------------------------------------------ rls

@cli.group()
def rls() -> None:
    """Row-level security: audit the catalog (tests: the dbkit pytest plugin)."""


@rls.command("audit")
@click.option("--schema", "schemas", multiple=True, metavar="S", help="Schema to audit (repeatable; default DBKIT_SCHEMA).")
@json_option
@pass_state
def rls_audit(state: State, schemas: tuple[str, ...], as_json: bool) -> None:
    """Tables without RLS (or not FORCED, or without policies), policies that do nothing or open
    everything, and an enforce role that could read around RLS.  Exit 1 on any finding."""
    from dbkit import render
    from dbkit.rls.audit import audit

    report = audit(state.settings, schemas=list(schemas) or None)
    if as_json:
        render.emit_json(report.as_dict())
    else:
        for finding in report.findings:
            render.line(finding.line())
        render.line(report.summary_line())
    sys.exit(0 if report.clean else 1)


# ------------------------------------------------------------------ reset

@cli.command("reset")
@click.option("--profile", type=click.Choice(["tiny", "small", "medium", "large"]), default="small", show_default=True)
@click.option("--seed", "seed_value", type=SEED_INT, default=0, show_default=True)
@click.option("--force", is_flag=True, help="Allow it outside dev/test or on a non-local host (needs the name too).")
@click.option("--yes-i-know", "confirmed", metavar="DBNAME", help="Confirm the database name without a prompt (CI).")
@json_option
@pass_state
def reset_cmd(state: State, profile: str, seed_value: int, force: bool, confirmed: str | None, as_json: bool) -> None:
    """Drop and recreate the database, migrate to head, seed a profile (dev and test)."""
    from dbkit import render
    from dbkit.reset import reset

    settings = state.settings
    if force and confirmed is None and sys.stdin.isatty():
        confirmed = click.prompt("Type the name of the database to drop and recreate")
    result = reset(settings, profile=profile, seed=seed_value, force=force, confirmed_name=confirmed)
    if as_json:
        render.emit_json(result.as_dict())
        return
    render.line(f"reset {result.database}: migrated to {', '.join(result.migrated_to)}, "
                f"seeded {result.seeded_rows} rows ({profile}) in {result.seconds:.1f} s")


# ------------------------------------------------------------------ backup / restore

def _parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    from dbkit.errors import ConfigError

    out = {}
    for tag in tags:
        key, eq, value = tag.partition("=")
        if not eq or not key:
            raise ConfigError("--tag", f"is {tag!r}, not key=value", example="--tag env=prod")
        out[key] = value
    return out


def _render_manifest_rows(manifests) -> list[tuple]:
    return [(m.id, f"{m.finished_at:%Y-%m-%d %H:%M:%S}", _size(m.stored_bytes), m.compression,
             "age" if m.encryption else "no", m.database, m.alembic_revision or "-", "complete") for m in manifests]


def _bytes_progress(label: str):
    """(callback, bar): a rich bytes + MB/s bar on a TTY, plain lines elsewhere."""
    from dbkit import render

    if not render.is_tty():  # CI logs: a plain line every 256 MiB
        step = 256 * 1024 * 1024
        seen = {"next": step, "t0": time.perf_counter()}

        def plain(done: int) -> None:
            if done >= seen["next"]:
                seen["next"] += step
                rate = done / max(time.perf_counter() - seen["t0"], 1e-6) / 1e6
                render.error_line(f"dbkit: {label}: {done / 2**20:,.0f} MiB ({rate:,.0f} MB/s)")

        return plain, None
    from rich.progress import DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    bar = Progress(TextColumn(label), DownloadColumn(), TransferSpeedColumn(), TimeElapsedColumn())
    task = bar.add_task(label, total=None)
    bar.start()
    return (lambda done: bar.update(task, completed=done)), bar


_LEVELS = {"zstd": (1, 22), "gzip": (0, 9)}


def _check_level(compress: str, level: int | None) -> None:
    from dbkit.errors import ConfigError

    if level is None:
        return
    if compress not in _LEVELS:
        raise ConfigError("--level", f"is {level}, but --compress {compress} has no levels",
                          example="--compress zstd --level 3 (or drop --level)")
    low, high = _LEVELS[compress]
    if not low <= level <= high:
        raise ConfigError("--level", f"is {level}; --compress {compress} takes {low} to {high}",
                          example=f"--level {3 if compress == 'zstd' else 6}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@cli.group(invoke_without_command=True)
@click.option("--to", "to", metavar="URI", help="s3://bucket/prefix, file:///path or a path (default DBKIT_BACKUP_URI).")
@click.option("--compress", type=click.Choice(["zstd", "gzip", "none"]), default="zstd", show_default=True)
@click.option("--level", type=int, help="Compression level (zstd 1-22, gzip 0-9).")
@click.option("--encrypt-to", "encrypt_to", multiple=True, metavar="AGE_RECIPIENT",
              help="Encrypt to this age public key (repeatable; also DBKIT_AGE_RECIPIENTS).")
@click.option("--sse", type=click.Choice(["AES256", "aws:kms", "aws:kms:dsse"]), help="S3 server-side encryption.")
@click.option("--kms-key-id", metavar="ID", help="KMS key for --sse aws:kms.")
@click.option("--storage-class", metavar="C", help="S3 storage class, e.g. STANDARD_IA.")
@click.option("--tag", "tags", multiple=True, metavar="K=V", help="S3 object tag (repeatable).")
@click.option("--globals", "include_globals", is_flag=True,
              help="Also store pg_dumpall --globals-only --no-role-passwords as globals.sql.")
@click.option("--metrics-file", metavar="PATH", help="Write Prometheus textfile metrics (node_exporter).")
@json_option
@click.pass_context
def backup(ctx: click.Context, to, compress, level, encrypt_to, sse, kms_key_id, storage_class, tags,
           include_globals, metrics_file, as_json: bool) -> None:
    """pg_dump streamed to S3/MinIO or disk; the manifest is written last."""
    if ctx.invoked_subcommand:
        return
    from dbkit import render
    from dbkit.backup import pipeline

    settings = ctx.find_object(State).settings
    _check_level(compress, level)
    _check_backup_uri("--to", to, settings)
    progress, bar = (None, None) if as_json else _bytes_progress("pg_dump")
    try:
        manifest = pipeline.backup(settings, to=to, compression=compress, level=level,
                                   encrypt_to=tuple(encrypt_to), sse=sse, kms_key_id=kms_key_id,
                                   storage_class=storage_class, tags=_parse_tags(tags),
                                   include_globals=include_globals, metrics_file=metrics_file, progress=progress)
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        render.emit_json(manifest.to_dict())
        return
    render.line(f"backup {manifest.id}: {_size(manifest.raw_bytes)} dumped, {_size(manifest.stored_bytes)} stored "
                f"({manifest.compression}{', age' if manifest.encryption else ''}) in {manifest.duration_s:.1f} s; "
                f"sha256 {manifest.sha256[:16]}…")


@backup.command("list")
@click.option("--from", "source", metavar="URI", help="Backup location (default DBKIT_BACKUP_URI).")
@json_option
@pass_state
def backup_list(state: State, source, as_json: bool) -> None:
    """Complete backups, newest first (folders without a manifest are listed as incomplete)."""
    from dbkit import render
    from dbkit.backup import pipeline

    _check_backup_uri("--from", source, state.settings)
    storage = pipeline.storage_for(state.settings, source)
    found = pipeline.scan(state.settings, source, storage)
    if as_json:
        render.emit_json({"backups": [m.to_dict() for m in found.complete],
                          "incomplete": [{"id": i, "modified": t} for i, t in found.incomplete],
                          "unreadable": [{"id": i, "error": e} for i, e in found.unreadable]})
        return
    rows = _render_manifest_rows(found.complete)
    rows += [(i, f"{t:%Y-%m-%d %H:%M:%S}", "-", "-", "-", "-", "-", "incomplete (no manifest)")
             for i, t in found.incomplete]
    rows += [(i, "-", "-", "-", "-", "-", "-", f"unreadable: {e}") for i, e in found.unreadable]
    title = f"backups in {storage.uri}"
    if not rows:
        render.line(f"{title}: none yet (`dbkit backup` writes one)")
        return
    render.table(["id", "finished (UTC)", "size", "compression", "encrypted", "database", "revision", "status"], rows,
                 title=f"{title} ({len(found.complete)} complete)")


@backup.command("show")
@click.argument("backup_id", default="latest")
@click.option("--from", "source", metavar="URI")
@pass_state
def backup_show(state: State, backup_id: str, source) -> None:
    """The manifest of one backup (ID or latest), as JSON."""
    from dbkit import render
    from dbkit.backup import pipeline

    _check_backup_uri("--from", source, state.settings)
    render.emit_json(pipeline.show(state.settings, backup_id, source).to_dict())


@backup.command("verify")
@click.argument("backup_id", default="latest")
@click.option("--from", "source", metavar="URI")
@click.option("--restore-test", is_flag=True, help="Also restore it into a throw-away database.")
@json_option
@pass_state
def backup_verify(state: State, backup_id: str, source, restore_test: bool, as_json: bool) -> None:
    """Download and check the sha256 (and decryption); --restore-test restores it too."""
    from dbkit import render
    from dbkit.backup import pipeline

    _check_backup_uri("--from", source, state.settings)
    result = pipeline.verify(state.settings, backup_id, source=source, restore_test=restore_test)
    if as_json:
        render.emit_json(result)
        return
    line = f"backup {result['id']}: sha256 ok"
    if result["restore_test"]:
        line += f"; restore test ok ({result['restore_test']['tables']} tables in {result['restore_test']['seconds']} s)"
    render.line(line)


@backup.command("prune")
@click.option("--from", "source", metavar="URI")
@click.option("--keep-last", type=click.IntRange(min=0), default=0)
@click.option("--keep-daily", type=click.IntRange(min=0), default=0)
@click.option("--keep-weekly", type=click.IntRange(min=0), default=0)
@click.option("--keep-monthly", type=click.IntRange(min=0), default=0)
@click.option("--min-keep", type=int, default=1, show_default=True, help="Never keep fewer than this many.")
@click.option("--apply", "apply_", is_flag=True, help="Really delete (default: show the plan only).")
@json_option
@pass_state
def backup_prune(state: State, source, keep_last, keep_daily, keep_weekly, keep_monthly, min_keep, apply_,
                 as_json) -> None:
    """Retention: keep the last N and the newest per day/week/month; dry run unless --apply."""
    from dbkit import render
    from dbkit.backup import pipeline

    _check_backup_uri("--from", source, state.settings)
    result = pipeline.prune(state.settings, uri=source, keep_last=keep_last, keep_daily=keep_daily,
                            keep_weekly=keep_weekly, keep_monthly=keep_monthly, min_keep=min_keep, apply=apply_)
    if as_json:
        render.emit_json(result)
        return
    verb = "deleted" if apply_ else "would delete"
    for k in result["keep"]:
        render.line(f"keep    {k['id']}  ({', '.join(k['reasons'])})")
    for d in result["delete"]:
        render.line(f"{verb:7} {d}")
    for d in result["incomplete_removed"]:
        render.line(f"{verb:7} {d}  (incomplete, older than a day)")
    for u in result["stale_uploads_aborted"]:
        render.line(f"{'aborted' if apply_ else 'would abort'} stale upload {u}")
    if not apply_:
        render.line("dry run: pass --apply to delete")


@cli.command("restore")
@click.argument("backup_id", default="latest")
@click.option("--from", "source", metavar="URI", help="Backup location (default DBKIT_BACKUP_URI).")
@click.option("--into", metavar="NEW_DB_NAME", help="Name of the new database (default <db>_restore_<time>).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="pg_restore parallel jobs; above 1 the dump is spooled to a temporary file first "
                   "(pg_restore -j needs a seekable file), otherwise it streams.")
@click.option("--globals", "with_globals", is_flag=True, help="Apply the backup's globals.sql first.")
@click.option("--swap", is_flag=True,
              help="Then rename it into place, keeping the current database as <db>_pre_restore_<time>.")
@click.option("--yes", is_flag=True, help="Confirm --swap.")
@json_option
@pass_state
def restore(state: State, backup_id, source, into, jobs, with_globals, swap, yes, as_json) -> None:
    """Restore a backup (ID or latest) into a NEW database; nothing is overwritten."""
    from dbkit import render
    from dbkit.backup import pipeline

    _check_db_name("--into", into)
    _check_backup_uri("--from", source, state.settings)
    result = pipeline.restore(state.settings, backup_id, source=source, into=into, jobs=jobs, swap=swap, yes=yes,
                              with_globals=with_globals)
    if as_json:
        render.emit_json(result.as_dict())
        return
    render.line(f"restored backup {result.backup_id} into database {result.database} "
                f"({result.tables} tables, {result.seconds:.1f} s); sha256 verified")
    render.line(f"alembic revision: {result.alembic_revision or '-'}; migrate check: {result.migrate_check or '-'}")
    for warning in result.warnings:
        render.line(f"warning: {warning}")
    if result.swapped:
        render.line(f"swapped: the previous database is kept as {result.previous} (rename it back to undo)")


# ------------------------------------------------------------------ entry point

def _not_utf8_argument(argv: list[str]) -> str | None:
    """The option (or argument number) of the first command-line argument that is not UTF-8 text.

    Python hands such bytes over as lone surrogates; they cannot be database names, revisions or
    URIs, and printing them back fails, so they are refused before anything runs.
    """
    for i, arg in enumerate(argv):
        if any("\ud800" <= ch <= "\udfff" for ch in arg):
            if arg.startswith("--") and "=" in arg:
                return arg.split("=", 1)[0]
            if i and argv[i - 1].startswith("-"):
                return f"argument {i + 1} (after {argv[i - 1]})"
            return f"argument {i + 1}"
    return None


_TOKEN_LONG = re.compile(r"\S{161,}")


def error_text(text: str) -> str:
    """One printable line for stderr: passwords masked, long echoed values cut to 80 characters + "…"."""
    text = mask_secrets(str(text))
    text = " ".join(text.splitlines())
    text = _TOKEN_LONG.sub(lambda m: m[0][:80] + "…", text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # undecodable argv bytes as \udcff
    return text if len(text) <= 2000 else text[:2000] + "…"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to one line + exit code."""
    _state.verbose = os.environ.get("DBKIT_VERBOSE", "") not in ("", "0")
    _setup_logging(30)  # WARNING: e.g. DATABASE_URL pointing at PgBouncer for a command that needs a direct line
    args = sys.argv[1:] if argv is None else list(argv)
    bad = _not_utf8_argument(args)
    if bad is not None:
        click.echo(f"dbkit: error: {bad} is not valid UTF-8 text; pass names, revisions and URIs in UTF-8 "
                   "(plain ASCII is safest)", err=True)
        sys.exit(2)
    try:
        rv = cli.main(args=args, prog_name="dbkit", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("dbkit: aborted", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:  # `dbkit`, `dbkit dev`: the help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # bad option values, unknown commands: one line, exit 2
        where = f"`{exc.ctx.command_path} --help`" if exc.ctx is not None else "`dbkit --help`"
        click.echo(f"dbkit: error: {error_text(exc.format_message()).rstrip('.')}; see {where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"dbkit: error: {error_text(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except DbkitError as exc:
        if _state.verbose:
            traceback.print_exc()
        click.echo(f"dbkit: error: {error_text(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("dbkit: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are rendered
        if _state.verbose:
            traceback.print_exc()
        click.echo(
            f"dbkit: unexpected error: {type(exc).__name__}: {error_text(first_line(str(exc)))} "
            "(rerun with -v for the traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)
