"""dbkit: PostgreSQL lifecycle toolkit (migrations, seeds, backups, RLS) for apps on
PostgreSQL with row-level security, pgvector and TimescaleDB.

The public surface is small and explicit (see ``__all__``); submodules are
imported on use so that ``import dbkit`` and ``dbkit --help`` stay fast.
"""

from dbkit.errors import (
    ConfigError,
    DatabaseUnavailable,
    DbkitError,
    MissingDependency,
    Refused,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "ConfigError",
    "DatabaseUnavailable",
    "DbkitError",
    "MissingDependency",
    "Refused",
]
