"""Reading migration state: the Alembic config of the project, its revisions, which are applied
(Alembic's version table where the settings say: DBKIT_VERSION_TABLE_SCHEMA, DBKIT_VERSION_TABLE),
``status`` and ``history``.

When the configured version table is missing or empty but the database has another Alembic version
table (a project migrated by plain Alembic keeps ``public.alembic_version``), the state says so
(:class:`Elsewhere`): the database is never reported as "base" then, and ``dbkit migrate`` refuses to
start from base (:func:`refusal`)."""

from __future__ import annotations

import io
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dbkit import _db as db
from dbkit import _target as target
from dbkit.errors import ConfigError, Refused
from dbkit.migrate._session import BOOKKEEPING_SCHEMA


def _count(n: int, noun: str) -> str:
    """``1 place``, ``2 places``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


@dataclass
class Revision:
    revision: str
    down_revision: str | None
    message: str
    path: str
    applied: bool = False
    is_head: bool = False


@dataclass(frozen=True)
class Elsewhere:
    """The configured version table is missing (``configured_exists`` False) or empty, but the database
    has other Alembic version tables (``found``: the first one, ``also``: the others)."""

    configured: str
    configured_exists: bool
    found: db.VersionTable
    also: tuple[str, ...] = ()
    #: the found revisions are not revisions of the project: another project's database
    foreign: bool = False

    def adopt(self, settings) -> str:
        """How to use the found table: the settings to set (or, for another project's table, what to check)."""
        if self.foreign:
            return ("check that DATABASE_URL is this project's database and DBKIT_MIGRATIONS_DIR its migrations "
                    "(never adopt another project's version table)")
        env, toml = f"DBKIT_VERSION_TABLE_SCHEMA={self.found.schema}", f'version_table_schema = "{self.found.schema}"'
        if self.found.table != settings.version_table:
            env += f" DBKIT_VERSION_TABLE={self.found.table}"
            toml += f', version_table = "{self.found.table}"'
        return f"set {env} (or [tool.dbkit] {toml}) to adopt it"

    def describe(self) -> str:
        """``dbkit.alembic_version does not exist, but found public.alembic_version at revision 3f2a``"""
        state = "is empty" if self.configured_exists else "does not exist"
        revs = self.found.revisions
        at = (f"at revision {', '.join(revs)}" if revs else
              "(its revisions could not be read: permission denied)" if revs is None else "(empty)")
        also = f" (also: {', '.join(self.also)})" if self.also else ""
        foreign = ", which is not a revision of your migrations" if self.foreign else ""
        return f"{self.configured} {state}, but found {self.found.name} {at}{foreign}{also}"


@dataclass
class Status:
    """``current`` comes from ``version_table``; ``elsewhere`` is set when that table is missing or empty
    but another Alembic version table exists, ``unknown`` lists current revisions that are not revisions
    of the project, ``unversioned`` (when nothing is applied) up to three tables the database already has,
    ``sql_history`` (:func:`dbkit.migrate._runner.status`) what ``dbkit migrate`` adopts of an old SQL-file runner."""

    current: list[str]
    heads: list[str]
    pending: list[Revision] = field(default_factory=list)
    version_table: str = f"{BOOKKEEPING_SCHEMA}.alembic_version"
    migrations_dir: str = ""
    elsewhere: Elsewhere | None = None
    adopt: str | None = None
    unknown: list[str] = field(default_factory=list)
    unversioned: list[str] = field(default_factory=list)
    sql_history: str | None = None

    @property
    def at_head(self) -> bool:
        return not self.pending and not self.problem

    @property
    def problem(self) -> str | None:
        """Why the current revision cannot be trusted (one line with the fix), or None."""
        if self.elsewhere is not None:
            return f"{self.elsewhere.describe()}; {self.adopt}"
        if self.unknown:
            return (f"the database is at revision {', '.join(self.unknown)} ({self.version_table}), which is not a "
                    f"revision of your migrations ({self.migrations_dir}): is DATABASE_URL the database of this "
                    "project, and DBKIT_MIGRATIONS_DIR its migrations?")
        return None

    def advice(self) -> str | None:
        """What to do next, naming the project's migrations and the found state; None when at head."""
        if self.problem or self.sql_history:
            return self.problem or self.sql_history
        if not self.heads:
            where = "has no version table" if not self.current else f"is at {', '.join(self.current)}"
            return (f"the database {where} and your project has no migrations yet ({self.migrations_dir}/versions "
                    "is empty): create one with `dbkit migrate new -m \"...\"`")
        if not self.pending:
            return None
        n = _count(len(self.pending), "pending revision")
        head = ", ".join(self.heads)
        if self.current:
            return (f"the database is at revision {', '.join(self.current)}, your migrations' head is {head} "
                    f"({n}): run `dbkit migrate`")
        if self.unversioned:
            return (f"the database has no revision of your migrations applied ({self.version_table} is missing or "
                    f"empty) but already has tables ({', '.join(self.unversioned)}): check that DATABASE_URL is "
                    f"this project's database; to adopt a schema made without Alembic, "
                    f"`dbkit migrate stamp <revision>`; else run `dbkit migrate` ({n}, head {head})")
        return (f"the database has no revision of your migrations applied yet; your migrations' head is {head} "
                f"({n}): run `dbkit migrate`")

    def as_dict(self) -> dict[str, Any]:
        return {"current": self.current, "heads": self.heads, "at_head": self.at_head,
                "pending": [asdict(r) for r in self.pending], "version_table": self.version_table,
                "migrations_dir": self.migrations_dir,
                "elsewhere": self.elsewhere.describe() if self.elsewhere else None,
                "problem": self.problem, "advice": self.advice(), "unversioned": self.unversioned}


# --------------------------------------------------------------------- config

def alembic_config(settings, *, readonly: bool = False, output: io.StringIO | None = None, _runs_env: bool = True):
    """An Alembic Config for the project's migrations, carrying the dbkit settings.

    ``alembic.ini`` is read for Alembic's own options; its ``sqlalchemy.url`` is never used (the
    URL comes from dbkit's settings).  An ``env.py`` that does not use dbkit (the one ``alembic init``
    writes connects with that ``sqlalchemy.url``) is refused with the one-call fix."""
    from alembic.config import Config

    directory = Path(settings.migrations_dir)
    env_py = directory / "env.py"
    if not env_py.is_file():
        raise ConfigError(
            "DBKIT_MIGRATIONS_DIR", f"points at {directory}, which has no env.py",
            purpose="points at the Alembic environment of the project",
            example="migrations (run `dbkit init` to create it)",
        )
    if _runs_env and "dbkit" not in env_py.read_text(errors="replace"):
        raise ConfigError(
            f"{_shown(settings)}/env.py", "does not use dbkit: it is Alembic's own environment, which connects with "
            "alembic.ini's sqlalchemy.url and has none of dbkit's rails (dbkit takes the URL from DATABASE_URL)",
            purpose="runs the project's migrations",
            example="replace its body with `from dbkit.migrate.env import run` and "
                    "`run(target_metadata=None)` (or your models' MetaData)",
        )
    ini = settings.project_dir / "alembic.ini"
    cfg = Config(str(ini) if ini.is_file() else None, output_buffer=output, stdout=output or sys.stdout)
    cfg.set_main_option("script_location", str(directory))
    cfg.attributes["dbkit_settings"] = settings
    cfg.attributes["dbkit_readonly"] = readonly
    return cfg


def _script(settings):
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(settings, _runs_env=False))


