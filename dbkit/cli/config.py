"""`dbkit config show`: the resolved settings and where each came from."""

from __future__ import annotations

import click

from dbkit import render
from dbkit.cli._common import State, json_option, pass_state


@click.group()
def config() -> None:
    """Inspect the resolved settings."""


@config.command("show")
@json_option
@pass_state
def config_show(state: State, as_json: bool) -> None:
    """Every setting with its value (secrets masked) and where it came from."""
    rows = state.settings.describe()
    render.show(rows, lambda rows: [render.Table(["setting", "value", "source"], rows)], as_json=as_json,
                json_data=[{"variable": v, "value": val, "source": src} for v, val, src in rows])
