"""The verbs behind ``dbkit migrate``: plain functions that take Settings and return data.

``upgrade``, ``downgrade``, ``status``, ``history``, ``new``, ``offline_sql``,
``check`` and ``lint``.  Each goes through Alembic's own ``command`` API and
``migrations/env.py`` (so plain ``alembic`` behaves the same), and maps failures
to :class:`~dbkit.errors.DbkitError` messages that name the revision and the
statement.
"""

from __future__ import annotations

import io
import logging
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dbkit import db, target
from dbkit.errors import ConfigError, DbkitError, OperationFailed, UsageError
from dbkit.migrate.env import file_sha256, guard_downgrade
from dbkit.migrate.session import BOOKKEEPING_SCHEMA
from dbkit.urls import first_line

__all__ = [
    "MigrationFailed", "Status", "CheckResult", "NOT_COMPARED_NO_METADATA", "NOT_COMPARED_PENDING",
    "alembic_config", "upgrade", "downgrade", "status", "history", "new", "offline_sql", "check", "lint",
]

log = logging.getLogger("dbkit.migrate")


class MigrationFailed(OperationFailed):
    """A revision failed; it was rolled back and earlier revisions stay applied."""


class MigrationCheckFailed(OperationFailed):
    """``dbkit migrate check`` found pending revisions, schema drift or edited revisions."""


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


@dataclass
class Drift:
    revision: str
    filename: str
    recorded_sha256: str
    current_sha256: str | None


#: Why ``migrate check`` did not compare the schema with the models (:attr:`CheckResult.schema_not_compared`).
NOT_COMPARED_NO_METADATA = "env.py gives no target_metadata"
NOT_COMPARED_PENDING = "revisions are pending; the models are compared at head only"


@dataclass
class CheckResult:
    """What ``dbkit migrate check`` found, and what it compared.

    ``schema_diffs`` is the list of differences when the schema was compared with
    the models, and None when it was not; ``schema_not_compared`` then says why
    (:data:`NOT_COMPARED_NO_METADATA` or :data:`NOT_COMPARED_PENDING`).
    """

    pending: list[Revision]
    schema_diffs: list[str] | None  # None: the schema was not compared (see schema_not_compared)
    edited: list[Drift]
    schema_not_compared: str | None = None

    @property
    def compared_schema(self) -> bool:
        """True when the database schema was compared with the models (``target_metadata``)."""
        return self.schema_diffs is not None

    @property
    def clean(self) -> bool:
        """No pending revision, no schema difference found, no edited or deleted revision file.
        A schema that was not compared does not make the result unclean: :meth:`summary` says so."""
        return not (self.pending or self.schema_diffs or self.edited)

    def summary(self) -> str:
        """One line: the verdict, then what was checked and what was not, e.g.
        ``clean: no pending revisions, no edited revisions; schema not compared (env.py gives no target_metadata)``.
        """
        n = len(self.pending)
        pending = "no pending revisions" if not n else f"{n} pending revision{'s' if n != 1 else ''}"
        n = len(self.edited)
        edited = ("no edited revisions" if not n
                  else f"{n} revision file{'s' if n != 1 else ''} edited or deleted after being applied")
        if not self.compared_schema:
            schema = f"schema not compared ({self.schema_not_compared or NOT_COMPARED_NO_METADATA})"
        elif self.schema_diffs:
            n = len(self.schema_diffs)
            schema = f"schema differs from the models in {n} place{'s' if n != 1 else ''}"
        else:
            schema = "schema matches the models"
        verdict = "clean" if self.clean else "migrate check failed"
        return f"{verdict}: {pending}, {edited}; {schema}"

    def as_dict(self) -> dict[str, Any]:
        return {"clean": self.clean, "pending": [asdict(r) for r in self.pending],
                "compared_schema": self.compared_schema, "schema_not_compared": self.schema_not_compared,
                "schema_diffs": self.schema_diffs, "edited": [asdict(d) for d in self.edited],
                "summary": self.summary()}


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


# --------------------------------------------------------------------- running

def _failing_revision(exc: BaseException) -> tuple[str | None, str | None]:
    """(revision id, file) of the revision whose code raised, from the traceback."""
    found = (None, None)
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        g = frame.f_globals
        if "revision" in g and "down_revision" in g and isinstance(g.get("revision"), str):
            found = (g["revision"], Path(frame.f_code.co_filename).name)
    return found