def _revision(script_rev, applied: set[str], heads: set[str]) -> Revision:
    down = script_rev.down_revision
    return Revision(
        revision=script_rev.revision,
        down_revision=",".join(down) if isinstance(down, tuple) else down,
        message=next(iter((script_rev.doc or "").strip().splitlines()), ""),
        path=str(script_rev.path),
        applied=script_rev.revision in applied,
        is_head=script_rev.revision in heads,
    )


# --------------------------------------------------------------------- reading state

def _current(settings) -> list[str]:
    """Applied heads from the configured version table (empty when nothing was ever applied)."""
    with db.connect(target.resolve_url(settings, direct=True), connect_timeout=settings.connect_timeout) as conn:
        return db.applied_revisions(conn, db.version_table(settings)) or []


def read_state(conn, settings, script) -> tuple[list[str], Elsewhere | None]:
    """(applied heads of the configured version table, another version table when that one is missing
    or empty and another exists; ``script`` (the project's revisions) tells whether it is the project's)."""
    configured = db.version_table(settings)
    current = db.applied_revisions(conn, configured)
    if current:
        return current, None
    others = [t for t in db.version_tables(conn, settings.version_table)
              if t.name != configured and t.revisions != ()]
    if not others:
        return [], None
    found = others[0]
    foreign = found.revisions is not None and not all(_known(script, rev) for rev in found.revisions)
    return [], Elsewhere(configured, current is not None, found, tuple(t.name for t in others[1:]), foreign)


