"""Tables in `public` (issue 12, item 4): PostgreSQL 15 revoked CREATE on public from PUBLIC, and
migrations run as the owner role (SET ROLE), so the preflight grants it what it needs there."""

from __future__ import annotations

import subprocess
import uuid

import psycopg
import pytest
from migrate_helpers import make_project, q, revision, settings_for

from dbkit import roles
from dbkit._dev import find_bindir
from dbkit.errors import MissingDependency
from dbkit.migrate import _runner as runner

pytestmark = pytest.mark.integration

PUBLIC_TABLE = revision("0001", None, """
    op.execute("CREATE TABLE public.notes (id bigint PRIMARY KEY, body text NOT NULL)")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON public.notes TO app_rls")
""", "op.execute('DROP TABLE public.notes')", doc="notes in public")

GRANTS = "GRANT USAGE, CREATE ON SCHEMA public TO app_owner"


@pytest.fixture
def public_project(tmp_path):
    return make_project(tmp_path, {"0001_notes.py": PUBLIC_TABLE}, pyproject_extra='schema = "public"\n')


def _public_create(url, role="app_owner"):
    return q(url, "SELECT has_schema_privilege(%s, 'public', 'CREATE')", (role,))[0][0]


def test_migrate_creates_tables_in_public_as_the_owner_role(public_project, pg_url):
    assert q(pg_url, "SELECT current_setting('server_version_num')::int")[0][0] >= 150000
    q(pg_url, "DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') THEN "
              "REVOKE CREATE ON SCHEMA public FROM app_owner; END IF; END $$")  # as on a fresh PG15+ database
    settings = settings_for(pg_url, public_project)
    result = runner.upgrade(settings)  # before the fix: permission denied for schema public
    assert [r.revision for r in result.applied] == ["0001"]
    assert q(pg_url, "SELECT tableowner FROM pg_tables WHERE schemaname = 'public' AND tablename = 'notes'") \
        == [("app_owner",)]
    assert q(pg_url, "SELECT has_table_privilege('app_rls', 'public.notes', 'INSERT')") == [(True,)]
    assert _public_create(pg_url)
    assert runner.check(settings).clean
    assert runner.upgrade(settings).applied == []  # idempotent: the grant is already there


def test_a_connecting_role_that_cannot_grant_gets_the_statement_for_a_dba(tmp_path, pg_url):
    tag = uuid.uuid4().hex[:8]
    names = {kind: f"pub_{tag}_{kind}" for kind in ("owner", "enforce", "bypass", "readonly")}
    env = {f"DBKIT_ROLE_{kind.upper()}": name for kind, name in names.items()}
    owner, deployer = names["owner"], f"pub_{tag}_deployer"
    notes = revision("0001", None, "op.execute('CREATE TABLE public.notes (id bigint PRIMARY KEY)')")
    project = make_project(tmp_path, {"0001_notes.py": notes}, pyproject_extra='schema = "public"\n')
    settings = settings_for(pg_url, project, **env)
    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        roles.apply(settings, conn)  # the roles exist already (a DBA ran `dbkit roles apply`)
        # may correct the roles (CREATEROLE), may not grant on public (pg_database_owner's)
        conn.execute(f"CREATE ROLE {deployer} LOGIN CREATEROLE IN ROLE {owner}")
        conn.execute(f'GRANT CREATE ON DATABASE "{pg_url.dbname}" TO {deployer}')
    try:
        assert not _public_create(pg_url, owner)
        limited = settings_for(_as_user(pg_url, deployer), project, **env)
        with pytest.raises(MissingDependency) as refused:
            runner.upgrade(limited)
        text = str(refused.value)
        assert f"the owner role {owner} may not create objects in schema public" in text
        assert f"have a DBA (or the schema's owner) run once: GRANT USAGE, CREATE ON SCHEMA public TO {owner};" in text
        assert "\n" not in text
        assert q(pg_url, "SELECT to_regclass('public.notes')") == [(None,)]  # nothing ran
    finally:
        for name in (deployer, *names.values()):
            q(pg_url, f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
                      f"EXECUTE 'DROP OWNED BY {name} CASCADE'; EXECUTE 'DROP ROLE {name}'; END IF; END $$")


def _as_user(url, user):
    from dbkit._urls import parse_database_url

    return parse_database_url(url.raw.replace(f"//{url.user}@", f"//{user}@", 1))


def test_offline_script_grants_public_to_the_owner_role(public_project, pg_url, dbkit_cli, tmp_path):
    tag = uuid.uuid4().hex[:8]
    dbname = f"public_{tag}"
    q(pg_url, f'CREATE DATABASE "{dbname}" TEMPLATE template0')
    url = pg_url.with_dbname(dbname)
    try:
        # a new database: PostgreSQL 15+ gives no CREATE on public (the owner role may not exist yet)
        assert q(url, "SELECT CASE WHEN EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') "
                      "THEN has_schema_privilege('app_owner', 'public', 'CREATE') ELSE false END") == [(False,)]
        rendered = dbkit_cli("migrate", "sql", env={"DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(public_project),
                                                    "DBKIT_EXTENSIONS": ""})
        assert rendered.returncode == 0, rendered.stderr
        assert f"{GRANTS};" in rendered.stdout.replace('"', "")
        script = tmp_path / "upgrade.sql"
        script.write_text(rendered.stdout)
        psql = subprocess.run([str(find_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(script),
                               url.conninfo], capture_output=True, text=True, timeout=300, check=False)
        assert psql.returncode == 0, psql.stderr
        assert q(url, "SELECT tableowner FROM pg_tables WHERE tablename = 'notes'") == [("app_owner",)]
    finally:
        q(pg_url, f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