def _describe_failure(exc: BaseException, cfg, settings, verb: str) -> DbkitError:
    from sqlalchemy import exc as sa_exc

    revision, filename = _failing_revision(exc)
    where = f"revision {revision} ({filename})" if revision else f"{verb}"
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None)
        diag = getattr(orig, "diag", None)
        primary = (diag.message_primary if diag is not None and diag.message_primary else str(orig)).strip()
        statement = " ".join(str(exc.statement or "").split())
        if len(statement) > 200:
            statement = statement[:197] + "..."
        if sqlstate == "55P03":  # lock_not_available: lock_timeout fired
            watcher = cfg.attributes.get("dbkit_watcher")
            blockers = watcher.last if watcher is not None else []
            who = "; ".join(b.describe() for b in blockers) or "a session that could not be identified"
            return MigrationFailed(
                f"{where} could not get a lock within lock_timeout={settings.lock_timeout} and was rolled back; "
                f"blocked by {who}; statement: {statement}",
                hint="end or wait for that transaction and rerun; DBKIT_LOCK_TIMEOUT raises the limit",
            )
        if sqlstate == "57014":  # query_canceled: statement_timeout
            return MigrationFailed(
                f"{where} exceeded statement_timeout={settings.statement_timeout} and was rolled back; "
                f"statement: {statement}",
                hint="raise DBKIT_STATEMENT_TIMEOUT or split the revision",
            )
        return MigrationFailed(
            f"{where} failed and was rolled back (earlier revisions stay applied): "
            f"{primary} [SQLSTATE {sqlstate}]; statement: {statement}",
        )
    detail = first_line(str(exc), type(exc).__name__)
    return MigrationFailed(f"{where} failed and was rolled back (earlier revisions stay applied): "
                           f"{type(exc).__name__}: {detail}")


def _run(settings, verb: str, fn, *args, readonly: bool = False, attributes: dict | None = None, **kwargs):
    """Run an Alembic command; returns (its result, the Config it ran with)."""
    from alembic.util import CommandError

    cfg = alembic_config(settings, readonly=readonly)
    cfg.attributes.update(attributes or {})
    try:
        return fn(cfg, *args, **kwargs), cfg
    except DbkitError:
        raise
    except CommandError as exc:
        raise _command_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a revision can raise anything
        raise _describe_failure(exc, cfg, settings, verb) from exc


def _command_error(exc) -> DbkitError:
    """Alembic's CommandError: an unknown revision is a usage error (exit 2), the rest as Alembic says."""
    text = first_line(str(exc), type(exc).__name__)
    if "Can't locate revision" in text or "No such revision" in text:
        return UsageError(f"{text.rstrip('.')}: not a revision of the project (nor head, base, +N or -N)",
                          hint="see `dbkit migrate history` for the revisions")
    return DbkitError(f"alembic: {text}")


def _require_revision(revision: str | None, what: str = "revision") -> None:
    if revision is None or not str(revision).strip():
        raise UsageError(f"the {what} is empty", hint="give a revision id, head, base, +N or -N "
                         "(see `dbkit migrate history`)")


@dataclass
class RunResult:
    before: list[str]
    after: list[str]
    applied: list[Revision]  # upgraded or downgraded, in the order they ran

    def as_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "applied": [asdict(r) for r in self.applied]}


def _result(settings, cfg) -> RunResult:
    script = _script(settings)
    after = _current(settings)
    heads = set(script.get_heads())
    ran = [_revision(script.get_revision(rev), set(), heads) for rev, _ in cfg.attributes.get("dbkit_steps", [])]
    return RunResult(cfg.attributes.get("dbkit_before", after), after, ran)


def upgrade(settings, revision: str = "head") -> RunResult:
    """Apply revisions up to ``revision`` (default: head), each in its own transaction."""
    from alembic import command

    _require_revision(revision, "target revision")
    _, cfg = _run(settings, "upgrade", command.upgrade, revision)
    return _result(settings, cfg)