def _known(script, rev: str) -> bool:
    try:
        return script.get_revision(rev) is not None
    except Exception:  # noqa: BLE001 - alembic's ResolutionError / CommandError: not a revision of the project
        return False


def refusal(conn, settings, script) -> Refused | None:
    """Why an upgrade or downgrade must not start (read as the connecting role, before any DDL): the
    configured version table is missing or empty but another one exists (starting from base would re-run
    every revision), or the database is at a revision the project does not have."""
    current, elsewhere = read_state(conn, settings, script)
    if elsewhere is not None:
        why = "" if elsewhere.foreign else "; upgrading from base would re-run every revision"
        return Refused(f"{elsewhere.describe()}{why}", hint=elsewhere.adopt(settings))
    unknown = [rev for rev in current if not _known(script, rev)]
    if unknown:
        return Refused(Status([], [], version_table=db.version_table(settings), unknown=unknown,
                              migrations_dir=_shown(settings)).problem or "")
    return None


def _revisions(script, current: list[str]) -> list[Revision]:
    """Every revision, base first, with whether it is applied (``current``: the database's heads)."""
    applied = {r.revision for head in current if _known(script, head) for r in script.iterate_revisions(head, "base")}
    heads = set(script.get_heads())
    return [_revision(r, applied, heads) for r in script.walk_revisions()][::-1]


def status(settings) -> Status:
    """Current revision(s), head(s) and the pending revisions in the order they would apply."""
    script = _script(settings)
    with db.connect(target.resolve_url(settings, direct=True), connect_timeout=settings.connect_timeout) as conn:
        current, elsewhere = read_state(conn, settings, script)
        unversioned = [] if current or elsewhere else db.unversioned_tables(conn, (BOOKKEEPING_SCHEMA,))
    return Status(current=current, heads=list(script.get_heads()),
                  pending=[r for r in _revisions(script, current) if not r.applied],
                  version_table=db.version_table(settings), migrations_dir=_shown(settings),
                  elsewhere=elsewhere, adopt=elsewhere.adopt(settings) if elsewhere else None,
                  unknown=[rev for rev in current if not _known(script, rev)],
                  unversioned=unversioned)


def _shown(settings, directory: Path | None = None) -> str:
    """A directory (by default the migrations directory) as users know it: relative to the project when inside it."""
    directory = Path(directory or settings.migrations_dir)
    inside = directory.is_relative_to(settings.project_dir)
    return str(directory.relative_to(settings.project_dir) if inside else directory)


def history(settings) -> list[Revision]:
    """Every revision, base first, with whether it is applied."""
    return _revisions(_script(settings), _current(settings))
