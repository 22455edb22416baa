"""Row-level security of public.notes, proven on a real PostgreSQL by dbkit's pytest plugin
(`pip install 'dbkit[testing]'`; run with `pytest`).

The plugin starts a server, migrates a database to head and seeds it (tiny profile).  The two
imported tests are the RLS matrix (every role kind x SELECT/INSERT/UPDATE/DELETE on every table
with RLS: each tenant sees and changes exactly its own rows) and the escalation checks (the
enforce role cannot switch roles, turn RLS off or touch policies).  Below, one explicit example
of `as_role`, the fixture to use in your own tests.
"""

import psycopg
from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401


def _rows_per_tenant(url, schema):
    """(tenant id, rows) of notes, most rows first, read as the superuser (no RLS)."""
    with psycopg.connect(url.conninfo) as admin:
        return admin.execute(
            f'SELECT tenant_id, count(*) FROM "{schema}".notes GROUP BY 1 ORDER BY 2 DESC, 1').fetchall()


def test_enforce_role_sees_only_its_own_tenants_rows(as_role, dbkit_seeded_db, dbkit_settings):
    schema = dbkit_settings.schema
    counts = _rows_per_tenant(dbkit_seeded_db, schema)
    assert len(counts) >= 2, "the seeds give rows of several tenants"
    (mine, rows), (other, _) = counts[0], counts[1]
    with as_role("enforce", tenant=mine) as conn:
        seen = conn.execute(f'SELECT tenant_id, count(*) FROM "{schema}".notes GROUP BY 1').fetchall()
        assert seen == [(mine, rows)]
        # another tenant's rows cannot be changed: UPDATE finds none of them
        changed = conn.execute(f'UPDATE "{schema}".notes SET title = title WHERE tenant_id = %s', (other,))
        assert changed.rowcount == 0
    with as_role("enforce") as conn:  # no claim set: no rows at all (fail closed)
        assert conn.execute(f'SELECT count(*) FROM "{schema}".notes').fetchone()[0] == 0
