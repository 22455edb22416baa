"""Running revisions: ``upgrade``, ``downgrade``, ``stamp``, ``new`` and ``offline_sql`` through Alembic's
``command`` API, and the description of a failure (the revision, the statement, the lock holder)."""

from __future__ import annotations

import io
import re
import traceback
from dataclasses import dataclass
from pathlib import Path

from dbkit._urls import first_line, mask_secrets
from dbkit.errors import DbkitError, OperationFailed, UsageError
from dbkit.migrate._runner_state import Revision, _current, _known, _revision, _script, alembic_config
from dbkit.migrate.env import guard_downgrade


class MigrationFailed(OperationFailed):
    """A revision failed; it was rolled back and earlier revisions stay applied."""


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
        primary = (getattr(getattr(orig, "diag", None), "message_primary", None) or str(orig)).strip()
        statement = mask_secrets(" ".join(str(exc.statement or "").split()))
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
        hint = None
        if sqlstate == "42501" and primary.startswith("query would be affected by row-level security policy"):
            hint = ("revisions run as the owner role with row_security = off, so that row-level security never "
                    "silently filters a migration: run a statement that must see every row (a backfill, a foreign "
                    "key, VALIDATE CONSTRAINT) with op.execute_unfiltered(...), as a connecting role that bypasses "
                    "RLS; or run ALTER TABLE … NO FORCE ROW LEVEL SECURITY before it and FORCE ROW LEVEL SECURITY "
                    "after it, in the same revision")
        elif sqlstate == "42501" and primary.startswith(
                ("must be owner", "permission denied for table", "permission denied for sequence",
                 "permission denied for view", "permission denied for materialized view")):
            hint = _not_owner_hint(settings)
        return MigrationFailed(
            f"{where} failed and was rolled back (earlier revisions stay applied): "
            f"{primary} [SQLSTATE {sqlstate}]; statement: {statement}",
            hint=hint,
        )
    detail = first_line(str(exc), type(exc).__name__)
    return MigrationFailed(f"{where} failed and was rolled back (earlier revisions stay applied): "
                           f"{type(exc).__name__}: {detail}")


def _not_owner_hint(settings) -> str | None:
    """An object made before dbkit (by plain Alembic, as another role) that a revision alters as the owner role."""
    if not settings.migrate_set_role:
        return None
    owner = settings.role_owner
    return (f"revisions run as the owner role {owner} (SET ROLE), and objects created before dbkit belong to another "
            f"role: give them to it once with `dbkit roles apply --take-ownership` (or `REASSIGN OWNED BY <that role> "
            f"TO {owner}`), or set DBKIT_MIGRATE_SET_ROLE=false")


def _run(settings, verb: str, *args, readonly: bool = False, attributes: dict | None = None, output=None, **kwargs):
    """Run Alembic's command ``verb`` (``--sql`` when ``sql=True``); returns (its result, the Config it ran with)."""
    from alembic import command
    from alembic.util import CommandError

    cfg = alembic_config(settings, readonly=readonly, output=output)
    cfg.attributes.update(attributes or {}, dbkit_command=verb)
    try:
        return getattr(command, verb)(cfg, *args, **kwargs), cfg
    except DbkitError:
        raise
    except CommandError as exc:
        raise _command_error(exc) from None
    except Exception as exc:  # noqa: BLE001 - a revision can raise anything
        if not kwargs.get("sql"):
            raise _describe_failure(exc, cfg, settings, verb) from exc
        revision, filename = _failing_revision(exc)
        where = f"revision {revision} ({filename})" if revision else "a revision"
        raise MigrationFailed(f"rendering the SQL of {where} failed (nothing was run: offline mode): "
                              f"{type(exc).__name__}: {first_line(str(exc), type(exc).__name__)}") from exc


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


def check_target(settings, revision: str) -> None:
    """A plain id the project does not have is the unknown-revision UsageError now, before a confirmation
    prompt, worded as when Alembic finds out; head, base and relative targets (-1, ae10+2) are Alembic's."""
    _require_revision(revision)
    if re.fullmatch(r"\w+", revision) and revision not in ("base", "head", "heads") \
            and not _known(_script(settings), revision):
        raise _command_error(f"Can't locate revision identified by '{revision}'")


@dataclass
class RunResult:
    before: list[str]
    after: list[str]
    applied: list[Revision]  # upgraded or downgraded, in the order they ran


def _apply(settings, verb: str, revision: str, attributes: dict) -> RunResult:
    """Run ``verb`` to ``revision``; the result is read back (the revisions that ran are on the Config)."""
    _, cfg = _run(settings, verb, revision, attributes=attributes)
    script = _script(settings)
    after = _current(settings)
    heads = set(script.get_heads())
    ran = [_revision(script.get_revision(rev), set(), heads) for rev in cfg.attributes.get("dbkit_steps", [])]
    return RunResult(cfg.attributes.get("dbkit_before", after), after, ran)


def upgrade(settings, revision: str = "head", *, keep_server_roles: bool = False) -> RunResult:
    """Apply revisions up to ``revision`` (default: head), each in its own transaction.  ``keep_server_roles``
    (a rehearsal): the preflight and the revisions may change no role of the server (a revision that does fails)."""
    _require_revision(revision, "target revision")
    return _apply(settings, "upgrade", revision,
                  {"dbkit_target": revision, "dbkit_keep_server_roles": keep_server_roles})


def downgrade(settings, revision: str, *, allow_prod: bool = False) -> RunResult:
    """Revert revisions down to ``revision`` (an id, ``-1`` or ``base``).  Refused in prod
    unless ``allow_prod``.

    The refusal lives in :func:`dbkit.migrate.env.guard_downgrade`, which the
    environment applies to every downgrade (plain ``alembic downgrade`` too); it is
    called here first only so that a refused downgrade does not connect at all.
    """
    _require_revision(revision, "target revision")
    guard_downgrade(settings, allow_prod=allow_prod)
    return _apply(settings, "downgrade", revision, {"dbkit_allow_prod": allow_prod})


def stamp(settings, revision: str, *, allow_prod: bool = False) -> RunResult:
    """Record ``revision`` (an id, ``head`` or ``base``) in the version table without running anything:
    for a database whose schema is already at that revision (made by hand, by plain Alembic with its
    version table elsewhere, or restored).  ``RunResult.applied`` is empty: no revision ran, and none
    gets a checksum (``migrate check`` lists them as applied without dbkit).

    It goes through the project's env.py like every command (advisory lock, preflight).  A stamp that
    moves backwards is refused in prod unless ``allow_prod`` (:func:`~dbkit.migrate.env.guard_downgrade`).
    """
    _require_revision(revision, "revision to stamp")
    return _apply(settings, "stamp", revision, {"dbkit_allow_prod": allow_prod})


def new(settings, message: str, *, autogenerate: bool = False) -> Path:
    """Create a revision file; with ``autogenerate`` it holds the diff between models and database."""
    script, _ = _run(settings, "revision", message=message, autogenerate=autogenerate, readonly=True)
    scripts = script if isinstance(script, list) else [script]
    return Path(scripts[0].path)


def offline_sql(settings, from_rev: str | None = None, to_rev: str = "head") -> str:
    """The SQL an upgrade would run (``alembic upgrade --sql``), for review; needs no database."""
    if from_rev is not None:
        _require_revision(from_rev, "--from revision")
    _require_revision(to_rev, "--to revision")
    buf = io.StringIO()
    _run(settings, "upgrade", f"{from_rev}:{to_rev}" if from_rev else to_rev, sql=True, output=buf)
    return buf.getvalue()
