"""Tenant isolation by every path, not only the main tables: TimescaleDB chunks (existing ones and
those created later by the application's own inserts), planner statistics, views, materialized
views, partitions and tables outside the application schema.

Each path is opened on purpose and proven open (the leak is real: the non-bypass role sees other
tenants' rows), then ``dbkit rls audit`` must fail on it, and where dbkit closes it
(``dbkit roles apply`` / every ``dbkit migrate``) the role is refused afterwards.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import psycopg
import pytest
from migrate_helpers import q, settings_for
from psycopg import errors

from dbkit import _lifecycle as lifecycle
from dbkit import roles
from dbkit.rls._audit import audit
from dbkit.rls._isolation import CHUNK_SCHEMA, harden
from dbkit.testing.plugin import connect_as

pytestmark = pytest.mark.integration

NON_BYPASS = ("enforce", "readonly")


def chunks(url) -> list[str]:
    return [r[0] for r in q(url, "SELECT format('%I.%I', schema_name, table_name) FROM _timescaledb_catalog.chunk "
                                 "WHERE NOT dropped ORDER BY id")]


def tenants(url) -> list[str]:
    return [str(r[0]) for r in q(url, "SELECT id FROM app.tenants ORDER BY slug")]


def findings(report) -> set[tuple[str, str, str | None]]:
    return {(f.code, f"{f.schema}.{f.table}" if f.table else "", f.role) for f in report.findings}


@contextmanager
def login(server, url, settings, role: str):
    conn = connect_as(server, url, settings, role)
    try:
        yield conn
    finally:
        conn.close()


def direct_access(conn, relation: str) -> dict[str, str]:
    """What each DML statement on ``relation`` does for this connection: 'refused' or 'N rows'."""
    out = {}
    for verb, sql in (("SELECT", f"SELECT count(*) FROM {relation}"),
                      ("INSERT", f"INSERT INTO {relation} SELECT * FROM {relation} LIMIT 1"),
                      ("UPDATE", f"UPDATE {relation} SET value = value"),
                      ("DELETE", f"DELETE FROM {relation}")):
        try:
            with conn.transaction(force_rollback=True):
                cur = conn.execute(sql)
                out[verb] = f"{cur.fetchone()[0] if verb == 'SELECT' else cur.rowcount} rows"
        except errors.InsufficientPrivilege:
            out[verb] = "refused"
    return out


def make_old_layout(url) -> None:
    """The database as dbkit before the fix left it: chunks in _timescaledb_internal, pg_stats open to all."""
    q(url, "UPDATE _timescaledb_catalog.hypertable SET associated_schema_name = '_timescaledb_internal'")
    for chunk in chunks(url):
        if not chunk.startswith("_timescaledb_internal."):
            q(url, f"ALTER TABLE {chunk} SET SCHEMA _timescaledb_internal")
    q(url, "SELECT set_chunk_time_interval('app.events', interval '1 day')")  # refreshes TimescaleDB's cache
    q(url, "GRANT SELECT ON pg_catalog.pg_stats, pg_catalog.pg_stats_ext, pg_catalog.pg_stats_ext_exprs TO PUBLIC")


# --------------------------------------------------------------------- a migrated, seeded database is closed

def test_fresh_database_has_no_chunk_or_statistics_path(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    assert audit(settings).clean, [f.line() for f in audit(settings).findings]
    existing = chunks(url)
    assert existing and all(c.startswith(f"{CHUNK_SCHEMA}.") for c in existing)
    q(url, "ANALYZE app.events")
    for role in NON_BYPASS:
        with login(dbkit_server, url, settings, role) as conn:
            for chunk in existing:
                assert direct_access(conn, chunk) == dict.fromkeys(("SELECT", "INSERT", "UPDATE", "DELETE"),
                                                                    "refused"), (role, chunk)
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("SELECT count(*) FROM pg_catalog.pg_stats")
            conn.rollback()


def test_chunks_created_later_by_the_application_are_closed_too(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a, tenant_b = tenants(url)[:2]
    before = set(chunks(url))
    from dbkit.rls import scoped

    with login(dbkit_server, url, settings, "enforce") as conn:
        for tenant, year in ((tenant_a, 2031), (tenant_b, 2032)):  # far from the seeded range: new chunks
            with scoped(conn, tenant_id=tenant):
                conn.execute("INSERT INTO app.events (tenant_id, time, kind, value) VALUES (%s, %s, 'x', 1)",
                             (tenant, f"{year}-01-01"))
        with scoped(conn, tenant_id=tenant_a):  # the application's own path keeps working
            assert conn.execute("SELECT count(*) FROM app.events WHERE kind = 'x'").fetchone()[0] == 1
            assert conn.execute("UPDATE app.events SET value = 2 WHERE kind = 'x'").rowcount == 1
            assert conn.execute("DELETE FROM app.events WHERE kind = 'x' AND time >= '2032-01-01'").rowcount == 0
    new = set(chunks(url)) - before
    assert len(new) == 2 and all(c.startswith(f"{CHUNK_SCHEMA}.") for c in new)
    for role in NON_BYPASS:
        with login(dbkit_server, url, settings, role) as conn:
            for chunk in new:
                assert set(direct_access(conn, chunk).values()) == {"refused"}, (role, chunk)
    assert audit(settings).clean


# --------------------------------------------------------------------- existing databases get the fix

@pytest.mark.parametrize("how", ["roles_apply", "migrate"])
def test_an_existing_database_is_fixed_by_upgrading(dbkit_server, dbkit_seeded_db, dbkit_cli, how):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    make_old_layout(url)
    q(url, "ANALYZE app.events")
    tenant_a = tenants(url)[0]
    old_chunk = chunks(url)[0]
    # the hole is real: no claim at all, yet every tenant's rows, and DML on them
    with login(dbkit_server, url, settings, "enforce") as conn:
        seen = conn.execute(f"SELECT count(*), count(DISTINCT tenant_id) FROM {old_chunk}").fetchone()
        assert seen[0] > 0 and seen[1] > 1
        assert direct_access(conn, old_chunk)["DELETE"] != "refused"
        stats = conn.execute("SELECT count(*) FROM pg_stats WHERE schemaname = '_timescaledb_internal'").fetchone()[0]
        assert stats > 0
    with login(dbkit_server, url, settings, "readonly") as conn:
        assert conn.execute(f"SELECT count(*) FROM {old_chunk}").fetchone()[0] > 0
    report = audit(settings)
    assert {"reachable_without_rls", "chunks_exposed"} <= {f.code for f in report.findings}
    assert {f.role for f in report.findings if f.code == "reachable_without_rls"} == {"app_rls", "app_readonly"}
    line = next(f for f in report.findings if f.code == "reachable_without_rls" and f.role == "app_rls").line()
    assert "SELECT/INSERT/UPDATE/DELETE" in line and "app.events" in line and "dbkit roles apply" in line

    if how == "roles_apply":
        result = roles.apply(settings)
        assert result.hardened and result.changed
        assert not roles.apply(settings).hardened  # idempotent: nothing left to do
    else:
        done = dbkit_cli("migrate", env={"DATABASE_URL": url.raw, "DBKIT_ENV": "test",
                                         "DBKIT_PROJECT_DIR": str(settings.project_dir)})
        assert done.returncode == 0, done.stderr

    assert audit(settings).clean, [f.line() for f in audit(settings).findings]
    moved = chunks(url)
    assert all(c.startswith(f"{CHUNK_SCHEMA}.") for c in moved)
    for role in NON_BYPASS:
        with login(dbkit_server, url, settings, role) as conn:
            assert set(direct_access(conn, moved[0]).values()) == {"refused"}
    from dbkit.rls import scoped

    with login(dbkit_server, url, settings, "enforce") as conn, scoped(conn, tenant_id=tenant_a):
        rows = conn.execute("SELECT count(*), count(DISTINCT tenant_id) FROM app.events").fetchone()
        assert rows[0] > 0 and rows[1] == 1


def test_harden_without_superuser_warns_and_changes_nothing(dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    make_old_layout(url)
    name = f"dbkit_iso_{uuid.uuid4().hex[:8]}"
    q(url, f"CREATE ROLE {name} LOGIN; GRANT app_owner TO {name}")
    try:
        with psycopg.connect(url.conninfo, autocommit=True) as conn:
            conn.execute(f"SET ROLE {name}")
            result = harden(conn, settings)
        assert result.warnings and all("a superuser must run" in w for w in result.warnings)
        assert any("pg_stats" in w for w in result.warnings)
        assert all(c.startswith("_timescaledb_internal.") for c in chunks(url))
        assert not audit(settings).clean
    finally:
        q(url, f"DROP ROLE {name}")


# --------------------------------------------------------------------- every other path fails the audit

def _leak_sql(tenant: str) -> dict[str, tuple[str, str, str, str]]:
    """name -> (SQL opening the path, relation to read as the role, role kind, expected finding code)."""
    return {
        "grant_on_chunk_schema": (f"GRANT USAGE ON SCHEMA {CHUNK_SCHEMA} TO app_readonly",
                                  "<chunk>", "readonly", "reachable_without_rls"),
        "statistics_reopened": ("GRANT SELECT ON pg_catalog.pg_stats TO PUBLIC",
                                "pg_stats WHERE schemaname = '_dbkit_chunks'", "enforce", "statistics_visible"),
        "superuser_view_without_invoker": (
            "CREATE VIEW app.all_users AS SELECT * FROM app.users; GRANT SELECT ON app.all_users TO app_rls",
            "app.all_users", "enforce", "view_bypasses_rls"),
        "owner_view_without_invoker": (
            "CREATE VIEW app.docs AS SELECT * FROM app.documents; ALTER VIEW app.docs OWNER TO app_owner;"
            " GRANT SELECT ON app.docs TO app_rls", None, "enforce", "view_bypasses_rls"),
        "materialized_view": (
            "CREATE MATERIALIZED VIEW app.per_tenant AS SELECT tenant_id, count(*) AS n FROM app.events GROUP BY 1;"
            " GRANT SELECT ON app.per_tenant TO app_rls", "app.per_tenant", "enforce", "reachable_without_rls"),
        "tenant_data_in_public": (
            "CREATE TABLE public.users_copy AS SELECT * FROM app.users; GRANT SELECT ON public.users_copy TO app_rls",
            "public.users_copy", "enforce", "reachable_without_rls"),
        "partition_without_rls": (
            "CREATE TABLE app.notes (tenant_id uuid NOT NULL, body text) PARTITION BY HASH (tenant_id);"
            " ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;"
            " CREATE POLICY notes_tenant ON app.notes USING (tenant_id = (SELECT NULLIF(current_setting("
            "'app.tenant_id', true), '')::uuid));"
            " CREATE TABLE app.notes_0 PARTITION OF app.notes FOR VALUES WITH (MODULUS 1, REMAINDER 0);"
            " INSERT INTO app.notes SELECT id, 'secret of ' || slug FROM app.tenants;"
            " GRANT SELECT ON app.notes, app.notes_0 TO app_rls",
            "app.notes_0", "enforce", "reachable_without_rls"),
        # SECURITY DEFINER functions run as their owner, whom the policies may not filter (PUBLIC may execute)
        "definer_function_as_superuser": (
            "CREATE FUNCTION app.all_documents() RETURNS SETOF app.documents LANGUAGE sql SECURITY DEFINER"
            " AS 'SELECT * FROM app.documents'", "app.all_documents()", "enforce", "definer_bypasses_rls"),
        "definer_function_as_owner_without_force": (
            "ALTER TABLE app.documents NO FORCE ROW LEVEL SECURITY;"
            " CREATE FUNCTION app.docs(n int) RETURNS SETOF app.documents LANGUAGE plpgsql SECURITY DEFINER"
            " AS $$BEGIN RETURN QUERY SELECT * FROM \"documents\" LIMIT n; END$$ SET search_path = app;"
            " ALTER FUNCTION app.docs(int) OWNER TO app_owner", "app.docs(1000)", "readonly", "definer_bypasses_rls"),
        "definer_dynamic_sql_as_superuser": (
            "CREATE FUNCTION public.rows_of(t regclass) RETURNS SETOF app.documents LANGUAGE plpgsql"
            " SECURITY DEFINER AS $$BEGIN RETURN QUERY EXECUTE 'SELECT * FROM ' || t; END$$",
            "public.rows_of('app.documents')", "enforce", "definer_bypasses_rls"),
    }


@pytest.mark.parametrize("case", list(_leak_sql("")))
def test_each_path_around_rls_is_real_and_fails_the_audit(dbkit_server, dbkit_seeded_db, case):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    assert audit(settings).clean
    sql, relation, role, code = _leak_sql(tenants(url)[0])[case]
    q(url, sql)
    if relation == "<chunk>":
        relation = chunks(url)[0]
    q(url, "ANALYZE")
    if relation is not None:  # prove the path really leaks: no claim set, several tenants' data
        with login(dbkit_server, url, settings, role) as conn:
            count = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
            assert count > 1, f"{case}: the path did not leak, the test proves nothing"
    report = audit(settings)
    hits = [f for f in report.findings if f.code == code]
    assert hits, (case, [f.line() for f in report.findings])
    assert all(f.severity == "error" and f.role and f.fix and "\n" not in f.line() for f in hits)
    assert report.errors >= 1 and not report.clean


def test_a_view_with_security_invoker_is_accepted(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    q(url, "CREATE VIEW app.my_users WITH (security_invoker = true) AS SELECT * FROM app.users;"
           " ALTER VIEW app.my_users OWNER TO app_owner; GRANT SELECT ON app.my_users TO app_rls, app_readonly")
    with login(dbkit_server, url, settings, "enforce") as conn:
        assert conn.execute("SELECT count(*) FROM app.my_users").fetchone()[0] == 0  # no claim: no rows
    assert audit(settings).clean, [f.line() for f in audit(settings).findings]


@pytest.mark.parametrize("sql", [
    # as the owner role, FORCE RLS applies: the caller's claim decides, as it would without the function
    "CREATE FUNCTION app.my_documents() RETURNS SETOF app.documents LANGUAGE sql SECURITY DEFINER"
    " AS 'SELECT * FROM app.documents'; ALTER FUNCTION app.my_documents() OWNER TO app_owner",
    # a superuser's function that reads no RLS table
    "CREATE FUNCTION app.server_time() RETURNS timestamptz LANGUAGE sql SECURITY DEFINER AS 'SELECT now()'",
    # one no login role may execute
    "CREATE FUNCTION app.all_documents() RETURNS SETOF app.documents LANGUAGE sql SECURITY DEFINER"
    " AS 'SELECT * FROM app.documents'; REVOKE EXECUTE ON FUNCTION app.all_documents() FROM PUBLIC",
    # a SQL-standard body, SECURITY INVOKER: the caller's policies apply
    "CREATE FUNCTION app.invoker_documents() RETURNS SETOF app.documents LANGUAGE sql"
    " BEGIN ATOMIC SELECT * FROM app.documents; END",
], ids=["owner_role_with_force", "reads_no_rls_table", "no_execute", "invoker"])
def test_functions_that_open_no_path_are_accepted(dbkit_server, dbkit_seeded_db, sql):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    q(url, sql)
    report = audit(settings)
    assert report.clean, [f.line() for f in report.findings]
    assert report.functions_checked == ("SECURITY DEFINER" in sql)


def test_the_definer_finding_names_the_function_and_its_fix_closes_the_path(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    q(url, "CREATE FUNCTION app.\"Docs Of\"(t uuid) RETURNS SETOF app.documents LANGUAGE sql SECURITY DEFINER"
           " BEGIN ATOMIC SELECT * FROM app.documents WHERE tenant_id = t; END")
    (hit,) = [f for f in audit(settings).findings if f.role == "app_rls"]
    assert (hit.code, hit.target) == ("definer_bypasses_rls", 'app."Docs Of"(t uuid)'), hit.line()
    assert "reads app.documents as " in hit.message and "a superuser or BYPASSRLS role" in hit.message
    assert hit.fix.startswith('ALTER FUNCTION app."Docs Of"(t uuid) SECURITY INVOKER') and hit.fix.endswith(
        'REVOKE EXECUTE ON FUNCTION app."Docs Of"(t uuid) FROM PUBLIC'), hit.fix
    other = tenants(url)[1]
    with login(dbkit_server, url, settings, "enforce") as conn:  # no claim, yet another tenant's rows
        assert conn.execute('SELECT count(*) FROM app."Docs Of"(%s)', (other,)).fetchone()[0] > 0
    q(url, hit.fix.split(", or ")[0])
    with login(dbkit_server, url, settings, "enforce") as conn:
        assert conn.execute('SELECT count(*) FROM app."Docs Of"(%s)', (other,)).fetchone()[0] == 0
    assert audit(settings).clean, [f.line() for f in audit(settings).findings]


@pytest.mark.parametrize("predefined", ["pg_read_all_data", "pg_write_all_data"])
def test_a_role_holding_all_data_reads_the_closed_chunks_and_fails_the_audit(dbkit_server, dbkit_seeded_db,
                                                                            predefined):
    """pg_read_all_data (PostgreSQL 14+) is SELECT on every table and USAGE on every schema, whatever the grants:
    the chunks in the schema no role may use are open again (granted to a reporting role "because RLS applies")."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    assert audit(settings).clean
    chunk = chunks(url)[0]
    assert chunk.startswith(CHUNK_SCHEMA + ".")
    q(url, f"GRANT {predefined} TO app_readonly")  # a role of the server: revoked below
    try:
        with login(dbkit_server, url, settings, "readonly") as conn:
            if predefined == "pg_read_all_data":  # the leak is real: several tenants' rows, no claim set
                assert conn.execute(f"SELECT count(DISTINCT tenant_id) FROM {chunk}").fetchone()[0] > 1
            else:  # and writes reach every tenant's rows
                assert direct_access(conn, chunk)["DELETE"] not in ("refused", "0 rows")
        report = audit(settings)
        (hit,) = [f for f in report.findings if f.code == "all_data_role"]
        assert hit.role == "app_readonly" and hit.target == "role app_readonly" and not report.clean
        assert f"member of {predefined}" in hit.message and "TimescaleDB chunks" in hit.message
        assert hit.fix.startswith(f"REVOKE {predefined} FROM app_readonly")
    finally:
        q(url, f"REVOKE {predefined} FROM app_readonly")
    assert audit(settings).clean


