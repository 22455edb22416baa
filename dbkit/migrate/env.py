"""What ``migrations/env.py`` runs: the same safety rails for ``alembic …`` and ``dbkit migrate``.

``migrations/env.py`` is three lines::

    from dbkit.migrate.env import run
    from migrations.models import metadata
    run(target_metadata=metadata)
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from dbkit.migrate.session import BOOKKEEPING_SCHEMA

__all__ = ["run", "include_name", "make_include_object", "render_item", "file_sha256"]


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _record_checksum(ctx, step, heads, run_args) -> None:
    """on_version_apply: remember each applied revision's file checksum (same transaction)."""
    if ctx.as_sql:
        return
    if ctx.config is not None:  # what really ran, for dbkit's report
        ctx.config.attributes.setdefault("dbkit_steps", []).extend(
            (rev_id, step.is_upgrade) for rev_id in step.up_revision_ids)
    conn = ctx.connection
    for rev_id in step.up_revision_ids:
        if step.is_upgrade:
            script = step.revision_map.get_revision(rev_id)
            rel = f"versions/{Path(script.path).name}"
            conn.exec_driver_sql(
                f"INSERT INTO {BOOKKEEPING_SCHEMA}.migration_checksums (revision, filename, sha256) "
                "VALUES (%(rev)s, %(file)s, %(sha)s) ON CONFLICT (revision) DO UPDATE "
                "SET filename = EXCLUDED.filename, sha256 = EXCLUDED.sha256, applied_at = now()",
                {"rev": rev_id, "file": rel, "sha": file_sha256(script.path)},
            )
        else:
            conn.exec_driver_sql(
                f"DELETE FROM {BOOKKEEPING_SCHEMA}.migration_checksums WHERE revision = %(rev)s", {"rev": rev_id}
            )


def include_name(schemas: set[str]):
    """Autogenerate looks only at the application's schemas (not public, TimescaleDB's or dbkit's)."""

    def _include(name, type_, parent_names) -> bool:
        if type_ == "schema":
            return name in schemas
        return True

    return _include


def _timescale_index_names(conn) -> set[tuple[str, str]]:
    """(schema, index) of the indexes TimescaleDB creates itself on hypertables (``<table>_<time>_idx``)."""
    exists = conn.exec_driver_sql("SELECT to_regclass('timescaledb_information.dimensions')").scalar()
    if not exists:
        return set()
    rows = conn.exec_driver_sql(
        "SELECT hypertable_schema, hypertable_name, column_name FROM timescaledb_information.dimensions"
    ).all()
    return {(s, f"{t}_{c}_idx") for s, t, c in rows}


def render_item(type_, obj, autogen_context):
    """Render pgvector types as ``VECTOR(dim=384)`` with ``from pgvector.sqlalchemy import VECTOR``,
    so generated revisions import what they use."""
    if type_ == "type" and type(obj).__module__.startswith("pgvector."):
        name = type(obj).__name__
        autogen_context.imports.add(f"from pgvector.sqlalchemy import {name}")
        return repr(obj)
    return False


def make_include_object(timescale_indexes: set[tuple[str, str]]):
    def _include(obj, name, type_, reflected, compare_to) -> bool:
        if type_ == "index" and reflected and compare_to is None:
            schema = getattr(getattr(obj, "table", None), "schema", None)
            if (schema, name) in timescale_indexes:
                return False
        return True

    return _include


def run(*, target_metadata=None, context=None) -> None:
    """Configure Alembic and run migrations, online (dbkit's session) or offline (``--sql``)."""
    import dbkit.migrate.ops  # noqa: F401 - registers op.create_extension & co
    import pgvector.sqlalchemy  # noqa: F401 - teaches SQLAlchemy the vector type for autogenerate

    if context is None:
        from alembic import context
    from dbkit.config import load_settings
    from dbkit.migrate.session import migration_connection

    config = context.config
    settings = config.attributes.get("dbkit_settings")
    if settings is None:
        settings = config.attributes["dbkit_settings"] = load_settings()
    schemas = {settings.schema}
    opts = dict(
        target_metadata=target_metadata,
        version_table_schema=BOOKKEEPING_SCHEMA,
        include_schemas=True,
        include_name=include_name(schemas),
        compare_type=True,
        render_item=render_item,
        transaction_per_migration=True,
        on_version_apply=[_record_checksum],
    )
    if context.is_offline_mode():
        url = settings.database_url.sqlalchemy_url if settings.database_url else "postgresql+psycopg://"
        context.configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **opts)
        with context.begin_transaction():
            # What dbkit's session does online, written out for reviewers and for lint.
            context.execute(f"SET lock_timeout = '{settings.lock_timeout}'")
            context.execute(f"SET statement_timeout = '{settings.statement_timeout}'")
            if settings.migrate_set_role:
                context.execute(f'CREATE SCHEMA IF NOT EXISTS {BOOKKEEPING_SCHEMA} AUTHORIZATION "{settings.role_owner}"')
                context.execute(f'SET ROLE "{settings.role_owner}"')
            context.run_migrations()
        return
    mutate = not config.attributes.get("dbkit_readonly", False)
    with migration_connection(settings, mutate=mutate) as (connection, watcher):
        config.attributes["dbkit_watcher"] = watcher
        opts["include_object"] = make_include_object(_timescale_index_names(connection))
        connection.commit()
        context.configure(connection=connection, **opts)
        # read under the advisory lock: what a concurrent run already applied counts
        config.attributes["dbkit_before"] = list(context.get_context().get_current_heads())
        with context.begin_transaction():
            context.run_migrations()