def downgrade(settings, revision: str, *, allow_prod: bool = False) -> RunResult:
    """Revert revisions down to ``revision`` (an id, ``-1`` or ``base``).  Refused in prod
    unless ``allow_prod``.

    The refusal lives in :func:`dbkit.migrate.env.guard_downgrade`, which the
    environment applies to every downgrade (plain ``alembic downgrade`` too); it is
    called here first only so that a refused downgrade does not connect at all.
    """
    from alembic import command

    _require_revision(revision, "target revision")
    guard_downgrade(settings, allow_prod=allow_prod)
    _, cfg = _run(settings, "downgrade", command.downgrade, revision, attributes={"dbkit_allow_prod": allow_prod})
    return _result(settings, cfg)


def new(settings, message: str, *, autogenerate: bool = False) -> Path:
    """Create a revision file; with ``autogenerate`` it holds the diff between models and database."""
    from alembic import command

    script, _ = _run(settings, "revision", command.revision, message=message, autogenerate=autogenerate,
                     readonly=True)
    scripts = script if isinstance(script, list) else [script]
    return Path(scripts[0].path)


def offline_sql(settings, from_rev: str | None = None, to_rev: str = "head") -> str:
    """The SQL an upgrade would run (``alembic upgrade --sql``), for review; needs no database."""
    from alembic import command

    from alembic.util import CommandError

    if from_rev is not None:
        _require_revision(from_rev, "--from revision")
    _require_revision(to_rev, "--to revision")
    buf = io.StringIO()
    cfg = alembic_config(settings, output=buf)
    target = f"{from_rev}:{to_rev}" if from_rev else to_rev
    try:
        command.upgrade(cfg, target, sql=True)
    except DbkitError:
        raise
    except CommandError as exc:
        raise _command_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a revision can raise anything
        revision, filename = _failing_revision(exc)
        where = f"revision {revision} ({filename})" if revision else "a revision"
        raise MigrationFailed(f"rendering the SQL of {where} failed (nothing was run: offline mode): "
                              f"{type(exc).__name__}: {first_line(str(exc), type(exc).__name__)}") from exc
    return buf.getvalue()


def _schema_diffs(settings) -> list[str] | None:
    """Operations autogenerate would emit; None when env.py gives no models to compare."""
    from alembic import command
    from alembic.util import AutogenerateDiffsDetected, CommandError

    cfg = alembic_config(settings, readonly=True, output=io.StringIO())
    try:
        command.check(cfg)
    except AutogenerateDiffsDetected as exc:
        return [str(d) for d in getattr(exc, "diffs", None) or [str(exc)]]
    except CommandError as exc:
        if "MetaData" in str(exc):
            return None
        raise DbkitError(f"alembic: {exc}") from None
    return []


def _edited(settings) -> list[Drift]:
    script = _script(settings)
    url = target.resolve_url(settings, direct=True)
    with db.connect(url, connect_timeout=settings.connect_timeout) as conn:
        if not conn.execute("SELECT to_regclass(%s)", (f"{BOOKKEEPING_SCHEMA}.migration_checksums",)).fetchone()[0]:
            return []
        rows = conn.execute(f"SELECT revision, filename, sha256 FROM {BOOKKEEPING_SCHEMA}.migration_checksums "
                            "ORDER BY revision").fetchall()
    drifts = []
    for rev, filename, recorded in rows:
        try:
            path = script.get_revision(rev).path
            current = file_sha256(path)
        except Exception:  # noqa: BLE001 - the file was deleted or no longer parses
            current = None
        if current != recorded:
            drifts.append(Drift(rev, filename, recorded, current))
    return drifts


def check(settings) -> CheckResult:
    """Pending revisions, schema drift (autogenerate would emit operations) and applied
    revision files edited after they were applied."""
    pending = status(settings).pending
    if pending:  # the diff is meaningless before head
        diffs, why = None, NOT_COMPARED_PENDING
    else:
        diffs = _schema_diffs(settings)
        why = NOT_COMPARED_NO_METADATA if diffs is None else None
    return CheckResult(pending=pending, schema_diffs=diffs, edited=_edited(settings), schema_not_compared=why)


def lint(settings, *, all_revisions: bool = False):
    """squawk lint of the offline SQL of pending (or all) revisions; returns violations."""
    from dbkit.migrate import lint as squawk

    revs = history(settings) if all_revisions else status(settings).pending
    items = [(rev.revision, offline_sql(settings, rev.down_revision, rev.revision)) for rev in revs]
    return revs, squawk.lint_sql(items, ignore=settings.lint_ignore)
