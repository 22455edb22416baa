"""`dbkit roles` (roles as code, dbkit.roles) and `dbkit rls audit` (dbkit.rls._audit)."""

from __future__ import annotations

import sys

import click

from dbkit import _render as render
from dbkit._render import Table
from dbkit.cli._common import State, json_option, pass_state


@click.group()
def roles() -> None:
    """Roles as data: the role model ([tool.dbkit.roles]), passwords from their variables."""


def _describe_apply(result):
    for label, names in (("created", result.created), ("altered", result.altered),
                         ("password set", result.password_set)):
        if names:
            yield f"{label}: {', '.join(names)}"
    for action in result.hardened:
        yield f"tenant isolation: {action}"
    for item in result.handed_over:
        yield f"owner: {item}"
    for warning in result.warnings:
        yield f"warning: {warning}"
    yield "roles match the role model" + ("" if result.changed else " (nothing to change)")


@roles.command("apply")
@click.option("--take-ownership", is_flag=True,
              help="Also give every object of the schema the owner role does not own to it (adopting a project "
                   "whose tables another role created; works where REASSIGN OWNED is refused).")
@json_option
@pass_state
def roles_apply(state: State, take_ownership: bool, as_json: bool) -> None:
    """Create missing roles, correct drifted attributes, set passwords (SCRAM verifiers only)."""
    from dbkit import roles as roles_mod

    render.show(roles_mod.apply(state.settings, take_ownership=take_ownership), _describe_apply, as_json=as_json)


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "no")


def _describe_list(infos):
    yield Table(["kind", "role", "exists", "login", "bypassrls", "superuser", "member of", "password"],
                [(r.kind, r.name, _yes(r.exists), _yes(r.login), _yes(r.bypassrls), _yes(r.superuser),
                  ",".join(r.member_of) or "-", _yes(r.has_password)) for r in infos])


@roles.command("list")
@json_option
@pass_state
def roles_list(state: State, as_json: bool) -> None:
    """The configured roles: attributes, memberships, whether a password is set."""
    from dbkit import roles as roles_mod

    render.show(roles_mod.list_roles(state.settings), _describe_list, as_json=as_json)


def _describe_drift(drifts):
    errors = sum(d.severity == "error" for d in drifts)
    for d in drifts:
        yield f"{d.severity}: {d.describe()}"
    yield (f"{errors} error(s), {len(drifts) - errors} warning(s)"
           + ("" if errors else ": roles and grants match the declared state"))


@roles.command("check")
@json_option
@pass_state
def roles_check(state: State, as_json: bool) -> None:
    """Drift from the declared roles, grants and default privileges.  Exit 1 on any error-level drift."""
    from dbkit import roles as roles_mod

    drifts = roles_mod.check(state.settings)
    clean = not any(d.severity == "error" for d in drifts)
    render.show(drifts, _describe_drift, as_json=as_json,
                json_data={"clean": clean, "drift": render.jsonable(list(drifts))})
    sys.exit(0 if clean else 1)


@roles.command("userlist")
@click.option("--output", "-o", type=click.Path(dir_okay=False), metavar="PATH",
              help="Write PgBouncer's auth_file there (mode 0600) instead of printing it.")
@click.option("--role", "only", multiple=True, metavar="NAME", help="Only this login role (repeatable).")
@pass_state
def roles_userlist(state: State, output: str | None, only: tuple[str, ...]) -> None:
    """PgBouncer's auth_file (userlist.txt) from the role model: the SCRAM verifier of each login role
    (never the owner), as `roles apply` set them.  Needs a superuser connection (pg_authid)."""
    from dbkit.roles._pgbouncer import userlist, write_userlist

    text = userlist(state.settings, roles=list(only) or None)
    if output is None:
        click.echo(text, nl=False)
        return
    path = write_userlist(output, text)
    click.echo(f"wrote {path} ({sum(1 for line in text.splitlines() if line.strip())} roles)")


@click.group()
def rls() -> None:
    """Row-level security: audit the catalog (tests: the dbkit pytest plugin)."""


def _describe_audit(report):
    for finding in report.findings:
        yield finding.line()
    yield report.summary_line()


@rls.command("audit")
@click.option("--schema", "schemas", multiple=True, metavar="S",
              help="Schema to audit (repeatable; default DBKIT_SCHEMA).")
@json_option
@pass_state
def rls_audit(state: State, schemas: tuple[str, ...], as_json: bool) -> None:
    """Tables without RLS (or not FORCED, or without policies), policies that do nothing or open
    everything, and an enforce role that could read around RLS.  Exit 1 on any finding."""
    from dbkit.rls._audit import audit

    report = audit(state.settings, schemas=list(schemas) or None)
    render.show(report, _describe_audit, as_json=as_json)
    sys.exit(0 if report.clean else 1)
