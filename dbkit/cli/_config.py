"""`dbkit config show|check`: the resolved settings and where each came from; every problem of them and of the
application's own variables (``[tool.dbkit.variables]``)."""

from __future__ import annotations

import sys

import click

from dbkit import _render as render
from dbkit.cli._common import State, json_option, pass_state


@click.group()
def config() -> None:
    """Inspect the resolved settings."""


@config.command("show")
@json_option
@pass_state
def config_show(state: State, as_json: bool) -> None:
    """Every setting with its value (secrets masked) and where it came from, then the application's variables
    declared in [tool.dbkit.variables]."""
    settings = state.settings
    rows = settings.describe()
    for var in settings.variables:  # what may be shown of each (a secret as ***), not judged: `config check`
        value, source = settings.variable_values.get(var.name, (None, None))
        rows.append((var.name, "(unset)" if value is None else var.shown(value), source or "unset"))
    render.show(rows, lambda rows: [render.Table(["setting", "value", "source"], rows)], as_json=as_json,
                json_data=[{"variable": v, "value": val, "source": src} for v, val, src in rows])


@config.command("check")
@json_option
@pass_state
def config_check(state: State, as_json: bool) -> None:
    """Every problem of dbkit's settings and of the variables declared in [tool.dbkit.variables]
    (missing, malformed), one line each; secrets are never shown.

    Exit code: 0 when there is none, 2 otherwise.
    """
    from dbkit._env_check import check_config
    from dbkit.config import load_settings

    report = check_config(load_settings(state.overrides, lenient=True))
    render.show(report, _describe, as_json=as_json)
    if not as_json:
        for text in report.problems:
            render.error_line(text)
        for text in report.variables.warnings:
            render.error_line(f"warning: {text}")
    sys.exit(0 if report.ok else 2)


def _describe(report):
    checks = report.variables.variables
    if checks:
        rows = [(v.name, v.type, "yes" if v.required else "no", v.source or "", v.value or "", v.status)
                for v in checks]
        yield render.Table(["variable", "type", "required", "source", "value", "status"], rows,
                           title=f"Variables (DBKIT_ENV={report.env})")
        yield ""
    n = len(report.problems)
    if n:
        yield f"{n} problem(s): see below (one line each)"
    else:
        yield f"ok: dbkit's settings and {len(checks)} declared variable(s) are valid"
