"""dbkit.rls._audit against real catalogs: the reference schema is clean, each finding fires.

Roles are cluster-wide and shared by every test database: these tests never alter
app_rls; role-level cases use throw-away roles with unique names, dropped in finally.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from migrate_helpers import q, settings_for

from dbkit.rls._audit import CODES, audit

pytestmark = pytest.mark.integration

REFERENCE_TABLES = 6


def codes(report) -> set[tuple[str, str | None]]:
    """``{(code, table or role), …}``."""
    return {(f.code, f.table if f.table is not None else f.role if f.role is not None else f.schema)
            for f in report.findings}


@contextmanager
def temp_role(url, attributes: str = "NOLOGIN") -> Iterator[str]:
    """A unique cluster role, dropped afterwards (with what it owns in this test's database)."""
    name = f"dbkit_audit_{uuid.uuid4().hex[:10]}"
    q(url, f"CREATE ROLE {name} {attributes}")
    try:
        yield name
    finally:
        q(url, f"DROP OWNED BY {name}")
        q(url, f"DROP ROLE {name}")


def test_reference_schema_audits_clean(migrated_url):
    report = audit(settings_for(migrated_url))
    assert report.findings == (), [f.line() for f in report.findings]
    assert report.clean
    assert report.tables_checked == REFERENCE_TABLES
    summary = report.summary()
    assert {"app_rls", "app_readonly"} <= set(summary.pop("login_roles"))  # app_full is BYPASSRLS: not checked
    assert "app_full" not in report.login_roles and "postgres" not in report.login_roles
    assert summary.pop("relations_checked") >= REFERENCE_TABLES
    assert summary.pop("functions_checked") == 0  # the reference schema has no SECURITY DEFINER function
    assert summary == {"schemas": ["app"], "enforce_role": "app_rls", "model": "tenant", "rls_used": True,
                       "tables_checked": REFERENCE_TABLES, "accepted": [],
                       "errors": 0, "warnings": 0, "clean": True}


def test_uses_the_given_connection_and_leaves_it_open(migrated_url):
    with psycopg.connect(migrated_url.conninfo, autocommit=True) as conn:
        report = audit(settings_for(migrated_url), conn)
        assert report.clean
        assert not conn.closed


# name -> (SQL run in the migrated database, the exact findings expected as (code, table))
BAD_TABLES = {
    "no_rls": ("CREATE TABLE app.no_rls (id int)", {("table_without_rls", "no_rls")}),
    "partitioned_no_rls": ("CREATE TABLE app.parted (id int) PARTITION BY RANGE (id)",
                           {("table_without_rls", "parted")}),
    "enforce_can_access_unprotected": (
        "CREATE TABLE app.no_rls (id int); GRANT SELECT ON app.no_rls TO app_rls",
        {("table_without_rls", "no_rls"), ("reachable_without_rls", "no_rls")}),
    "enforce_can_access_via_public": (
        "CREATE TABLE app.no_rls (id int); GRANT DELETE ON app.no_rls TO PUBLIC",
        {("table_without_rls", "no_rls"), ("reachable_without_rls", "no_rls")}),
    "rls_not_forced": (
        "CREATE TABLE app.t (id int); ALTER TABLE app.t ENABLE ROW LEVEL SECURITY;"
        " CREATE POLICY p ON app.t USING (id = 1)",
        {("rls_not_forced", "t")}),
    "rls_without_policy": (
        "CREATE TABLE app.t (id int); ALTER TABLE app.t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY",
        {("rls_without_policy", "t")}),
    "policy_without_rls": (
        "CREATE TABLE app.t (id int); CREATE POLICY p ON app.t USING (id = 1)",
        {("policy_without_rls", "t")}),
    "permissive_true_using": (
        "CREATE TABLE app.t (id int); ALTER TABLE app.t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
        " CREATE POLICY p ON app.t USING (true)",
        {("permissive_true_policy", "t")}),
    "permissive_true_with_check": (
        "CREATE TABLE app.t (id int); ALTER TABLE app.t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
        " CREATE POLICY p ON app.t FOR INSERT WITH CHECK (true)",
        {("permissive_true_policy", "t")}),
    "true_on_a_reference_table": ("CREATE POLICY open_all ON app.documents USING (true)",
                                  {("permissive_true_policy", "documents")}),
    "restrictive_true_is_fine": (
        "CREATE TABLE app.t (id int); ALTER TABLE app.t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
        " CREATE POLICY p ON app.t USING (id = 1); CREATE POLICY r ON app.t AS RESTRICTIVE USING (true)",
        set()),
    "other_schemas_are_not_audited": ("CREATE SCHEMA other; CREATE TABLE other.no_rls (id int)", set()),
}


@pytest.mark.parametrize("case", BAD_TABLES)
def test_each_table_finding_fires_on_a_purpose_built_table(migrated_url, case):
    ddl, expected = BAD_TABLES[case]
    q(migrated_url, ddl)
    report = audit(settings_for(migrated_url))
    assert codes(report) == expected, [f.line() for f in report.findings]
    assert report.clean is (not expected)
    for f in report.findings:
        assert f.schema == "app"
        # table-level findings name no role; a path a login role can take names that role
        assert (f.role is None) is (f.code != "reachable_without_rls")
        assert "\n" not in f.message + f.fix
        assert f.severity == CODES[f.code]
    if "via_public" in case:  # a grant to PUBLIC reaches every non-bypass login role; the fix names PUBLIC
        reached = {f.role for f in report.findings if f.code == "reachable_without_rls"}
        assert {"app_rls", "app_readonly"} <= reached
        assert all("FROM PUBLIC" in f.fix for f in report.findings if f.code == "reachable_without_rls")


def test_everything_at_once_with_summary_and_json(migrated_url):
    q(migrated_url, "; ".join(ddl for ddl, _ in BAD_TABLES.values() if "app.no_rls" not in ddl
                              and "CREATE SCHEMA" not in ddl and "app.t " not in ddl))
    q(migrated_url, "CREATE TABLE app.no_rls (id int); GRANT SELECT ON app.no_rls TO app_rls;"
                    " CREATE TABLE app.unforced (id int); ALTER TABLE app.unforced ENABLE ROW LEVEL SECURITY;"
                    " CREATE POLICY p ON app.unforced USING (id = 1);"
                    " CREATE TABLE app.closed (id int); ALTER TABLE app.closed ENABLE ROW LEVEL SECURITY,"
                    " FORCE ROW LEVEL SECURITY")
    report = audit(settings_for(migrated_url))
    assert codes(report) == {
        ("table_without_rls", "parted"), ("permissive_true_policy", "documents"),
        ("table_without_rls", "no_rls"), ("reachable_without_rls", "no_rls"),
        ("rls_not_forced", "unforced"), ("rls_without_policy", "closed"),
    }
    assert report.tables_checked == REFERENCE_TABLES + 4
    assert (report.errors, report.warnings) == (4, 2)
    assert not report.clean
    data = json.loads(json.dumps(report.as_dict()))
    assert data["summary"]["errors"] == 4 and data["summary"]["clean"] is False
    assert set(data["findings"][0]) == {"code", "severity", "schema", "table", "role", "message", "fix"}
    line = next(f for f in report.findings if f.code == "reachable_without_rls").line()
    assert line.startswith("error reachable_without_rls app.no_rls: app_rls can SELECT ") and "REVOKE ALL" in line


def test_schemas_argument_audits_the_listed_schemas(migrated_url):
    q(migrated_url, "CREATE SCHEMA other; CREATE TABLE other.no_rls (id int)")
    report = audit(settings_for(migrated_url), schemas=["app", "other", "nosuch"])
    assert codes(report) == {("table_without_rls", "no_rls"), ("schema_missing", "nosuch")}
    assert report.tables_checked == REFERENCE_TABLES + 1
    assert report.schemas == ("app", "other", "nosuch")
    # TimescaleDB's internal schemas hold the hypertable's chunks; only listed schemas count
    assert all(f.schema in ("other", "nosuch") for f in report.findings)


def test_enforce_role_missing(migrated_url):
    missing = f"dbkit_audit_missing_{uuid.uuid4().hex[:8]}"
    q(migrated_url, "CREATE TABLE app.no_rls (id int)")
    report = audit(settings_for(migrated_url, DBKIT_ROLE_ENFORCE=missing))
    assert codes(report) == {("enforce_role_missing", missing), ("table_without_rls", "no_rls")}
    role_finding = report.findings[0]  # role-level findings come first
    assert role_finding.code == "enforce_role_missing" and role_finding.table is None
    assert role_finding.as_dict()["role"] == missing


@pytest.mark.parametrize("attribute, word", [("SUPERUSER", "superuser"), ("BYPASSRLS", "BYPASSRLS")])
def test_enforce_role_superuser_or_bypassrls(migrated_url, attribute, word):
    with temp_role(migrated_url, attribute) as role:
        report = audit(settings_for(migrated_url, DBKIT_ROLE_ENFORCE=role))
        assert codes(report) == {("enforce_role_privileged", role)}
        (finding,) = report.findings
        assert word in finding.message and finding.table is None and finding.schema is None
        assert finding.severity == "error" and not report.clean


def test_enforce_role_with_createrole_can_become_the_owner(migrated_url, dbkit_server):
    """Up to PostgreSQL 15 CREATEROLE grants any non-superuser role: the enforce role makes itself the owner role
    and un-forces RLS (the escalation is proven, then rolled back)."""
    with temp_role(migrated_url, "LOGIN CREATEROLE") as role:
        q(migrated_url, f"GRANT USAGE ON SCHEMA app TO {role}")
        with psycopg.connect(dbkit_server.url(migrated_url.dbname, user=role).conninfo) as conn:
            pre16 = conn.info.server_version < 160000
            if pre16:
                conn.execute(f"GRANT app_owner TO {role}")
                conn.execute("SET ROLE app_owner")
                conn.execute("ALTER TABLE app.documents NO FORCE ROW LEVEL SECURITY")  # every tenant's rows
            conn.rollback()
        report = audit(settings_for(migrated_url, DBKIT_ROLE_ENFORCE=role))
        if not pre16:
            assert report.clean  # CREATEROLE grants only roles it holds ADMIN OPTION on
            return
        assert codes(report) == {("enforce_role_privileged", role)}
        (finding,) = report.findings
        assert "has CREATEROLE" in finding.message and finding.fix == f"ALTER ROLE {role} NOCREATEROLE"


def test_a_createrole_login_role_can_become_a_bypass_role_and_is_not_swept(migrated_url, dbkit_server):
    """Up to PostgreSQL 15 a CREATEROLE role grants itself any non-superuser role (the owner, a BYPASSRLS one):
    like a member of a bypass role it is not a non-bypass login role (a deployer's or a platform's admin role),
    so what it reaches is not reported; an enforce role with CREATEROLE still is (above). From PostgreSQL 16
    CREATEROLE grants only roles it holds ADMIN OPTION on, and the role is swept like any other."""
    q(migrated_url, "CREATE SCHEMA other; CREATE TABLE other.t (id int)")
    with temp_role(migrated_url, "LOGIN CREATEROLE") as role:
        q(migrated_url, f"GRANT USAGE ON SCHEMA other TO {role}; GRANT SELECT ON other.t TO {role}")
        with psycopg.connect(dbkit_server.url(migrated_url.dbname, user=role).conninfo) as conn:
            pre16 = conn.info.server_version < 160000
            if pre16:  # it can: the bypass role, granted by itself (rolled back)
                conn.execute(f"GRANT app_full TO {role}")
                conn.execute("SET ROLE app_full")
                assert conn.execute("SELECT rolbypassrls FROM pg_roles WHERE rolname = current_user").fetchone()[0]
            conn.rollback()
        report = audit(settings_for(migrated_url))
        if pre16:
            assert report.clean and role not in report.login_roles
        else:
            assert codes(report) == {("reachable_without_rls", role)} and role in report.login_roles


def test_enforce_role_owning_a_table(migrated_url):
    with temp_role(migrated_url) as role:
        q(migrated_url, "CREATE TABLE app.owned (id int);"
                        " ALTER TABLE app.owned ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
                        f" CREATE POLICY p ON app.owned USING (id = 1); ALTER TABLE app.owned OWNER TO {role}")
        report = audit(settings_for(migrated_url, DBKIT_ROLE_ENFORCE=role))
        assert codes(report) == {("enforce_role_privileged", role)}
        assert "app.owned" in report.findings[0].message


def test_enforce_role_member_of_the_owner_role(migrated_url):
    with temp_role(migrated_url) as role:
        q(migrated_url, f"GRANT app_owner TO {role}")  # changes only the temp role's memberships
        report = audit(settings_for(migrated_url, DBKIT_ROLE_ENFORCE=role))
        assert codes(report) == {("enforce_role_privileged", role)}
        assert f"owns (directly or through membership) {REFERENCE_TABLES} tables" in report.findings[0].message


def test_good_temp_role_with_grants_is_clean(migrated_url):
    """A plain role with DML on RLS-protected tables is what the enforce role should be."""
    with temp_role(migrated_url, "LOGIN") as role:
        q(migrated_url, f"GRANT USAGE ON SCHEMA app TO {role};"
                        f" GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA app TO {role}")
        report = audit(settings_for(migrated_url, DBKIT_ROLE_ENFORCE=role))
        assert report.clean, [f.line() for f in report.findings]
