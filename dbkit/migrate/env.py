"""What ``migrations/env.py`` runs: the same safety rails for ``alembic …`` and ``dbkit migrate``.

``migrations/env.py`` is three lines::

    from dbkit.migrate.env import run
    from migrations.models import metadata
    run(target_metadata=metadata)

An existing Alembic project (``alembic init``) gets dbkit's rails the same way: replace the body of
its ``env.py`` with that import and that call (``target_metadata=None`` when it has no models).  The
URL comes from dbkit's settings (``DATABASE_URL``), never from ``alembic.ini``'s ``sqlalchemy.url``;
Alembic's version table is where ``DBKIT_VERSION_TABLE_SCHEMA``/``DBKIT_VERSION_TABLE`` say
(``public`` for a project plain Alembic migrated).

Online, :func:`run` opens dbkit's migration session (advisory lock, timeouts,
preflight, ``SET ROLE``) and refuses a downgrade in prod (:func:`guard_downgrade`,
the one implementation of that refusal; ``dbkit migrate down --allow-prod`` or
``alembic -x allow_prod=1 downgrade …`` allow it).  Offline (``--sql``) it writes
the same preflight out, so the script applies by itself to an empty cluster.
Under plain ``alembic`` a :class:`~dbkit.errors.DbkitError` becomes Alembic's
``CommandError``: one ``FAILED: …`` line and a non-zero exit, no traceback.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from dbkit.errors import DbkitError, Refused
from dbkit.migrate._autogen import autogenerate_online_options, autogenerate_options
from dbkit.migrate._edition import refuse_community_on_apache
from dbkit.migrate._session import BOOKKEEPING_SCHEMA, CHECKSUMS_DDL, ROW_SECURITY_OFF, _literal, offline_preflight

__all__ = ["run", "guard_downgrade", "file_sha256", "ALLOW_PROD_X_ARG"]

#: ``alembic -x allow_prod=1 downgrade …``: plain Alembic's way to say ``--allow-prod``.
ALLOW_PROD_X_ARG = "allow_prod"


def guard_downgrade(settings, *, allow_prod: bool, stamp: bool = False) -> None:
    """The one refusal of downgrades in prod, for ``dbkit migrate down`` and plain ``alembic downgrade``,
    and of stamps that move backwards (``dbkit migrate stamp``, ``alembic stamp``).

    Raises :class:`~dbkit.errors.Refused` when ``DBKIT_ENV=prod`` and the downgrade
    was not explicitly allowed, or when prod's requirements are not met.
    """
    what, verb, example = (("stamping an earlier revision", "stamp", "stamp <revision>") if stamp
                           else ("downgrading", "down", "downgrade -1"))
    if settings.env == "prod" and not allow_prod:
        raise Refused(f"{what} is refused when DBKIT_ENV=prod",
                      hint=f"if you really mean it (and have a backup), pass --allow-prod to `dbkit migrate {verb}`, "
                           f"or -x {ALLOW_PROD_X_ARG}=1 to plain alembic (`alembic -x {ALLOW_PROD_X_ARG}=1 {example}`)")
    settings.require_environment(what)


def _allow_prod(context) -> bool:
    """``--allow-prod`` from dbkit (a Config attribute) or ``-x allow_prod=1`` from plain alembic."""
    if context.config.attributes.get("dbkit_allow_prod"):
        return True
    value = context.get_x_argument(as_dictionary=True).get(ALLOW_PROD_X_ARG, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def _guarded_steps(fn, settings, allow_prod: bool):
    """Alembic's step function, refusing before the first step that goes down (nothing has run yet)."""

    from alembic.runtime.migration import StampStep

    def steps(heads, migration_context):
        checked = False
        for step in fn(heads, migration_context):
            if not step.is_upgrade and not checked:
                guard_downgrade(settings, allow_prod=allow_prod, stamp=isinstance(step, StampStep))
                checked = True
            yield step

    return steps


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


