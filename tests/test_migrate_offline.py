"""`dbkit migrate sql`: the offline script applies by itself to a brand-new database with psql.

Roles are cluster-wide, so the script is rendered for role names of its own (DBKIT_ROLE_*)
that do not exist on the test server beforehand, as on a fresh cluster.
"""

import subprocess
import uuid

import pytest
from migrate_helpers import REPO, q

from dbkit._dev import find_bindir

pytestmark = pytest.mark.integration

TABLES = {"tenants", "users", "documents", "document_chunks", "events", "audit_log"}


@pytest.fixture
def fresh(pg_url):
    """(url of a brand-new empty database, {kind: role name} of roles that do not exist yet)."""
    tag = uuid.uuid4().hex[:8]
    roles = {kind: f"offt_{tag}_{kind}" for kind in ("owner", "enforce", "bypass", "readonly")}
    dbname = f"offline_{tag}"
    q(pg_url, f'CREATE DATABASE "{dbname}" TEMPLATE template0')
    try:
        yield pg_url.with_dbname(dbname), roles
    finally:
        q(pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        for name in roles.values():
            q(pg_url, f"DROP ROLE IF EXISTS {name}")


def test_offline_script_applies_to_an_empty_database_with_psql(fresh, dbkit_cli, tmp_path):
    url, roles = fresh
    env = {"DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO),
           **{f"DBKIT_ROLE_{kind.upper()}": name for kind, name in roles.items()}}
    rendered = dbkit_cli("migrate", "sql", env=env)  # no DATABASE_URL: offline needs no database
    assert rendered.returncode == 0, rendered.stderr
    script = tmp_path / "upgrade.sql"
    script.write_text(rendered.stdout)
    assert q(url, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(roles.values()),)) == []
    assert q(url, "SELECT extname FROM pg_extension ORDER BY 1") == [("plpgsql",)]

    psql = subprocess.run([str(find_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script),
                           url.conninfo], capture_output=True, text=True, timeout=300)
    assert psql.returncode == 0, psql.stderr

    assert q(url, "SELECT version_num FROM dbkit.alembic_version") == [("0006",)]
    tables = dict(q(url, "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'app'"))
    assert set(tables) == TABLES and set(tables.values()) == {roles["owner"]}
    assert {r[0] for r in q(url, "SELECT extname FROM pg_extension")} >= {"vector", "timescaledb", "pgcrypto"}
    policies = q(url, "SELECT tablename, roles FROM pg_policies WHERE schemaname = 'app'")
    assert {p[0] for p in policies} == TABLES
    assert any(roles["enforce"] in p[1] for p in policies)
    assert q(url, "SELECT relname FROM pg_class WHERE relnamespace = 'app'::regnamespace AND relkind = 'r' "
                  "AND NOT (relrowsecurity AND relforcerowsecurity)") == []
    hnsw = q(url, "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c "
                  "ON c.oid = i.indexrelid WHERE c.relname = 'document_chunks_embedding_hnsw_idx'")
    assert hnsw and hnsw[0][0] is True and "USING hnsw" in hnsw[0][1]
    assert q(url, "SELECT count(*) FROM pg_index WHERE NOT indisvalid")[0][0] == 0
    assert q(url, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("events",)]
    created = dict(q(url, "SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s)",
                     (list(roles.values()),)))
    assert created == {roles["owner"]: False, roles["enforce"]: False, roles["bypass"]: True,
                       roles["readonly"]: False}
    # The script carries no password: LOGIN roles get theirs from `dbkit roles apply` (DBKIT_PASSWORD_*).
    assert q(url, "SELECT count(*) FROM pg_authid WHERE rolname = ANY(%s) AND rolpassword IS NOT NULL",
             (list(roles.values()),))[0][0] == 0
    # what the online checks read agrees: at head, nothing edited
    assert q(url, "SELECT count(*) FROM dbkit.migration_checksums")[0][0] == 6
