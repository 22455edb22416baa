"""`dbkit reset`: drop, recreate, migrate and seed the database (dbkit._reset)."""

from __future__ import annotations

import sys

import click

from dbkit import _render as render
from dbkit.cli._common import State, json_option, pass_state, profile_option, seed_option


@click.command("reset")
@profile_option()
@seed_option()
@click.option("--anchor", metavar="DATE|TIMESTAMP",
              help="The \"now\" seeded time series end at, as `dbkit seed --anchor` takes it.")
@click.option("--force", is_flag=True, help="Allow it outside dev/test or on a non-local host (needs the name too).")
@click.option("--yes-i-know", "confirmed", metavar="DBNAME", help="Confirm the database name without a prompt (CI).")
@json_option
@pass_state
def reset(state: State, profile: str, seed_value: int, anchor: str | None, force: bool, confirmed: str | None,
          as_json: bool) -> None:
    """Drop and recreate the database, migrate to head, seed a profile (dev and test)."""
    from dbkit._reset import reset as reset_database

    settings = state.settings
    if force and confirmed is None and sys.stdin.isatty():
        confirmed = click.prompt("Type the name of the database to drop and recreate")
    result = reset_database(settings, profile=profile, seed=seed_value, force=force, confirmed_name=confirmed,
                            anchor=anchor)
    render.show(result, lambda r: [f"reset {r.database}: migrated to {', '.join(r.migrated_to)}, seeded "
                                   f"{r.seeded_rows} rows ({profile}, anchor {r.anchor}) in {r.seconds:.1f} s"],
                as_json=as_json)