_CHECKSUM_UPSERT = (
    f"INSERT INTO {BOOKKEEPING_SCHEMA}.migration_checksums (revision, filename, sha256) "
    "VALUES ({rev}, {file}, {sha}) ON CONFLICT (revision) DO UPDATE "
    "SET filename = EXCLUDED.filename, sha256 = EXCLUDED.sha256, applied_at = now()"
)
_CHECKSUM_DELETE = f"DELETE FROM {BOOKKEEPING_SCHEMA}.migration_checksums WHERE revision = {{rev}}"


def _record_checksum(ctx, step, heads, run_args) -> None:
    """on_version_apply: remember each applied revision's file checksum (same transaction;
    written into the script offline).  A stamp runs nothing and records nothing: like revisions
    applied before dbkit, a stamped revision has no checksum (``migrate check`` says so)."""
    if step.is_stamp:
        return
    if ctx.config is not None and not ctx.as_sql:  # what really ran, for dbkit's report
        ctx.config.attributes.setdefault("dbkit_steps", []).extend(step.up_revision_ids)
    for rev_id in step.up_revision_ids:
        if step.is_upgrade:
            script = step.revision_map.get_revision(rev_id)
            values = {"rev": rev_id, "file": f"versions/{Path(script.path).name}", "sha": file_sha256(script.path)}
            stmt = _CHECKSUM_UPSERT
        else:
            values, stmt = {"rev": rev_id}, _CHECKSUM_DELETE
        if ctx.as_sql:
            ctx.impl.execute(stmt.format(**{k: _literal(v) for k, v in values.items()}))
        else:
            ctx.connection.exec_driver_sql(stmt.format(**{k: f"%({k})s" for k in values}), values)


def _server_roles_kept(other):
    """on_version_apply for a rehearsal: a revision that changed the server's roles (which its scratch database
    shares with every other database of the server) fails, and its transaction rolls the change back.
    ``other``: an autocommit connection to the same database (:func:`dbkit._db.uncommitted_role_changes`)."""
    from dbkit import _db as db
    from dbkit._urls import few

    def check(ctx, step, heads, run_args) -> None:
        changes = db.uncommitted_role_changes(ctx.connection.connection.driver_connection, other)
        if not changes:
            return
        from dbkit.migrate._runner_run import MigrationFailed

        rev = (step.up_revision_ids or step.down_revision_ids)[0]
        name = Path(step.revision_map.get_revision(rev).path).name
        raise MigrationFailed(f"revision {rev} ({name}) changes the server's roles ({few(changes)}), which every "
                              "database of the server shares: rolled back, a rehearsal changes none",
                              hint="rehearse on a rehearsal server with --change-roles, or make the change with the "
                                   "role model (`dbkit roles apply`)")
    return check


def _outside(settings):
    """A second connection to the migrated database, for :func:`_server_roles_kept`."""
    from dbkit import _db as db
    from dbkit._target import resolve_url

    return db.connect(resolve_url(settings, direct=True), autocommit=True, connect_timeout=settings.connect_timeout)


def _command(config) -> str | None:
    """The Alembic command that runs: dbkit says it (a Config attribute), plain ``alembic`` has it in its
    parsed command line."""
    cmd = getattr(config.cmd_opts, "cmd", None)
    return config.attributes.get("dbkit_command") or (getattr(cmd[0], "__name__", None) if cmd else None)


def _refuse_unadopted(conn, settings, script) -> None:
    """Run as the connecting role, under the advisory lock and before any DDL: an upgrade must not start
    from base when the database has another Alembic version table, nor from a revision the project does not
    have; nor from base when a hand-written SQL-file runner migrated the database: ``dbkit migrate`` adopts
    it (it stamps what the old runner's table lists), plain ``alembic upgrade`` would run those files again."""
    from dbkit.migrate._runner_state import refusal
    from dbkit.migrate._sql_history import _plan

    refused = refusal(conn, settings, script)
    if refused is not None:
        raise refused
    plan = _plan(conn, settings, script)
    if plan is not None:
        table, files, rev = plan
        raise Refused(f"{table} lists {len(files)} SQL file(s) the old runner applied (last: {files[-1]}); "
                      "upgrading from base would run them again",
                      hint=f"run `dbkit migrate` once: it adopts them (stamps revision {rev}) and then upgrades")


