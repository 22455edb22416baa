"""Reading migration state: the Alembic config of the project, its revisions, which are applied
(``dbkit.alembic_version``), ``status`` and ``history``."""

from __future__ import annotations

import io
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dbkit import db, target
from dbkit.errors import ConfigError
from dbkit.migrate.session import BOOKKEEPING_SCHEMA


@dataclass
class Revision:
    revision: str
    down_revision: str | None
    message: str
    path: str
    applied: bool = False
    is_head: bool = False


@dataclass
class Status:
    current: list[str]
    heads: list[str]
    pending: list[Revision] = field(default_factory=list)

    @property
    def at_head(self) -> bool:
        return not self.pending

    def as_dict(self) -> dict[str, Any]:
        return {"current": self.current, "heads": self.heads, "at_head": self.at_head,
                "pending": [asdict(r) for r in self.pending]}



# --------------------------------------------------------------------- config

def alembic_config(settings, *, readonly: bool = False, output: io.StringIO | None = None):
    """An Alembic Config for the project's migrations, carrying the dbkit settings."""
    from alembic.config import Config

    directory = Path(settings.migrations_dir)
    if not (directory / "env.py").is_file():
        raise ConfigError(
            "DBKIT_MIGRATIONS_DIR", f"points at {directory}, which has no env.py",
            purpose="points at the Alembic environment of the project",
            example="migrations (create one with: alembic init migrations)",
        )
    ini = settings.project_dir / "alembic.ini"
    cfg = Config(str(ini) if ini.is_file() else None, output_buffer=output, stdout=output or sys.stdout)
    cfg.set_main_option("script_location", str(directory))
    cfg.attributes["dbkit_settings"] = settings
    cfg.attributes["dbkit_readonly"] = readonly
    return cfg


def _script(settings):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings))


def _revision(script_rev, applied: set[str], heads: set[str]) -> Revision:
    down = script_rev.down_revision
    return Revision(
        revision=script_rev.revision,
        down_revision=",".join(down) if isinstance(down, tuple) else down,
        message=(script_rev.doc or "").strip().splitlines()[0] if script_rev.doc else "",
        path=str(script_rev.path),
        applied=script_rev.revision in applied,
        is_head=script_rev.revision in heads,
    )


# --------------------------------------------------------------------- reading state

def _current(settings) -> list[str]:
    """Applied heads from dbkit.alembic_version (empty when nothing was ever applied)."""
    url = target.resolve_url(settings, direct=True)
    with db.connect(url, connect_timeout=settings.connect_timeout) as conn:
        return db.applied_revisions(conn, f"{BOOKKEEPING_SCHEMA}.alembic_version") or []


def _applied_set(script, current: list[str]) -> set[str]:
    applied: set[str] = set()
    for head in current:
        applied.update(r.revision for r in script.iterate_revisions(head, "base"))
    return applied


def status(settings) -> Status:
    """Current revision(s), head(s) and the pending revisions in the order they would apply."""
    script = _script(settings)
    current = _current(settings)
    heads = list(script.get_heads())
    applied = _applied_set(script, current)
    pending = [r for r in script.walk_revisions() if r.revision not in applied]
    pending.reverse()  # walk_revisions goes head -> base
    return Status(current=current, heads=heads,
                  pending=[_revision(r, applied, set(heads)) for r in pending])


def history(settings) -> list[Revision]:
    """Every revision, base first, with whether it is applied."""
    script = _script(settings)
    heads = set(script.get_heads())
    applied = _applied_set(script, _current(settings))
    revs = [_revision(r, applied, heads) for r in script.walk_revisions()]
    revs.reverse()
    return revs
