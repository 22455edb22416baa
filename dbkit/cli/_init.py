"""`dbkit init`: the files a project needs to use dbkit (dbkit.init)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dbkit import _render as render
from dbkit.cli._common import json_option


def _describe(result):
    yield f"dbkit init in {result.directory}"
    width = max(len(f.action) for f in result.files)
    for f in result.files:
        yield f"  {f.action.ljust(width)}  {f.path}" + (f"  ({f.reason})" if f.reason else "")
    if not result.changed:
        yield "nothing to write: every file is there already (--force overwrites them)"
    yield ""
    yield "Next, in that directory:"
    for step in result.next_steps:
        yield f"  {step}"


@click.command("init")
@click.option("--dir", "directory", metavar="PATH", default=".", show_default=True,
              help="The project's directory (created if missing).")
@click.option("--schema", default="app", show_default=True, help="Schema of the application's tables (or public).")
@click.option("--rls", "rls", type=click.Choice(["tenant", "jwt", "none"]), default="tenant", show_default=True,
              help="RLS model: a tenant claim setting, JSON claims (PostgREST/Supabase) or none.")
@click.option("--tenant-claim", metavar="SETTING", help="Setting carrying the tenant (--rls tenant; app.tenant_id).")
@click.option("--jwt-claims", metavar="SETTING",
              help="Setting holding the JSON claims (--rls jwt; request.jwt.claims).")
@click.option("--jwt-user-key", metavar="KEY", help="Claims key of the user (--rls jwt; sub).")
@click.option("--jwt-tenant-key", metavar="KEY",
              help="Claims key of the tenant/organisation (--rls jwt; unset: rows are owned per user).")
@click.option("--owner-role", default="app_owner", show_default=True, help="NOLOGIN role that owns every table.")
@click.option("--enforce-role", default="app_rls", show_default=True,
              help="LOGIN role(s) the application connects as, subject to RLS (comma-separated).")
@click.option("--bypass-role", default="app_full", show_default=True,
              help="LOGIN BYPASSRLS role(s) for trusted workers; none for no such role.")
@click.option("--readonly-role", default="app_readonly", show_default=True,
              help="LOGIN read-only role(s); none for no such role.")
@click.option("--password-env", "password_env", multiple=True, metavar="ROLE=VAR",
              help="Take ROLE's password from VAR (default DBKIT_PASSWORD_<ROLE>); repeatable.")
@click.option("--extensions", default="pgcrypto", show_default=True,
              help="PostgreSQL extensions, comma-separated (e.g. pgcrypto,vector,timescaledb).")
@click.option("--force", is_flag=True, help="Overwrite files that exist (and replace [tool.dbkit]).")
@json_option
def init(directory: str, as_json: bool, **options: Any) -> None:
    """Write what a project needs to use dbkit: migrations, seeds, RLS tests, settings.

    alembic.ini, migrations/ (env.py with dbkit's rails, models.py, a first revision with the extensions,
    the roles and one example table protected by the RLS model), seeds/, tests/test_rls.py, .env.example
    and [tool.dbkit] in pyproject.toml.  Files that exist are skipped unless --force; an existing Alembic
    project gets dbkit's settings only.
    """
    from dbkit.init import InitOptions
    from dbkit.init import init as write

    # every other option is the InitOptions field of the same name
    render.show(write(Path(directory), InitOptions(**options)), _describe, as_json=as_json)
