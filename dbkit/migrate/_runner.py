"""The verbs behind ``dbkit migrate``: plain functions that take Settings and return data.

``upgrade``, ``downgrade``, ``stamp``, ``status``, ``history``, ``new``, ``offline_sql``,
``check`` and ``lint``.  Each goes through Alembic's own ``command`` API and
``migrations/env.py`` (so plain ``alembic`` behaves the same), and maps failures
to :class:`~dbkit.errors.DbkitError` messages that name the revision and the
statement.

Reading state (``status``, ``history``) lives in :mod:`dbkit.migrate._runner_state`, running revisions
and describing their failures in :mod:`dbkit.migrate._runner_run`; ``check`` and ``lint`` are here.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

from dbkit import _db as db
from dbkit import _target as target
from dbkit.errors import DbkitError
from dbkit.migrate import _runner_run, _runner_state, _sql_history
from dbkit.migrate._runner_run import MigrationFailed, RunResult, check_target, downgrade, new, offline_sql, stamp
from dbkit.migrate._runner_state import Revision, Status, _count, _script, alembic_config, history
from dbkit.migrate._session import BOOKKEEPING_SCHEMA
from dbkit.migrate._sql_history import import_sql
from dbkit.migrate.env import file_sha256

__all__ = ["MigrationFailed", "CheckResult", "NOT_COMPARED_NO_METADATA", "NOT_COMPARED_PENDING",
    "NOT_COMPARED_UNKNOWN", "upgrade", "downgrade", "stamp", "status", "history", "new", "offline_sql", "check",
    "lint", "import_sql", "UpgradeResult", "check_target"]


@dataclass
class Drift:
    revision: str
    filename: str
    recorded_sha256: str
    current_sha256: str | None


#: Why ``migrate check`` did not compare the schema with the models (:attr:`CheckResult.schema_not_compared`).
NOT_COMPARED_NO_METADATA = "env.py gives no target_metadata"
NOT_COMPARED_PENDING = "revisions are pending; the models are compared at head only"
NOT_COMPARED_UNKNOWN = "the database's revision is not known"


@dataclass
class CheckResult:
    """What ``dbkit migrate check`` found, and what it compared.

    ``schema_diffs`` is the list of differences when the schema was compared with
    the models, and None when it was not; ``schema_not_compared`` then says why
    (:data:`NOT_COMPARED_NO_METADATA`, :data:`NOT_COMPARED_PENDING` or :data:`NOT_COMPARED_UNKNOWN`).
    ``problem`` is why the database's revision cannot be trusted (:attr:`Status.problem`: another
    Alembic version table, a revision the project does not have); ``unrecorded`` lists applied revisions
    without a checksum (applied before dbkit, or stamped): information, not a failure.
    """

    pending: list[Revision]
    schema_diffs: list[str] | None  # None: the schema was not compared (see schema_not_compared)
    edited: list[Drift]
    schema_not_compared: str | None = None
    problem: str | None = None
    unrecorded: list[str] = field(default_factory=list)

    @property
    def compared_schema(self) -> bool:
        """True when the database schema was compared with the models (``target_metadata``)."""
        return self.schema_diffs is not None

    @property
    def clean(self) -> bool:
        """No pending revision, no schema difference found, no edited or deleted revision file.
        A schema that was not compared does not make the result unclean: :meth:`summary` says so."""
        return not (self.pending or self.schema_diffs or self.edited or self.problem)

    def summary(self) -> str:
        """One line: the verdict, then what was checked and what was not, e.g.
        ``clean: no pending revisions, no edited revisions; schema not compared (env.py gives no target_metadata)``.
        """
        if self.problem:
            return f"migrate check failed: {self.problem}"
        pending = _count(len(self.pending), "pending revision") if self.pending else "no pending revisions"
        edited = (f"{_count(len(self.edited), 'revision file')} edited or deleted after being applied" if self.edited
                  else "no edited revisions")
        if not self.compared_schema:
            schema = f"schema not compared ({self.schema_not_compared or NOT_COMPARED_NO_METADATA})"
        elif self.schema_diffs:
            schema = f"schema differs from the models in {_count(len(self.schema_diffs), 'place')}"
        else:
            schema = "schema matches the models"
        verdict = "clean" if self.clean else "migrate check failed"
        n = len(self.unrecorded)
        unrecorded = f"; {n} applied without dbkit (no checksum to compare)" if n else ""
        return f"{verdict}: {pending}, {edited}; {schema}{unrecorded}"

    def as_dict(self) -> dict[str, Any]:
        return {"clean": self.clean, "pending": [asdict(r) for r in self.pending],
                "compared_schema": self.compared_schema, "schema_not_compared": self.schema_not_compared,
                "schema_diffs": self.schema_diffs, "edited": [asdict(d) for d in self.edited],
                "problem": self.problem, "unrecorded": self.unrecorded, "summary": self.summary()}


@dataclass
class UpgradeResult(RunResult):
    """A :class:`RunResult`; ``adopted`` says what was stamped first for a database that an old SQL-file
    runner had migrated (:func:`dbkit.migrate._sql_history.adopt`), None when nothing was."""

    adopted: Any = None


def upgrade(settings, revision: str = "head") -> UpgradeResult:
    """Apply revisions up to ``revision`` (default: head), each in its own transaction.  A database that an
    old SQL-file runner migrated (revisions imported by :func:`import_sql`) is adopted first: stamped at the
    last file its table lists, so nothing runs twice."""
    _runner_run._require_revision(revision, "target revision")
    adopted = _sql_history.adopt(settings)
    result = _runner_run.upgrade(settings, revision)
    return UpgradeResult(result.before, result.after, result.applied, adopted)


def status(settings) -> Status:
    """Current revision(s), head(s) and pending revisions (:func:`dbkit.migrate._runner_state.status`); for a
    database without a version table that an old SQL-file runner migrated, the advice names the adoption."""
    st = _runner_state.status(settings)
    if not (st.current or st.problem):
        st.sql_history = _sql_history.advice(settings)
    return st


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


def _edited(settings, applied: set[str]) -> tuple[list[Drift], list[str]]:
    """(applied revisions whose file changed since dbkit applied them, applied revisions without a
    checksum).  A checksum row of a revision that is not applied (stamped away) is not compared."""
    script = _script(settings)
    rows = []
    with db.connect(target.resolve_url(settings, direct=True), connect_timeout=settings.connect_timeout) as conn:
        if conn.execute("SELECT to_regclass(%s)", (f"{BOOKKEEPING_SCHEMA}.migration_checksums",)).fetchone()[0]:
            rows = conn.execute(f"SELECT revision, filename, sha256 FROM {BOOKKEEPING_SCHEMA}.migration_checksums "
                                "ORDER BY revision").fetchall()
    drifts = []
    for rev, filename, recorded in rows:
        if rev not in applied:
            continue
        try:
            current = file_sha256(script.get_revision(rev).path)
        except Exception:  # noqa: BLE001 - the file was deleted or no longer parses
            current = None
        if current != recorded:
            drifts.append(Drift(rev, filename, recorded, current))
    return drifts, sorted(applied - {r[0] for r in rows})


def check(settings) -> CheckResult:
    """Pending revisions, schema drift (autogenerate would emit operations) and applied
    revision files edited after they were applied.  A database whose revision cannot be trusted
    (:attr:`Status.problem`) is not clean, and is compared with nothing."""
    st = status(settings)
    if st.problem:
        return CheckResult(pending=st.pending, schema_diffs=None, edited=[], schema_not_compared=NOT_COMPARED_UNKNOWN,
                           problem=st.problem)
    if st.pending:  # the diff is meaningless before head
        diffs, why = None, NOT_COMPARED_PENDING
    else:
        diffs = _schema_diffs(settings)
        why = NOT_COMPARED_NO_METADATA if diffs is None else None
    applied = {r.revision for r in history(settings) if r.applied}
    edited, unrecorded = _edited(settings, applied)
    return CheckResult(pending=st.pending, schema_diffs=diffs, edited=edited, schema_not_compared=why,
                       unrecorded=unrecorded)


def lint(settings, *, all_revisions: bool = False):
    """squawk lint of the offline SQL of pending (or all) revisions; returns violations."""
    from dbkit.migrate import _lint as squawk

    revs = history(settings) if all_revisions else status(settings).pending
    items = [(rev.revision, offline_sql(settings, rev.down_revision, rev.revision)) for rev in revs]
    return revs, squawk.lint_sql(items, ignore=settings.lint_ignore, version_table=settings.version_table)
