"""``definer_search_path``: a SECURITY DEFINER function whose lookups the caller redirects.

The helper that keeps a policy from recursing (SECURITY DEFINER, reviewed as filtering by the claims itself and
accepted in ``[tool.dbkit.rls.definer_functions]``) names ``documents`` without a schema and sets
``search_path = app``, which looks pinned: PostgreSQL still searches ``pg_temp`` first for tables and views. The
application's role, which may create temporary objects like every role, puts a ``security_invoker`` view there:
it is read as the function's owner, and tenant A sees every tenant's documents. With a schema it may create in,
the role runs a function of its own as the owner instead. Each path is proven open, then the audit fails on it,
then the fix closes both.
"""

from __future__ import annotations

import dataclasses

import pytest
from migrate_helpers import q, settings_for
from test_tenant_isolation import login, tenants

from dbkit.rls import scoped
from dbkit.rls._audit import audit
from dbkit.rls._search_path import unqualified_relations

pytestmark = pytest.mark.integration

HELPER = "app.my_document_ids()"


def _reviewed(settings):
    """The helper reads as a superuser: reviewed as filtering by the claim itself, as a project would."""
    return dataclasses.replace(settings, rls={**settings.rls, "definer_functions": {HELPER: "filters by the claim"}})


def _hits(settings) -> dict:
    report = audit(settings)
    assert {f.code for f in report.findings} <= {"definer_search_path"}, [f.line() for f in report.findings]
    return {f.role: f for f in report.findings}


