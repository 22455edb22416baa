"""`dbkit seed`: deterministic fake data (dbkit.seed._engine).

`seed status` renders ``engine.status()``'s :class:`~dbkit.seed._engine.SeedStatus` (its fields; ``--json``: its
``as_dict()``).
"""

from __future__ import annotations

import contextlib

import click

from dbkit import _render as render
from dbkit._render import Table
from dbkit.cli._common import FiniteFloat, State, json_option, pass_state, profile_option, seed_option


def _seed_progress():
    """A progress callback: a rich bar per table with rows/s on a TTY, plain lines elsewhere."""
    if not render.is_tty():
        def plain(table: str, done: int, total: int) -> None:
            if done == 0:
                render.error_line(f"dbkit: seeding {table} ({total} rows)")
        return plain, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<18}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.speed} rows/s"), TimeElapsedColumn(), transient=False)
    tasks: dict[str, int] = {}

    def fancy(table: str, done: int, total: int) -> None:
        if table not in tasks:
            tasks[table] = bar.add_task(table, total=total)
        bar.update(tasks[table], completed=done, total=max(total, done))

    return fancy, bar


@click.group(invoke_without_command=True)
@profile_option()
@click.option("--scale", type=FiniteFloat(min=0, min_open=True), default=1.0, show_default=True,
              help="Multiply every row count (above 0).")
@seed_option(help="Random seed.")
@click.option("--only", metavar="TABLE,...", help="Seed only these tables (their parents must hold rows).")
@click.option("--truncate", is_flag=True, help="Empty the tables first (reload).")
@click.option("--dry-run", is_flag=True, help="Show the plan; write nothing.")
@click.option("--defer-indexes", is_flag=True, help="Drop non-constraint indexes during the load, rebuild after.")
@click.option("--tenant-skew", type=FiniteFloat(min=0), default=0.0, show_default=True,
              help="Spread rows over tenants: 0 uniform, >0 Zipf-like (1.0: a few big tenants).")
@click.option("--anchor", metavar="DATE|TIMESTAMP",
              help="The \"now\" time series end at (ISO; a date is midnight UTC, no zone is UTC). "
                   "Default: DBKIT_SEED_ANCHOR, else the start of today (UTC).")
@click.option("--compress", is_flag=True,
              help="Then run the compression policy of each seeded hypertable (compresses what it would).")
@click.option("--allow-prod", is_flag=True, help="Allow seeding when DBKIT_ENV=prod (needs --yes too).")
@click.option("--yes", is_flag=True, help="Confirm --allow-prod.")
@json_option
@click.pass_context
def seed(ctx: click.Context, seed_value: int, only: str | None, as_json: bool, **options) -> None:
    """Deterministic, FK-consistent fake data from seeds/ (Faker pools + binary COPY)."""
    if ctx.invoked_subcommand:
        return
    from dbkit.seed import _engine as engine

    callback, bar = (None, None) if as_json else _seed_progress()
    only_list = None if only is None else [t.strip() for t in only.split(",") if t.strip()]
    with bar or contextlib.nullcontext():
        # every other option is the engine.run() argument of the same name
        result = engine.run(ctx.find_object(State).settings, seed=seed_value, only=only_list, progress=callback,
                            **options)
    render.show(result, _describe_seed, as_json=as_json)


def _describe_seed(result):
    """Timings only for tables that were written: a no-op or a dry run has none to show."""
    about = f"seed {result.seed}, profile {result.profile}, scale {result.scale:g}"
    if result.tenant_skew:
        about += f", tenant skew {result.tenant_skew:g}"
    if result.status == "seeded":
        with_index = any(t.index_seconds is not None for t in result.tables)
        rows = [(t.table, f"{t.rows:,}", f"{t.seconds:.2f}", f"{t.rows_per_s:,.0f}",
                 *(("" if t.index_seconds is None else f"{t.index_seconds:.2f}",) if with_index else ()),
                 t.checksum or "") for t in result.tables]
        yield Table(["table", "rows", "seconds", "rows/s", *(("index s",) if with_index else ()), "checksum"],
                    rows, title=f"seeded: {about}")
    elif result.status == "noop":
        yield Table(["table", "rows", "checksum"], [(t.table, f"{t.rows:,}", t.checksum or "")
                                                     for t in result.tables], title=f"unchanged: {about}")
    else:
        yield Table(["table", "rows to write"], [(t.table, f"{t.rows:,}") for t in result.tables],
                    title=f"plan: {about}")
    compressed = [f"{t.table} ({t.compressed_chunks})" for t in result.tables if t.compressed_chunks is not None]
    if compressed:
        yield f"compression policies run; compressed chunks: {', '.join(compressed)}"
    yield result.message


def _describe_status(info):
    yield Table(["table", "rows now"], [(t, "missing" if n is None else n) for t, n in info.tables.items()])
    yield ""
    if not info.runs:
        yield "no seed runs recorded"
        return
    yield Table(["run", "finished", "seed", "profile", "scale", "skew", "rows"],
                [(r.id, f"{r.finished_at:%Y-%m-%d %H:%M:%S}", r.seed, r.profile, r.scale, r.tenant_skew, r.rows)
                 for r in info.runs],
                title="recent runs")
    last = info.runs[0]
    if last.anchor is not None:  # the option that reproduces the newest run's timestamps
        from dbkit.seed._context import format_anchor

        yield f"run {last.id}: time series end at {format_anchor(last.anchor)} (--anchor {format_anchor(last.anchor)})"


@seed.command("status")
@json_option
@pass_state
def seed_status(state: State, as_json: bool) -> None:
    """What was seeded, when, with which seed/profile, and the current row counts."""
    from dbkit.seed import _engine as engine

    render.show(engine.status(state.settings), _describe_status, as_json=as_json)
