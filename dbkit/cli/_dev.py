"""`dbkit dev`: the embedded local cluster (dbkit._dev)."""

from __future__ import annotations

import os
import sys

import click

from dbkit import _render as render
from dbkit.cli._common import State, check_db_name, json_option, pass_state
from dbkit.errors import MissingDependency


@click.group()
def dev() -> None:
    """The embedded local PostgreSQL cluster in .dbkit/ (development and tests)."""


def _cluster(state: State):
    from dbkit._dev import DevCluster

    return DevCluster.from_settings(state.settings)


def _describe_status(status):
    for note in status.notes:
        yield f"note: {note}"
    if status.running:
        yield f"running  {status.url}  (pid {status.pid}, data {status.data_dir})"
    else:
        where = status.data_dir if status.initialized else f"{status.base_dir} (not initialized)"
        yield f"stopped  {where}"


@dev.command("up")
@click.option("--no-extensions", is_flag=True, help="Do not create the configured extensions.")
@json_option
@pass_state
def dev_up(state: State, no_extensions: bool, as_json: bool) -> None:
    """Start the cluster (initializing it the first time), create the database and extensions."""
    from dbkit import _dev as devmod

    result = devmod.provision(_cluster(state), () if no_extensions else state.settings.extensions)
    render.show(result, _describe_provisioned, as_json=as_json)


def _describe_provisioned(result):
    yield from _describe_status(result.status)
    if result.database_created:
        yield f"created database {result.url.dbname}"
    if result.extensions_created:
        yield f"created extensions: {', '.join(result.extensions_created)}"


@dev.command("down")
@click.option("--purge", is_flag=True, help="Also delete the cluster's data directory.")
@pass_state
def dev_down(state: State, purge: bool) -> None:
    """Stop the cluster (fast shutdown); --purge deletes its data too."""
    render.show(_cluster(state).down(purge=purge), _describe_status)


@dev.command("status")
@json_option
@pass_state
def dev_status(state: State, as_json: bool) -> None:
    """Running or stopped, with the URL.  Exit 0 when running, 1 when stopped."""
    status = _cluster(state).status()
    render.show(status, _describe_status, as_json=as_json)
    sys.exit(0 if status.running else 1)


@dev.command("url")
@click.option("--database", "dbname", metavar="NAME", help="Database name (default: DBKIT_DEV_DATABASE).")
@pass_state
def dev_url(state: State, dbname: str | None) -> None:
    """Print the cluster's URL (starts it when needed), e.g. for DATABASE_URL=$(dbkit dev url)."""
    from dbkit import _dev as devmod

    check_db_name("--database", dbname)
    result = devmod.provision(_cluster(state), state.settings.extensions)
    render.line(result.url.with_dbname(dbname).masked if dbname else result.url.masked)


@dev.command("psql", context_settings={"ignore_unknown_options": True})
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
@pass_state
def dev_psql(state: State, psql_args: tuple[str, ...]) -> None:
    """Open psql on the dev cluster's database (extra arguments go to psql)."""
    import shutil

    from dbkit import _dev as devmod

    dbname, rest = _psql_dbname(psql_args)
    check_db_name("-d", dbname)
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