def test_a_temporary_view_redirects_a_definer_helper_and_fails_the_audit(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, _reviewed(settings_for(dbkit_seeded_db))
    tenant_a = tenants(url)[0]
    mine = q(url, "SELECT count(*) FROM app.documents WHERE tenant_id = %s", (tenant_a,))[0][0]
    total = q(url, "SELECT count(*) FROM app.documents")[0][0]
    q(url, "SET search_path = app; CREATE FUNCTION app.my_document_ids() RETURNS SETOF uuid LANGUAGE sql STABLE "
           "SECURITY DEFINER SET search_path = app AS $$SELECT d.id FROM documents d WHERE d.tenant_id = "
           "NULLIF(current_setting('app.tenant_id', true), '')::uuid$$")
    q(url, "SET ROLE app_owner; CREATE POLICY documents_helper ON app.documents FOR SELECT "
           "USING (id IN (SELECT app.my_document_ids()))")

    def seen(redirect: bool) -> int:
        with login(dbkit_server, url, settings, "enforce") as conn:
            conn.autocommit = True
            with scoped(conn, tenant_id=tenant_a):
                if redirect:  # every document, each with the caller's own tenant id
                    conn.execute("CREATE TEMP VIEW documents WITH (security_invoker) AS "
                                 "SELECT id, current_setting('app.tenant_id')::uuid AS tenant_id FROM app.documents")
                return conn.execute("SELECT count(*) FROM app.documents").fetchone()[0]

    assert seen(False) == mine < total
    assert seen(True) == total  # tenant A reads every tenant's documents
    hits = _hits(settings)
    assert {"app_rls", "app_readonly"} <= set(hits)
    hit = hits["app_rls"]
    assert (hit.severity, hit.target) == ("error", HELPER)
    assert hit.message.startswith(f"{HELPER} is SECURITY DEFINER and sets search_path = app: it names documents "
                                  "without a schema, and app_rls may create a temporary view of that name")
    assert hit.fix.startswith(f"ALTER FUNCTION {HELPER} SET search_path = app, pg_temp")
    # a platform's function the project cannot change is accepted by name, with the reason (this one is not safe)
    accepting = dataclasses.replace(settings, rls={**settings.rls, "search_path_functions": {
        HELPER: "owned by the platform, which pins it in its next release"}})
    report = audit(accepting)
    assert report.clean and report.reviewed["search_path_functions"] == (HELPER,)
    assert report.summary()["accepted"] == [HELPER, HELPER]  # as a definer, then for its search_path
    assert report.summary_line().endswith(f"([tool.dbkit.rls.search_path_functions]): {HELPER}")
    q(url, hit.fix.split(" (")[0])
    assert audit(settings).clean
    assert seen(True) == mine  # the view is no longer found first


def test_a_schema_the_role_may_create_in_runs_its_function_as_the_owner(dbkit_server, dbkit_seeded_db):
    """Every name qualified but current_setting and the operators: a role that may create functions puts its
    own current_setting first on its search_path, and the helper runs it as the superuser."""
    url, settings = dbkit_seeded_db, _reviewed(settings_for(dbkit_seeded_db))
    tenant_a = tenants(url)[0]
    total = q(url, "SELECT count(*) FROM app.documents")[0][0]
    q(url, "CREATE FUNCTION app.my_document_ids() RETURNS SETOF uuid LANGUAGE sql STABLE SECURITY DEFINER "
           "AS $$SELECT d.id FROM app.documents d WHERE d.tenant_id = "
           "NULLIF(current_setting('app.tenant_id', true), '')::uuid$$")
    assert audit(settings).clean  # nothing to redirect while the role may create nowhere
    q(url, "CREATE SCHEMA scratch; GRANT USAGE, CREATE ON SCHEMA scratch TO app_rls")
    (hit,) = _hits(settings).values()
    assert hit.role == "app_rls" and hit.message.startswith(
        f"{HELPER} is SECURITY DEFINER and sets no search_path: app_rls may create objects in schema scratch: a "
        "function or operator of its own that this function calls without a schema")
    with login(dbkit_server, url, settings, "enforce") as conn:
        conn.autocommit = True
        conn.execute("CREATE TABLE scratch.copies (doc jsonb); GRANT INSERT ON scratch.copies TO PUBLIC")
        conn.execute("CREATE FUNCTION scratch.current_setting(text, boolean) RETURNS text LANGUAGE plpgsql AS $$"
                     "BEGIN INSERT INTO scratch.copies SELECT to_jsonb(d) FROM app.documents d; "
                     "RETURN pg_catalog.current_setting($1, $2); END$$")
        with scoped(conn, tenant_id=tenant_a):
            conn.execute("SET LOCAL search_path = scratch, pg_catalog, app")
            conn.execute("SELECT count(*) FROM app.my_document_ids()")  # runs scratch.current_setting as the owner
            copied = conn.execute("SELECT count(DISTINCT doc->>'id'), count(DISTINCT doc->>'tenant_id') "
                                  "FROM scratch.copies").fetchone()
    assert copied[0] == total and copied[1] > 1  # every tenant's documents, in the role's own table
    q(url, hit.fix.split(" (")[0])
    assert audit(settings).clean


def test_what_cannot_be_redirected_is_not_reported(dbkit_seeded_db):
    """Bound when created (BEGIN ATOMIC), pg_temp last, an owner RLS filters, a common table expression."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    q(url, "SET search_path = app; CREATE FUNCTION app.atomic_ids() RETURNS SETOF uuid LANGUAGE sql STABLE "
           "SECURITY DEFINER SET search_path = app BEGIN ATOMIC SELECT d.id FROM documents d; END")
    q(url, "SET search_path = app; CREATE FUNCTION app.pinned_ids() RETURNS SETOF uuid LANGUAGE sql STABLE "
           "SECURITY DEFINER SET search_path = app, pg_temp AS 'SELECT d.id FROM documents d'")
    q(url, "CREATE FUNCTION app.cte_count() RETURNS bigint LANGUAGE sql STABLE SECURITY DEFINER "
           "AS 'WITH documents AS (SELECT 1) SELECT count(*) FROM documents'")
    q(url, "SET ROLE app_owner; SET search_path = app; CREATE FUNCTION app.owner_ids() RETURNS SETOF uuid "  # FORCEd
           "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = app AS 'SELECT d.id FROM documents d'")
    report = audit(settings)
    assert not [f for f in report.findings if f.code == "definer_search_path"], [f.line() for f in report.findings]


@pytest.mark.unit
def test_unqualified_relations_are_read_with_postgresqls_parser():
    assert unqualified_relations("sql", "SELECT d.id FROM docs d JOIN app.members m ON true; "
                                        "WITH x AS (SELECT 1) SELECT * FROM x", None) == {"docs"}
    plpgsql = ("CREATE FUNCTION f() RETURNS SETOF int LANGUAGE plpgsql AS $$ DECLARE x int; BEGIN "
               "SELECT count(*) INTO x FROM app.a; x := (SELECT count(*) FROM counted); "
               "RETURN QUERY SELECT tenant_id FROM members JOIN app.t ON true; "
               "IF EXISTS (SELECT 1 FROM checked) THEN x := 1; END IF; FOR x IN SELECT 1 FROM looped LOOP END LOOP; "
               "INSERT INTO written VALUES (1); EXECUTE 'SELECT 1 FROM dynamic'; END $$")
    assert unqualified_relations("plpgsql", "", plpgsql) == {"counted", "members", "checked", "looped", "written"}
    assert unqualified_relations("sql", "SELECT FROM WHERE (", None) is None


@pytest.mark.parametrize("body", ["LANGUAGE sql STABLE SECURITY DEFINER AS 'SELECT d.id FROM documents d'",
                                  "LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = app AS "
                                  "$$BEGIN RETURN QUERY SELECT d.id FROM documents d; END$$"])
def test_without_temp_the_redirect_is_closed(dbkit_seeded_db, body):
    """TEMP on the database is what a temporary view needs: without it (and no schema to create in) the
    redirect is closed."""
    url, settings = dbkit_seeded_db, _reviewed(settings_for(dbkit_seeded_db))
    q(url, f"SET search_path = app; CREATE FUNCTION app.my_document_ids() RETURNS SETOF uuid {body}")
    assert {"app_rls", "app_readonly"} <= set(_hits(settings))
    q(url, f'REVOKE TEMP ON DATABASE "{url.dbname}" FROM PUBLIC')
    assert audit(settings).clean
