"""dbkit: PostgreSQL lifecycle toolkit (migrations, seeds, backups, RLS) for apps on
PostgreSQL with row-level security, pgvector and TimescaleDB.

What an application imports is here, and only that (``tests/test_exported_members.py`` pins it)::

    import dbkit

    with dbkit.scoped(conn, tenant_id=tenant):          # RLS claims for one transaction (psycopg)
        ...
    with dbkit.scoped_session(session, tenant_id=t):    # the same for a SQLAlchemy Session
        ...

    @dbkit.seeder("documents", depends_on=["users"])    # seeds/*.py
    def documents(ctx): ...

    settings = dbkit.load_settings()                    # flag > env > .env.<env> > .env > [tool.dbkit]
    dbkit.run_migrations(target_metadata=metadata)      # migrations/env.py: dbkit's rails for Alembic

Revisions use ``op.create_hypertable``, ``op.enable_rls``, ``op.create_policy`` & co (registered when
``migrations/env.py`` runs) and :func:`migration_settings` / :func:`role_model` for names.  The pytest
fixtures come with the plugin (``dbkit.testing``).  Everything is imported on first use, so ``import
dbkit`` and ``dbkit --help`` stay fast.
"""

from __future__ import annotations

from dbkit.errors import (
    ConfigError,
    DatabaseUnavailable,
    DbkitError,
    MissingDependency,
    OperationFailed,
    Refused,
    UsageError,
)

__version__ = "0.1.0"

#: name -> (module, attribute), imported on first use
_LAZY = {
    "scoped": ("dbkit.rls", "scoped"),
    "scoped_session": ("dbkit.rls", "scoped_session"),
    "seeder": ("dbkit.seed", "seeder"),
    "load_settings": ("dbkit.config", "load_settings"),
    "Settings": ("dbkit.config", "Settings"),
    "run_migrations": ("dbkit.migrate.env", "run"),
    "migration_settings": ("dbkit.migrate", "settings"),
    "role_model": ("dbkit.migrate", "role_model"),
}

__all__ = [
    "__version__",
    "DbkitError", "OperationFailed", "ConfigError", "UsageError", "DatabaseUnavailable", "MissingDependency",
    "Refused",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dbkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
