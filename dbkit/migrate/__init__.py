"""``dbkit migrate``: Alembic migrations with PostgreSQL-aware operations and safety rails.

* :mod:`dbkit.migrate._ops`      ``op.create_extension``, ``op.create_hypertable``, ``op.enable_rls``, ...
* :mod:`dbkit.migrate._session`  advisory lock, timeouts, extension preflight, SET ROLE owner
* :mod:`dbkit.migrate.env`      what ``migrations/env.py`` calls (shared by ``alembic`` and ``dbkit``)
* :mod:`dbkit.migrate._runner`   the verbs behind ``dbkit migrate …``
* :mod:`dbkit.migrate._lint`     lock-safety lint of offline SQL with squawk

Revisions call :func:`settings` for role names, schema and claim names, which are settings,
and :func:`role_model` for what the role model grants (read-only tables, privileges per kind).
"""

from __future__ import annotations

__all__ = ["settings", "role_model"]


def settings(operations=None):
    """The dbkit settings of the running migration (use inside a revision's upgrade/downgrade).

    Taken from the Alembic config dbkit's env put them on; loaded afresh when the
    migration runs without it (e.g. an Operations object built by hand).
    """
    if operations is None:
        from alembic import op

        try:
            config = op.get_context().config
        except NameError:  # no migration is running
            config = None
    else:
        config = operations.migration_context.config
    value = config.attributes.get("dbkit_settings") if config is not None else None
    if value is None:
        from dbkit.config import load_settings

        value = load_settings()
    return value


def role_model(operations=None):
    """The project's role model (:class:`dbkit.roles.RoleModel`) for the running migration."""
    from dbkit import roles

    return roles.model(settings(operations))
