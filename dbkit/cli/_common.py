"""What the command modules share: the state object, shared options, option types and input checks.

Light imports only (click, logging, dbkit._urls, dbkit.errors): every command module imports this one.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import click

from dbkit._urls import MAX_NAME_BYTES, clip, has_surrogates, mask_secrets
from dbkit.errors import ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PROFILES = click.Choice(["tiny", "small", "medium", "large"])


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


pass_state = click.make_pass_decorator(State)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf (click's FloatRange lets nan through every bound)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


SEED_INT = click.IntRange(-(2**63), 2**63 - 1)  # recorded in a bigint column


def seed_option(**kwargs):
    """--seed, as `dbkit seed` and `dbkit reset` take it."""
    return click.option("--seed", "seed_value", type=SEED_INT, default=0, show_default=True, **kwargs)


def profile_option():
    return click.option("--profile", type=PROFILES, default="small", show_default=True)


def from_option(**kwargs):
    """--from URI: where the backups are (checked by :func:`dbkit.cli._backup.check_backup_uri`)."""
    return click.option("--from", "source", metavar="URI", **kwargs)


def text_problem(text: str) -> str | None:
    """Why ``text`` (an option value) cannot be passed on as typed, or None."""
    return f"is {clip(text)!r}, which is not valid UTF-8" if has_surrogates(text) else None


def check_db_name(option: str, name: str | None) -> None:
    """A database name from the command line: refused (one line, exit 2) unless PostgreSQL keeps it as typed."""
    if name is None:
        return
    example = f"{option} appdb_restored"
    shown = repr(clip(name))
    if not name.strip():
        raise ConfigError(option, "is empty", example=example)
    if problem := text_problem(name):
        raise ConfigError(option, problem, example=example)
    if any(not ch.isprintable() for ch in name):
        raise ConfigError(option, f"is {shown}, which contains a control or invisible character", example=example)
    if name != name.strip():
        raise ConfigError(option, f"is {shown}, with leading or trailing whitespace", example=example)
    size = len(name.encode())
    if size > MAX_NAME_BYTES:
        raise ConfigError(option, f"is {size} bytes long ({shown}); PostgreSQL names are at most "
                          f"{MAX_NAME_BYTES} bytes and it would silently cut it", example=example)


def check_revision(option: str, rev: str | None) -> None:
    if rev is not None and not rev.strip():
        raise ConfigError(option, "is empty", example=f"{option} head (or an id from `dbkit migrate history`)")


def setup_logging(level: int, alembic_level: int | None = None) -> None:
    """dbkit's warnings (and, with -v during migrations, Alembic's "Running upgrade …" lines) go to stderr."""
    handler = getattr(setup_logging, "handler", None)
    if handler is None:
        class MaskingFormatter(logging.Formatter):
            """Passwords masked in every line (a blocking session's query, a statement, a URL)."""

            def format(self, record) -> str:
                return mask_secrets(super().format(record))

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(MaskingFormatter("dbkit: %(message)s"))
        handler.addFilter(lambda r: not r.getMessage().startswith(("Context impl", "Will assume")))
        setup_logging.handler = handler
    for name in ("alembic.runtime.migration", "dbkit"):
        logger = logging.getLogger(name)
        logger.setLevel(level if name == "dbkit" or alembic_level is None else alembic_level)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False


def setup_migrate_logging(verbose: bool) -> None:
    """dbkit's own notes at INFO; Alembic's "Running upgrade A -> B" only with -v, since the command
    prints each applied revision itself (both would list every migration twice)."""
    setup_logging(logging.INFO, logging.INFO if verbose else logging.WARNING)
