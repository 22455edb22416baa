"""Candlefish's tenant isolation, proven on a real PostgreSQL by dbkit's pytest plugin (`pytest`).

The plugin migrates a database to head and seeds it (tiny profile: three organisations).  The two
imported tests are dbkit's RLS matrix (every role kind x SELECT/INSERT/UPDATE/DELETE on orgs and
sensors, which have RLS, and on the tenant-scoped views readings_scoped and readings_hourly_scoped) and
the escalation checks (the API cannot switch roles, turn RLS off, touch policies, or reach the
hypertable, the aggregate or their chunks behind the views).  Below, what the RTPM API and Grafana do.
"""

import psycopg
import pytest

from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401


def _orgs(url) -> list[tuple]:
    """(org id, readings) per organisation, most readings first, as the superuser (no isolation)."""
    with psycopg.connect(url.conninfo) as admin:
        return admin.execute("SELECT org_id, count(*) FROM rtpm.readings GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()


def test_the_api_reads_only_its_organisation(as_role, dbkit_seeded_db):
    (mine, readings), (other, _) = _orgs(dbkit_seeded_db)[:2]
    with as_role("enforce", tenant=mine) as conn:  # rtpm_api with rtpm.org_id set for this transaction
        assert conn.execute("SELECT org_id, count(*) FROM rtpm.readings_scoped GROUP BY 1").fetchall() == \
            [(mine, readings)]
        hourly = conn.execute("SELECT org_id, sum(samples) FROM rtpm.readings_hourly_scoped GROUP BY 1").fetchall()
        assert hourly == [(mine, readings)]  # `dbkit seed` refreshed the aggregate over every reading
        assert conn.execute("SELECT array_agg(id) FROM rtpm.orgs").fetchone()[0] == [mine]
        assert conn.execute("SELECT count(*) FROM rtpm.sensors WHERE org_id = %s", (other,)).fetchone()[0] == 0
    with as_role("enforce") as conn:  # no organisation set: nothing at all (fail closed)
        assert conn.execute("SELECT count(*) FROM rtpm.readings_scoped").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM rtpm.readings_hourly_scoped").fetchone()[0] == 0


def test_the_api_ingests_through_the_view_and_only_for_its_organisation(as_role, dbkit_seeded_db):
    (mine, _), (other, _) = _orgs(dbkit_seeded_db)[:2]
    with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
        sensor = admin.execute("SELECT id FROM rtpm.sensors WHERE org_id = %s LIMIT 1", (mine,)).fetchone()[0]
    with as_role("enforce", tenant=mine) as conn:
        conn.execute("INSERT INTO rtpm.readings_scoped VALUES (now(), %s, %s, 'cpu_pct', 42.5)", (mine, sensor))
        with pytest.raises(psycopg.errors.WithCheckOptionViolation):  # 44000: another organisation's row
            conn.execute("INSERT INTO rtpm.readings_scoped VALUES (now(), %s, %s, 'cpu_pct', 1)", (other, sensor))
    with as_role("enforce", tenant=mine) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the hypertable itself: the worker only
            conn.execute("INSERT INTO rtpm.readings VALUES (now(), %s, %s, 'cpu_pct', 1)", (mine, sensor))


@pytest.mark.parametrize("relation", ["rtpm.readings", "rtpm.readings_hourly"])
def test_the_api_and_grafana_cannot_read_around_the_views(as_role, dbkit_seeded_db, relation):
    mine = _orgs(dbkit_seeded_db)[0][0]
    for kind in ("enforce", "readonly"):
        with as_role(kind, tenant=mine) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT count(*) FROM {relation}")


def test_orgs_are_read_only_for_the_api(as_role, dbkit_seeded_db):
    mine = _orgs(dbkit_seeded_db)[0][0]
    with as_role("enforce", tenant=mine) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE rtpm.orgs SET plan = 'enterprise' WHERE id = %s", (mine,))


def test_grafana_reads_its_dashboards_and_writes_nothing(as_role, dbkit_seeded_db):
    (mine, readings), *_ = _orgs(dbkit_seeded_db)
    with as_role("readonly", tenant=mine) as conn:  # rtpm_grafana, one organisation per data source
        assert conn.execute("SELECT sum(samples) FROM rtpm.readings_hourly_scoped").fetchone()[0] == readings
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM rtpm.readings_scoped")
