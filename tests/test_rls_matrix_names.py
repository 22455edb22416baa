"""The RLS matrix and its escalation checks on a table and an owner column whose names hold ``%`` and ``"``:
every statement quotes them (and doubles the ``%`` psycopg would read as a placeholder), so a project with such
names gets its checks instead of a syntax error."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from migrate_helpers import q, settings_for
from test_tenant_isolation import login, tenants

from dbkit.testing._escalation import escalation_failures
from dbkit.testing._matrix import CASES, check_case, discover

pytestmark = pytest.mark.integration

TABLE, COLUMN = 'odd%w"name', 'ten%"ant'


def test_the_matrix_checks_a_table_with_percent_and_quote_in_its_names(dbkit_server, dbkit_seeded_db):
    url = dbkit_seeded_db
    base = settings_for(url)
    settings = dataclasses.replace(base, rls={**base.rls, "tables": {**base.rls.get("tables", {}),
                                                                      TABLE: {"tenant_column": COLUMN}}})
    claim = "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
    q(url, f"""SET ROLE app_owner;
        CREATE TABLE app."odd%w""name" ("ten%""ant" uuid NOT NULL, "no%te" text);
        ALTER TABLE app."odd%w""name" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
        CREATE POLICY "p%""all" ON app."odd%w""name" TO app_rls USING ("ten%""ant" = {claim})
            WITH CHECK ("ten%""ant" = {claim});
        CREATE POLICY "p%""read" ON app."odd%w""name" FOR SELECT TO app_readonly USING ("ten%""ant" = {claim});
        GRANT SELECT, INSERT, UPDATE, DELETE ON app."odd%w""name" TO app_rls, app_full;
        GRANT SELECT ON app."odd%w""name" TO app_readonly""")
    for i, tenant in enumerate(tenants(url)[:3]):
        q(url, 'INSERT INTO app."odd%%w""name" SELECT %s, %s FROM generate_series(1, %s)', (tenant, "a%b", i + 1))
    with psycopg.connect(url.conninfo, autocommit=True) as admin:
        (table,) = [t for t in discover(admin, settings) if t.name == TABLE]
        assert table.tenant_column == COLUMN and len(table.tenants) == 2 and table.counts["*"] == 6
        roles = {"enforce": "app_rls", "bypass": "app_full", "readonly": "app_readonly"}
        for kind, command in CASES:
            with login(dbkit_server, url, settings, kind) as conn:
                assert check_case(conn, table, kind, command, roles[kind], settings) == [], (kind, command)
        with login(dbkit_server, url, settings, "enforce") as conn:
            assert escalation_failures(conn, admin, [table], settings) == []
            # and the checks still see a hole through such a name: the table's own policy opened to everyone
            admin.execute('CREATE POLICY "open%" ON app."odd%w""name" FOR SELECT TO app_rls USING (true)')
            failures = check_case(conn, table, "enforce", "SELECT", "app_rls", settings)
        assert any(f"rows of other tenants in {TABLE}" in f for f in failures), failures