def test_check_reports_an_open_path(dbkit_seeded_db):
    from dbkit import _health as health

    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    make_old_layout(url)
    report = health.check(settings)
    rls = report.services["rls"]
    assert rls.status != "ok" and rls.errors, rls
    assert report.exit_code != 0


def test_the_plugin_escalation_checks_cover_chunks(dbkit_server, dbkit_seeded_db):
    """Projects that use dbkit's pytest plugin get the chunk path in their RLS tests."""
    from dbkit.testing._escalation import escalation_failures
    from dbkit.testing._matrix import discover

    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    make_old_layout(url)
    with psycopg.connect(url.conninfo, autocommit=True) as admin, \
            login(dbkit_server, url, settings, "enforce") as conn:
        tables = discover(admin, settings)
        failures = escalation_failures(conn, admin, tables, settings)
        assert any("chunk" in f and "other tenants" in f and "events" in f for f in failures), failures
        roles.apply(settings, admin)
        assert escalation_failures(conn, admin, discover(admin, settings), settings) == []


def test_the_plugin_escalation_checks_catch_an_enforce_role_with_createrole(dbkit_server, dbkit_seeded_db):
    """Up to PostgreSQL 15 CREATEROLE may grant the owner role: the plugin's checks try it (in a rolled-back
    transaction) as the application's role."""
    from dbkit.testing._escalation import escalation_failures
    from dbkit.testing._matrix import discover

    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    with psycopg.connect(url.conninfo, autocommit=True) as admin, \
            login(dbkit_server, url, settings, "enforce") as conn:
        if conn.info.server_version >= 160000:
            pytest.skip("PostgreSQL 16 and newer: CREATEROLE grants only the roles it holds ADMIN OPTION on")
        tables = discover(admin, settings)
        assert escalation_failures(conn, admin, tables, settings) == []
        admin.execute("ALTER ROLE app_rls CREATEROLE")  # a role of the server: taken back below
        try:
            failures = escalation_failures(conn, admin, tables, settings)
        finally:
            admin.execute("ALTER ROLE app_rls NOCREATEROLE")
        assert any("could grant itself the owner role" in f for f in failures), failures
        assert escalation_failures(conn, admin, tables, settings) == []


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_restored_database_keeps_the_paths_closed(dbkit_server, dbkit_seeded_db, tmp_path, jobs):
    """The chunk schema, the hypertable's associated schema and the pg_stats revoke are in the dump."""
    from dbkit.backup import _pipeline as pipeline

    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=f"file://{tmp_path}")
    pipeline.backup(settings)
    result = lifecycle.restore(settings, "latest", into=f"{dbkit_seeded_db.dbname}_iso{jobs}", jobs=jobs)
    restored = dbkit_seeded_db.with_dbname(result.database)
    try:
        restored_settings = settings_for(restored)
        assert audit(restored_settings).clean, [f.line() for f in audit(restored_settings).findings]
        assert all(c.startswith(f"{CHUNK_SCHEMA}.") for c in chunks(restored))
        with login(dbkit_server, restored, restored_settings, "enforce") as conn:
            assert set(direct_access(conn, chunks(restored)[0]).values()) == {"refused"}
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("SELECT 1 FROM pg_catalog.pg_stats LIMIT 1")
    finally:
        q(dbkit_seeded_db, f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')
