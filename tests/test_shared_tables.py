"""Shared tables (``[tool.dbkit.rls] shared_tables``): tables that hold no tenant's rows (plans, countries), which
every tenant reads and none may change. Before, the audit had no passing state for them: without RLS they were
``table_without_rls``/``reachable_without_rls``, with RLS and ``FOR SELECT USING (true)`` ``permissive_true_policy``.
"""

from __future__ import annotations

import dataclasses

import psycopg
import pytest
from migrate_helpers import q, settings_for
from psycopg import errors
from test_autogen import _protect, _settings
from test_tenant_isolation import login, tenants

from dbkit import roles
from dbkit.errors import ConfigError
from dbkit.rls import scoped
from dbkit.rls._audit import audit

pytestmark = pytest.mark.integration


def _shared(settings, *tables: str):
    return dataclasses.replace(settings, rls={**settings.rls, "shared_tables": list(tables)})


def _plans(url, *, rls: bool = False) -> None:
    q(url, "SET ROLE app_owner; CREATE TABLE app.plans (id int PRIMARY KEY, name text NOT NULL); "
           "INSERT INTO app.plans VALUES (1, 'free'), (2, 'pro'); "
           "GRANT SELECT ON app.plans TO app_rls, app_readonly; GRANT ALL ON app.plans TO app_full")
    if rls:
        q(url, "ALTER TABLE app.plans ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY; "
               "CREATE POLICY plans_read ON app.plans FOR SELECT USING (true)")


def codes(report, table: str = "plans") -> set[str]:
    return {f.code for f in report.findings if f.table == table}


def test_a_shared_table_without_rls_audits_clean_and_every_tenant_reads_it(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _plans(url)
    assert codes(audit(settings)) == {"table_without_rls", "reachable_without_rls"}  # not declared: not accepted
    shared = _shared(settings, "plans")
    report = audit(shared)
    assert report.clean, [f.line() for f in report.findings]
    with login(dbkit_server, url, settings, "enforce") as conn:
        for tenant in tenants(url)[:2]:
            with scoped(conn, tenant_id=tenant):
                assert conn.execute("SELECT count(*) FROM app.plans").fetchone()[0] == 2
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE app.plans SET name = 'mine'")


def test_a_shared_table_a_tenant_can_change_fails_the_audit(dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _plans(url)
    q(url, "GRANT INSERT, UPDATE ON app.plans TO app_rls; GRANT DELETE ON app.plans TO PUBLIC")
    hits = {f.role: f for f in audit(_shared(settings, "app.plans")).findings if f.table == "plans"}
    assert set(hits) == {"app_rls", "app_readonly"} and {f.code for f in hits.values()} == {"reachable_without_rls"}
    assert "app_rls can INSERT/UPDATE/DELETE this shared table" in hits["app_rls"].message
    assert "one tenant's change reaches them all" in hits["app_rls"].message
    assert hits["app_rls"].fix.startswith("REVOKE DELETE ON app.plans FROM PUBLIC; "
                                          "REVOKE INSERT, UPDATE ON app.plans FROM app_rls (")
    assert hits["app_readonly"].fix.startswith("REVOKE DELETE ON app.plans FROM PUBLIC (")


def test_a_shared_table_with_a_true_select_policy_is_accepted_but_not_a_true_write_policy(dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _plans(url, rls=True)
    assert codes(audit(settings)) == {"permissive_true_policy"}
    shared = _shared(settings, "plans")
    assert audit(shared).clean
    q(url, "CREATE POLICY plans_all ON app.plans USING (true) WITH CHECK (true)")
    (hit,) = [f for f in audit(shared).findings if f.table == "plans"]
    assert hit.code == "permissive_true_policy" and "plans_all" in hit.message
    q(url, "DROP POLICY plans_all ON app.plans")
    q(url, "GRANT TRUNCATE ON app.plans TO app_rls")  # what no policy filters still counts
    assert codes(audit(shared)) == {"privilege_bypasses_rls"}


def test_the_role_model_matrix_and_definer_check_treat_a_shared_table_as_shared(dbkit_server, dbkit_seeded_db):
    from dbkit.testing._matrix import discover

    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _plans(url, rls=True)
    shared = _shared(settings, "plans")
    model = roles.model(shared)
    assert model.table_privileges("enforce", "plans") == ("SELECT",)
    assert model.table_privileges("readonly", "plans") == ("SELECT",)
    assert model.table_privileges("enforce", "documents") == ("SELECT", "INSERT", "UPDATE", "DELETE")
    assert roles.model(settings).table_privileges("enforce", "plans") == ("SELECT", "INSERT", "UPDATE", "DELETE")
    with psycopg.connect(url.conninfo, autocommit=True) as admin:
        names = {t.name for t in discover(admin, shared)}  # no tenant column to compare: left out
        assert "plans" not in names and "documents" in names
    # a SECURITY DEFINER function that reads only a shared table reads no tenant's rows
    q(url, "CREATE FUNCTION app.plan_names() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER "
           "AS 'SELECT name FROM app.plans'")
    assert codes(audit(settings), "plan_names()") == {"definer_bypasses_rls"}
    assert audit(shared).clean


@pytest.mark.parametrize("value", ['"plans"', '[1]', '["a.b.c"]', '[".plans"]', '[""]'])
def test_a_malformed_shared_tables_setting_is_one_config_error(tmp_path, value):
    settings = _settings(tmp_path, f"[tool.dbkit.rls]\nshared_tables = {value}\n")
    with pytest.raises(ConfigError, match=r"shared_tables is not a list of table names \(table or schema\.table\)"):
        roles.model(settings)


@pytest.mark.unit
def test_autogenerate_protects_no_shared_table_and_grants_select_only(tmp_path):
    from sqlalchemy import Column, MetaData, Table, Text

    settings = _settings(tmp_path, '[tool.dbkit.rls]\nshared_tables = ["plans"]\n')
    meta = MetaData(schema="app")
    text = _protect(settings, Table("plans", meta, Column("code", Text, primary_key=True), Column("tenant_id", Text)))
    assert "enable_rls" not in text and "create_policy" not in text
    assert "# dbkit: plans is a shared table ([tool.dbkit.rls] shared_tables): no row-level security" in text
    assert "op.grant(['SELECT'], 'plans', schema=schema, roles=settings.role_enforce)" in text
    assert "'INSERT'" in _protect(settings, Table("other", meta, Column("tenant_id", Text)))