def run(*, target_metadata=None, context=None) -> None:
    """Configure Alembic and run migrations, online (dbkit's session) or offline (``--sql``)."""
    import pgvector.sqlalchemy  # noqa: F401 - teaches SQLAlchemy the vector type for autogenerate

    import dbkit.migrate._ops  # noqa: F401 - registers op.create_extension & co

    if context is None:
        from alembic import context
    config = context.config
    via_dbkit = "dbkit_settings" in config.attributes  # else plain `alembic …`
    try:
        _run(context, config, target_metadata)
    except DbkitError as exc:
        if via_dbkit:
            raise
        from alembic.util import CommandError

        raise CommandError(str(exc)) from None  # alembic prints one line ("FAILED: …") and exits non-zero


def _run(context, config, target_metadata) -> None:
    from dbkit.config import load_settings
    from dbkit.migrate._session import migration_connection

    settings = config.attributes.get("dbkit_settings")
    if settings is None:
        settings = config.attributes["dbkit_settings"] = load_settings()
    opts = dict(
        target_metadata=target_metadata,
        version_table_schema=settings.version_table_schema,
        version_table=settings.version_table,
        transaction_per_migration=True,
        on_version_apply=[_record_checksum],
        **autogenerate_options(settings),
    )
    if context.is_offline_mode():
        url = settings.database_url.sqlalchemy_url if settings.database_url else "postgresql+psycopg://"
        context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **opts)
        quote = context.get_context().dialect.identifier_preparer.quote
        with context.begin_transaction():
            # What dbkit's session does online, written out for reviewers and for lint, so that
            # the script applies by itself to an empty cluster (`psql -v ON_ERROR_STOP=1 -f`):
            # timeouts, then as the connecting role the extensions, the roles and dbkit's schema,
            # then SET ROLE owner, row_security = off and dbkit's checksum table.
            context.execute(f"SET lock_timeout = {_literal(settings.lock_timeout)}")
            context.execute(f"SET statement_timeout = {_literal(settings.statement_timeout)}")
            for stmt in offline_preflight(settings, quote):
                context.execute(stmt)

            if settings.migrate_set_role:
                context.execute(f"SET ROLE {quote(settings.role_owner)}")
            context.execute(ROW_SECURITY_OFF)
            context.execute(CHECKSUMS_DDL)
            context.run_migrations()
        return
    mutate = not config.attributes.get("dbkit_readonly", False)
    command = _command(config)

    def check(conn) -> None:  # refusals, run by migration_connection before any DDL
        if command in ("upgrade", "downgrade"):
            _refuse_unadopted(conn, settings, context.script)
        if command == "upgrade":  # dbkit says the target, plain `alembic upgrade REV` has it
            target = config.attributes.get("dbkit_target") or getattr(config.cmd_opts, "revision", None)
            refuse_community_on_apache(settings, context.script, target)(conn)

    keep_roles = bool(config.attributes.get("dbkit_keep_server_roles")) and mutate
    with migration_connection(settings, mutate=mutate, check=check, keep_server_roles=keep_roles) as (connection,
                                                                                                     watcher), \
            (_outside(settings) if keep_roles else contextlib.nullcontext()) as outside:
        config.attributes["dbkit_watcher"] = watcher
        if outside is not None:
            opts["on_version_apply"] = [_record_checksum, _server_roles_kept(outside)]
        opts.update(autogenerate_online_options(settings, connection))
        connection.commit()
        context.configure(connection=connection, **opts)
        # The steps of the running command (upgrade, downgrade, stamp, …): Alembic keeps the
        # command's step function on the MigrationContext; wrap it so that the first step going
        # down meets guard_downgrade before anything runs.  tests/test_migrate_prod.py proves it.
        migration_context = context.get_context()
        if migration_context._migrations_fn is not None:
            migration_context._migrations_fn = _guarded_steps(migration_context._migrations_fn, settings,
                                                              _allow_prod(context))
        # read under the advisory lock: what a concurrent run already applied counts
        config.attributes["dbkit_before"] = list(context.get_context().get_current_heads())
        with context.begin_transaction():
            context.run_migrations()
