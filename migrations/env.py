"""Alembic environment for the reference schema.

The URL comes from dbkit's settings (``DATABASE_URL``, or the embedded dev
cluster in dev), never from alembic.ini, so no password is ever written to a file
here.  Issue 3 adds models (autogenerate), dbkit's operations and safety rails.
"""

from alembic import context
from sqlalchemy import create_engine, pool

from dbkit import db
from dbkit.config import load_settings

config = context.config
target_metadata = None


def _url() -> str:
    return db.resolve_url(load_settings()).sqlalchemy_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          transaction_per_migration=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
