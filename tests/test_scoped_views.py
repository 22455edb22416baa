"""The isolation mode for what cannot have row-level security: a hypertable (compressed, with a continuous
aggregate) that no application role may touch, read and written through tenant-scoped views
(``op.create_scoped_view``).  A real project (pytester) runs the RLS matrix, the escalation checks, ``roles
check`` and ``rls audit`` over it; the audit accepts exactly that configuration and fails looser ones."""

import textwrap

import psycopg
import pytest

from dbkit.rls._audit import audit
from tests.test_rls_models import _project, _run

pytest_plugins = ["pytester"]

PYPROJECT = """\
[project]
name = "telemetry-views"
version = "0"

[tool.dbkit]
extensions = ["pgcrypto", "timescaledb"]
schema = "app"
role_owner = "tv_owner"
role_enforce = "tv_api"
role_bypass = "tv_worker"
role_readonly = "tv_grafana"

# the hypertable itself: only the bypass role (and the owner) reach it; the application uses the views
[tool.dbkit.roles.enforce]
tables = {{ readings = [] }}

[tool.dbkit.roles.readonly]
tables = {{ readings = [] }}

[tool.dbkit.roles]
read_only_tables = {read_only}
"""

REVISION = '''\
"""readings: a hypertable read and written through a tenant-scoped view

Revision ID: 0001
"""

from alembic import op

import dbkit.migrate

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    s = dbkit.migrate.settings()
    model = dbkit.migrate.role_model()
    op.apply_roles()
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    op.execute("CREATE TABLE app.readings (time timestamptz NOT NULL, tenant_id uuid NOT NULL, sensor int NOT NULL, "
               "value float8 NOT NULL)")
    op.create_hypertable("readings", "time", schema="app", chunk_interval="1 day")
    op.create_scoped_view("readings_scoped", "readings", schema="app")
{extra}
    for grant in model.grants({tables!r}, s.schema):
        op.grant(**grant)


def downgrade() -> None:
    raise NotImplementedError
'''

COMMUNITY_EXTRA = '''\
    op.execute("ALTER TABLE app.readings SET (timescaledb.compress, timescaledb.compress_segmentby = 'tenant_id')")
    with op.get_context().autocommit_block():
        op.execute("CREATE MATERIALIZED VIEW app.readings_hourly WITH (timescaledb.continuous) AS "
                   "SELECT tenant_id, time_bucket(INTERVAL '1 hour', time) AS bucket, avg(value) AS avg_value "
                   "FROM app.readings GROUP BY tenant_id, bucket WITH NO DATA")
    op.create_scoped_view("readings_hourly_scoped", "readings_hourly", schema="app")
    with op.get_context().autocommit_block():  # a real-time aggregate: PostgreSQL cannot write through it
        op.execute("CREATE MATERIALIZED VIEW app.readings_live WITH (timescaledb.continuous, "
                   "timescaledb.materialized_only = false) AS SELECT tenant_id, time_bucket(INTERVAL '1 day', time) "
                   "AS day, count(*) AS n FROM app.readings GROUP BY tenant_id, day WITH NO DATA")
    op.create_scoped_view("readings_live_scoped", "readings_live", schema="app", updatable=False)'''

SEEDS = '''\
from dbkit.seed import seeder


@seeder("readings", columns=("time", "tenant_id", "sensor", "value"),
        rows={"tiny": 60, "small": 600, "medium": 6000, "large": 60000})
def readings(ctx):
    tenants = [ctx.uuid() for _ in range(3)]
    times = ctx.times(ctx.rows)
    for i, tenant in enumerate(ctx.spread(tenants, ctx.rows)):
        yield times[i], tenant, ctx.rng.randint(1, 5), ctx.rng.random()
'''

TESTS = '''

def test_the_application_writes_through_the_view(as_role, dbkit_seeded_db):
    with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
        tenant = admin.execute("SELECT tenant_id FROM app.readings LIMIT 1").fetchone()[0]
    with as_role("enforce", tenant=tenant) as conn:
        conn.execute("INSERT INTO app.readings_scoped VALUES (now(), %s, 9, 1.5)", (tenant,))
        assert {r[0] for r in conn.execute("SELECT tenant_id FROM app.readings_scoped")} == {tenant}
'''

COMMUNITY_TESTS = '''

def test_compressed_chunks_and_the_aggregate_stay_per_tenant(as_role, dbkit_seeded_db):
    with psycopg.connect(dbkit_seeded_db.conninfo, autocommit=True) as admin:
        tenants = [r[0] for r in admin.execute("SELECT DISTINCT tenant_id FROM app.readings ORDER BY 1")]
        admin.execute("SELECT compress_chunk(c) FROM show_chunks('app.readings') c")
        admin.execute("CALL refresh_continuous_aggregate('app.readings_hourly', NULL, NULL)")
        per_tenant = dict(admin.execute("SELECT tenant_id, count(*) FROM app.readings_hourly GROUP BY 1").fetchall())
    with as_role("enforce", tenant=tenants[0]) as conn:
        assert {r[0] for r in conn.execute("SELECT tenant_id FROM app.readings_scoped")} == {tenants[0]}
        rows = conn.execute("SELECT tenant_id, count(*) FROM app.readings_hourly_scoped GROUP BY 1").fetchall()
        assert rows == [(tenants[0], per_tenant[tenants[0]])]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT 1 FROM app.readings_hourly")
'''


