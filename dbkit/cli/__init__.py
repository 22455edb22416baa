"""The ``dbkit`` command line: a thin map from options onto library functions.

The top-level group is a :class:`LazyGroup` (click's "Lazily Loading Subcommands" pattern): it knows
each command's name, module and one-line help, and imports the module only when the command runs or
shows its own ``--help``.  No SQL here and no heavy imports at module level, so ``dbkit --help``
stays fast.  Errors are caught once, in :func:`main`, and rendered as one line (traceback only with
``-v``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import traceback

import click

from dbkit import __version__
from dbkit._urls import first_line, has_surrogates, mask_secrets, parse_database_url
from dbkit.cli._common import CONTEXT, State
from dbkit.errors import ConfigError, DbkitError

__all__ = ["cli", "main", "error_text", "LazyGroup", "COMMANDS"]

#: name -> ("module:attribute", the help's first paragraph, as `dbkit --help` shortens it)
COMMANDS: dict[str, tuple[str, str]] = {
    "backup": ("dbkit.cli._backup:backup", "pg_dump streamed to S3/MinIO or disk; the manifest is written last."),
    "check": ("dbkit.cli._check:check", "Is the database side healthy?  Settings, database, extensions, connections, "
              "roles, migrations, RLS, backup target and backups, each with a fix hint."),
    "config": ("dbkit.cli._config:config", "Inspect the resolved settings."),
    "dev": ("dbkit.cli._dev:dev", "The embedded local PostgreSQL cluster in .dbkit/ (development and tests)."),
    "init": ("dbkit.cli._init:init",
             "Write what a project needs to use dbkit: migrations, seeds, RLS tests, settings."),
    "migrate": ("dbkit.cli._migrate:migrate", "Upgrade the database to head (or --to REV), with safety rails."),
    "reset": ("dbkit.cli._reset:reset",
              "Drop and recreate the database, migrate to head, seed a profile (dev and test)."),
    "restore": ("dbkit.cli._backup:restore",
                "Restore a backup (ID or latest) into a NEW database; nothing is overwritten."),
    "rls": ("dbkit.cli._roles:rls", "Row-level security: audit the catalog (tests: the dbkit pytest plugin)."),
    "roles": ("dbkit.cli._roles:roles",
              "Roles as data: the role model ([tool.dbkit.roles]), passwords from their variables."),
    "seed": ("dbkit.cli._seed:seed", "Deterministic, FK-consistent fake data from seeds/ (Faker pools + binary COPY)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands (all of them) are imported on first use ("module:attribute" per name)."""

    def __init__(self, *args, lazy_subcommands: dict[str, tuple[str, str]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = lazy_subcommands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.lazy_subcommands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return None
        module, _, attribute = self.lazy_subcommands[cmd_name][0].partition(":")
        return getattr(importlib.import_module(module), attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `dbkit --help`, from the help kept in the map: no command module is imported."""
        limit = formatter.width - 6 - max(map(len, self.lazy_subcommands))
        rows = [(name, click.Command(name, help=self.lazy_subcommands[name][1]).get_short_help_str(limit))
                for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


_state = State()  # the error handler in main() reads .verbose


@click.group(cls=LazyGroup, lazy_subcommands=COMMANDS, context_settings=CONTEXT)
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


# ------------------------------------------------------------------ the one error boundary

def _not_utf8_argument(argv: list[str]) -> str | None:
    """The option (or argument number) of the first command-line argument that is not UTF-8 text.

    Python hands such bytes over as lone surrogates; they cannot be database names, revisions or
    URIs, and printing them back fails, so they are refused before anything runs.
    """
    for i, arg in enumerate(argv):
        if has_surrogates(arg):
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


def _fail(message: str, exit_code: int, *, traceback_too: bool = False) -> None:
    if traceback_too and _state.verbose:
        traceback.print_exc()
    click.echo(message, err=True)
    sys.exit(exit_code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the CLI and map errors to one line + exit code."""
    from dbkit.cli._common import setup_logging

    _state.verbose = os.environ.get("DBKIT_VERBOSE", "") not in ("", "0")
    setup_logging(30)  # WARNING: e.g. DATABASE_URL pointing at PgBouncer for a command that needs a direct line
    args = sys.argv[1:] if argv is None else list(argv)
    bad = _not_utf8_argument(args)
    if bad is not None:
        _fail(f"dbkit: error: {bad} is not valid UTF-8 text; pass names, revisions and URIs in UTF-8 "
              "(plain ASCII is safest)", 2)
    try:
        rv = cli.main(args=args, prog_name="dbkit", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns Ctrl-C into Abort: keep the shell's 130 for it
        if isinstance(exc.__context__, KeyboardInterrupt):
            _fail("dbkit: interrupted", 130)
        _fail("dbkit: aborted", 1)
    except click.exceptions.NoArgsIsHelpError as exc:  # `dbkit`, `dbkit dev`: the help, as click shows it
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # bad option values, unknown commands: one line, exit 2
        where = f"`{exc.ctx.command_path} --help`" if exc.ctx is not None else "`dbkit --help`"
        _fail(f"dbkit: error: {error_text(exc.format_message()).rstrip('.')}; see {where}", exc.exit_code)
    except click.ClickException as exc:
        _fail(f"dbkit: error: {error_text(exc.format_message())}", exc.exit_code)
    except DbkitError as exc:
        _fail(f"dbkit: error: {error_text(str(exc))}", exc.exit_code, traceback_too=True)
    except KeyboardInterrupt:
        _fail("dbkit: interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are rendered
        _fail(f"dbkit: unexpected error: {type(exc).__name__}: {error_text(first_line(str(exc)))} "
              "(rerun with -v for the traceback)", 1, traceback_too=True)
    sys.exit(rv if isinstance(rv, int) else 0)
