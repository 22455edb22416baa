"""dbkit for pytest: fixtures (see :mod:`dbkit.testing.plugin`) and the RLS matrix.

The fixtures are built on pytest-postgresql: ``pip install 'dbkit[testing]'``.

Enable the matrix in a test module with one line::

    from dbkit.testing import test_rls_matrix, test_rls_escalation  # noqa: F401

It discovers every table with row-level security in DBKIT_SCHEMA, seeds several
tenants (tiny profile) and checks every role kind x command; see
:mod:`dbkit.testing._matrix` for the expectations and ``[tool.dbkit.rls]`` overrides.
"""

from __future__ import annotations

import pytest

from dbkit.testing._escalation import escalation_failures
from dbkit.testing._matrix import CASES, check_case
from dbkit.testing.plugin import connect_as, role_name, settings_for  # noqa: F401 - public

__all__ = ["connect_as", "role_name", "settings_for", "test_rls_escalation", "test_rls_matrix"]


def _skip_without_rls(settings) -> None:
    if settings.rls_model == "none":
        pytest.skip("the project does not use row-level security (DBKIT_RLS_MODEL=none)")


@pytest.mark.parametrize(("kind", "command"), CASES, ids=[f"{k}-{c}" for k, c in CASES])
def test_rls_matrix(kind, command, dbkit_server, dbkit_rls_db, dbkit_settings, dbkit_rls_tables):
    """Role `kind` running `command` on every table with RLS sees and changes exactly what it should."""
    _skip_without_rls(dbkit_settings)
    assert dbkit_rls_tables, f"no table with row-level security in schema {dbkit_settings.schema}"
    names = getattr(dbkit_settings, f"role_{kind}")
    if not names:
        pytest.skip(f"the project has no {kind} role (DBKIT_ROLE_{kind.upper()}=none)")
    failures: list[str] = []
    for role in names:  # every role of the kind
        with connect_as(dbkit_server, dbkit_rls_db, dbkit_settings, role) as conn:
            for table in dbkit_rls_tables:
                failures += check_case(conn, table, kind, command, role, dbkit_settings)
    assert not failures, "\n".join(failures)


def test_rls_escalation(dbkit_server, dbkit_rls_db, dbkit_settings, dbkit_rls_tables):
    """The enforce role cannot switch roles, turn RLS off, touch policies or read pg_authid; FORCE holds."""
    import psycopg

    _skip_without_rls(dbkit_settings)
    failures: list[str] = []
    for role in dbkit_settings.role_enforce:
        with connect_as(dbkit_server, dbkit_rls_db, dbkit_settings, role) as conn, \
                psycopg.connect(dbkit_rls_db.conninfo) as admin:
            failures += escalation_failures(conn, admin, dbkit_rls_tables, dbkit_settings)
    assert not failures, "\n".join(failures)