def _revision(extra: str = "", tables=("readings", "readings_scoped")) -> str:
    return REVISION.format(extra=extra, tables=list(tables))


@pytest.mark.integration
def test_a_hypertable_behind_a_scoped_view_passes_the_matrix_and_the_audit(pytester, monkeypatch, dbkit_server):
    _project(pytester, monkeypatch, pyproject=PYPROJECT.format(read_only="[]"), revision=_revision(), seeds=SEEDS,
             tests=TESTS)
    result = _run(pytester, monkeypatch, dbkit_server)
    out = result.stdout.str()
    # enforce and readonly x 4 on the view; bypass x 4 (nothing to do on a view); escalation; checks; the write test
    result.assert_outcomes(passed=15)
    assert "AUDIT: 0 tables checked" not in out and "AUDIT: 1 tables checked in app" in out, out


@pytest.mark.community
@pytest.mark.integration
def test_compression_and_a_continuous_aggregate_behind_scoped_views(pytester, monkeypatch, dbkit_server):
    _project(pytester, monkeypatch,
             pyproject=PYPROJECT.format(read_only='["readings_hourly_scoped", "readings_live_scoped"]'),
             revision=_revision(COMMUNITY_EXTRA, ("readings", "readings_scoped", "readings_hourly_scoped",
                                                  "readings_live_scoped")),
             seeds=SEEDS, tests=TESTS + COMMUNITY_TESTS)
    result = _run(pytester, monkeypatch, dbkit_server)
    out = result.stdout.str()
    result.assert_outcomes(passed=16)
    assert "AUDIT: 1 tables checked in app" in out, out


# --------------------------------------------------------------------- the audit accepts exactly this

def _scoped_db(url, settings, *, view_sql: str, grants: str) -> None:
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.notes (tenant_id uuid NOT NULL, body text)")
        conn.execute(view_sql)
        conn.execute(grants)


@pytest.mark.integration
@pytest.mark.parametrize(("view_sql", "grants", "codes"), [
    pytest.param("CREATE VIEW app.notes_v WITH (security_barrier) AS SELECT * FROM app.notes WHERE tenant_id = "
                 "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid) WITH CASCADED CHECK OPTION",
                 "GRANT SELECT, INSERT ON app.notes_v TO {enforce}", set(), id="exactly-the-scoped-view"),
    pytest.param("CREATE VIEW app.notes_v WITH (security_barrier) AS SELECT * FROM app.notes WHERE tenant_id = "
                 "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid) WITH CASCADED CHECK OPTION",
                 "GRANT SELECT ON app.notes_v, app.notes TO {enforce}", {"reachable_without_rls"},
                 id="the-table-granted-too"),
    pytest.param("CREATE VIEW app.notes_v WITH (security_barrier) AS SELECT * FROM app.notes WHERE tenant_id = "
                 "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid) OR body IS NULL",
                 "GRANT SELECT ON app.notes_v TO {enforce}", {"view_bypasses_rls", "table_without_rls"},
                 id="a-looser-filter"),
    pytest.param("CREATE VIEW app.notes_v WITH (security_barrier) AS SELECT * FROM app.notes WHERE tenant_id = "
                 "(SELECT NULLIF(current_setting('app.other', true), '')::uuid) WITH CASCADED CHECK OPTION",
                 "GRANT SELECT ON app.notes_v TO {enforce}", {"view_bypasses_rls", "table_without_rls"},
                 id="another-setting"),
    pytest.param("CREATE VIEW app.notes_v AS SELECT * FROM app.notes WHERE tenant_id = "
                 "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid) WITH CASCADED CHECK OPTION",
                 "GRANT SELECT ON app.notes_v TO {enforce}", {"view_bypasses_rls", "table_without_rls"},
                 id="no-security-barrier"),
    pytest.param("CREATE VIEW app.notes_v WITH (security_barrier) AS SELECT * FROM app.notes WHERE tenant_id = "
                 "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)",
                 "GRANT SELECT, INSERT ON app.notes_v TO {enforce}", {"view_bypasses_rls", "table_without_rls"},
                 id="writable-without-check-option"),
])
def test_the_audit_accepts_exactly_a_scoped_view(migrated_url, dbkit_settings, view_sql, grants, codes):
    from dbkit.testing import settings_for

    settings = settings_for(dbkit_settings, migrated_url)
    enforce = settings.role_enforce[0]
    with psycopg.connect(migrated_url.conninfo, autocommit=True) as conn:
        conn.execute("DROP SCHEMA app CASCADE")
    grants = f"GRANT USAGE ON SCHEMA app TO {enforce}; " + grants.format(enforce=enforce)
    _scoped_db(migrated_url, settings, view_sql=view_sql, grants=grants)
    report = audit(settings)
    found = {f.code for f in report.findings if f.table in ("notes", "notes_v")}
    assert found == codes, [f.line() for f in report.findings]


@pytest.mark.unit
def test_the_operation_renders_the_model_predicate():
    from dbkit.rls import Claims
    from dbkit.rls._scoped import _quote, scoped_view_sql

    sql = scoped_view_sql(_quote, "goals_v", "goals", "app", "user_id", Claims("jwt").predicate("user", "uuid"), True)
    assert sql == textwrap.dedent("""\
        CREATE VIEW "app"."goals_v" WITH (security_barrier) AS SELECT * FROM "app"."goals" WHERE "user_id" = \
(SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'sub', '')::uuid) \
WITH CASCADED CHECK OPTION""")
