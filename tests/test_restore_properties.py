"""Restore keeps the database-level properties that are in its own archive: owner, ACL (REVOKE CONNECT
FROM PUBLIC), comment, ALTER DATABASE ... SET and ALTER ROLE ... IN DATABASE ... SET (real server)."""

from __future__ import annotations

import pytest
from migrate_helpers import q, settings_for

from dbkit import _lifecycle as lifecycle
from dbkit.backup import _pipeline as pipeline

pytestmark = pytest.mark.integration


def properties(url, dbname: str) -> dict:
    admin = url.with_dbname("postgres")
    [(owner, acl, comment)] = q(admin, "SELECT pg_get_userbyid(d.datdba), d.datacl::text[], "
                                       "shobj_description(d.oid, 'pg_database') FROM pg_database d "
                                       "WHERE datname = %s", (dbname,))
    settings = q(admin, "SELECT coalesce(r.rolname, '*'), s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
                        "ON d.oid = s.setdatabase LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s "
                        "ORDER BY 1", (dbname,))
    public_connect = q(admin, "SELECT has_database_privilege('app_readonly', %s, 'CONNECT')", (dbname,))[0][0]
    acl = sorted(a.replace(dbname, "<db>") for a in acl or [])
    return {"owner": owner, "acl": acl, "comment": comment, "settings": settings, "readonly_connect": public_connect}


def give_properties(url) -> None:
    db = url.dbname
    q(url, f'ALTER DATABASE "{db}" OWNER TO app_owner')
    q(url, f'REVOKE CONNECT, TEMPORARY ON DATABASE "{db}" FROM PUBLIC')
    q(url, f'GRANT CONNECT ON DATABASE "{db}" TO app_rls')
    q(url, f"COMMENT ON DATABASE \"{db}\" IS 'tenant data; ''prod''\nsecond line'")
    q(url, f'ALTER DATABASE "{db}" SET search_path TO app, public')
    q(url, f"ALTER DATABASE \"{db}\" SET statement_timeout TO '30s'")
    q(url, f"ALTER ROLE app_rls IN DATABASE \"{db}\" SET work_mem TO '8MB'")


def test_swap_keeps_owner_acl_comment_and_settings(dbkit_seeded_db, tmp_path):
    give_properties(dbkit_seeded_db)
    before = properties(dbkit_seeded_db, dbkit_seeded_db.dbname)
    assert before["owner"] == "app_owner" and before["readonly_connect"] is False and len(before["settings"]) == 2
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    pipeline.backup(settings)
    result = lifecycle.restore(settings, "latest", swap=True, yes=True)
    try:
        assert result.swapped
        assert properties(dbkit_seeded_db, dbkit_seeded_db.dbname) == before  # the live (restored) database
        # the settings really apply to new sessions of the restored database
        assert q(dbkit_seeded_db, "SHOW statement_timeout") == [("30s",)]
        assert q(dbkit_seeded_db, "SHOW search_path") == [("app, public",)]
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.previous}" WITH (FORCE)')


@pytest.mark.parametrize("jobs", [1, 2])
def test_restore_into_a_new_name_carries_the_properties(dbkit_seeded_db, tmp_path, jobs):
    give_properties(dbkit_seeded_db)
    before = properties(dbkit_seeded_db, dbkit_seeded_db.dbname)
    settings = settings_for(dbkit_seeded_db, DBKIT_BACKUP_URI=str(tmp_path))
    pipeline.backup(settings, compression="gzip")
    target = f'{dbkit_seeded_db.dbname}_Copy "{jobs}"'  # a name that needs quoting
    result = lifecycle.restore(settings, "latest", into=target, jobs=jobs)
    try:
        assert result.database == target
        assert properties(dbkit_seeded_db, target) == before
    finally:
        q(dbkit_seeded_db.with_dbname("postgres"), "SELECT 1")
        import psycopg
        from psycopg import sql

        with psycopg.connect(dbkit_seeded_db.with_dbname("postgres").conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(target)))


def test_property_statements_parse_a_create_script():
    script = (
        "--\n-- Name: x; Type: DATABASE\n--\n\nCREATE DATABASE x WITH TEMPLATE = template0;\n\n"
        "ALTER DATABASE x OWNER TO o;\n\n\\connect x\n\nSET statement_timeout = 0;\n"
        "SELECT pg_catalog.set_config('search_path', '', false);\n"
        "COMMENT ON DATABASE x IS 'a;\nb ''c'';\nd';\n"
        "ALTER DATABASE x SET search_path TO 'app', 'public';\n"
        "ALTER ROLE r IN DATABASE x SET work_mem TO '8MB';\n"
        "REVOKE CONNECT,TEMPORARY ON DATABASE x FROM PUBLIC;\nGRANT CONNECT ON DATABASE x TO r;\n"
    )
    assert pipeline._property_statements(script) == [
        "ALTER DATABASE x OWNER TO o;", "COMMENT ON DATABASE x IS 'a;\nb ''c'';\nd';",
        "ALTER DATABASE x SET search_path TO 'app', 'public';", "ALTER ROLE r IN DATABASE x SET work_mem TO '8MB';",
        "REVOKE CONNECT,TEMPORARY ON DATABASE x FROM PUBLIC;", "GRANT CONNECT ON DATABASE x TO r;"]
