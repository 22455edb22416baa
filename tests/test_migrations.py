"""The reference schema's revisions against a real PostgreSQL (pytest-alembic's checks and more)."""

import subprocess
import sys

import pytest
from migrate_helpers import REPO, q, settings_for

from dbkit.migrate import _runner as runner

pytestmark = pytest.mark.integration

TABLES = {"tenants", "users", "documents", "document_chunks", "events", "audit_log"}


@pytest.fixture
def settings(pg_url):
    return settings_for(pg_url)



def test_single_head(settings):
    history = runner.history(settings)
    heads = [r.revision for r in history if r.is_head]
    assert len(heads) == 1
    # a straight line: every revision's parent is the one before it
    assert [r.down_revision for r in history] == [None] + [r.revision for r in history[:-1]]


def test_upgrade_base_to_head(settings, pg_url):
    result = runner.upgrade(settings)
    assert result.before == [] and result.after == runner.status(settings).heads
    assert [r.revision for r in result.applied] == [r.revision for r in runner.history(settings)]
    tables = {r[0]: r[1] for r in q(pg_url, "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'app'")}
    assert set(tables) == TABLES
    assert set(tables.values()) == {"app_owner"}, "every table is owned by the owner role, not the superuser"
    rls = q(pg_url, "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
                    "WHERE relnamespace = 'app'::regnamespace AND relkind = 'r'")
    assert all(enabled and forced for _, enabled, forced in rls) and {r[0] for r in rls} == TABLES
    policies = q(pg_url, "SELECT tablename, cmd, qual, with_check FROM pg_policies WHERE schemaname = 'app'")
    assert {p[0] for p in policies} == TABLES
    assert all("current_setting('app.tenant_id'::text, true)" in (p[2] or p[3]) for p in policies)
    assert all("SELECT" in (p[2] or p[3]) for p in policies), "the claim is wrapped in a sub-select"
    assert q(pg_url, "SELECT hypertable_name FROM timescaledb_information.hypertables") == [("events",)]
    hnsw = q(pg_url, "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                     "JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'document_chunks_embedding_hnsw_idx'")
    assert hnsw[0][0] is True and "USING hnsw (embedding vector_cosine_ops)" in hnsw[0][1]
    assert "m='16'" in hnsw[0][1].replace(" ", "")
    gin = q(pg_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'documents_search_idx'")
    assert "USING gin (search)" in gin[0][0]
    grants = q(pg_url, "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
                       "WHERE table_schema = 'app' AND table_name = 'documents'")
    assert {p for g, p in grants if g == "app_rls"} == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    assert {p for g, p in grants if g == "app_readonly"} == {"SELECT"}
    assert {p for g, p in grants if g == "app_full"} == {"SELECT", "INSERT", "UPDATE", "DELETE"}
    roles = dict(q(pg_url, "SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname LIKE 'app\\_%'"))
    assert roles == {"app_owner": False, "app_rls": False, "app_full": True, "app_readonly": False}


def test_models_match_database_after_upgrade(settings):
    runner.upgrade(settings)
    result = runner.check(settings)
    assert result.clean, result.as_dict()


def test_downgrade_to_base_leaves_no_trace(settings, pg_url):
    runner.upgrade(settings)
    result = runner.downgrade(settings, "base")
    assert result.after == []
    assert q(pg_url, "SELECT nspname FROM pg_namespace WHERE nspname = 'app'") == []
    assert q(pg_url, "SELECT count(*) FROM pg_policies")[0][0] == 0
    assert q(pg_url, "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                     "WHERE n.nspname = 'app'")[0][0] == 0
    assert q(pg_url, "SELECT extname FROM pg_extension ORDER BY 1") == [("plpgsql",)]
    # Documented: dbkit's bookkeeping schema and the cluster-wide roles stay.
    assert q(pg_url, "SELECT count(*) FROM dbkit.alembic_version")[0][0] == 0
    assert q(pg_url, "SELECT count(*) FROM dbkit.migration_checksums")[0][0] == 0
    assert len(q(pg_url, "SELECT 1 FROM pg_roles WHERE rolname IN ('app_owner','app_rls','app_full','app_readonly')")) == 4


def test_stairway_up_down_up_each_revision(settings):
    for rev in runner.history(settings):
        runner.upgrade(settings, rev.revision)
        runner.downgrade(settings, "-1")
        runner.upgrade(settings, rev.revision)
        assert runner.status(settings).current == [rev.revision]
    assert runner.check(settings).clean


def test_second_run_finds_nothing_to_do(settings):
    runner.upgrade(settings)
    again = runner.upgrade(settings)
    assert again.applied == [] and again.before == again.after


def test_missing_extension_fails_before_any_ddl(pg_url):
    from dbkit.errors import MissingDependency

    settings = settings_for(pg_url, DBKIT_EXTENSIONS="vector,no_such_extension")
    with pytest.raises(MissingDependency, match="the PostgreSQL extension 'no_such_extension' is not installed"):
        runner.upgrade(settings)
    assert q(pg_url, "SELECT to_regclass('dbkit.alembic_version')") == [(None,)]


def test_plain_alembic_uses_the_same_environment(pg_url):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("DBKIT_", "DATABASE_URL"))}
    env.update(DATABASE_URL=pg_url.raw, DBKIT_ENV="test")
    res = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert q(pg_url, "SELECT version_num FROM dbkit.alembic_version") == [("0006",)]
    assert q(pg_url, "SELECT count(*) FROM dbkit.migration_checksums")[0][0] == 6


def test_offline_sql_needs_no_database(tmp_path):
    from dbkit.config import load_settings

    settings = load_settings(environ={"DBKIT_ENV": "test"}, cwd=REPO)  # no DATABASE_URL at all
    sql = runner.offline_sql(settings, None, "head")
    assert "SET lock_timeout = '5s';" in sql
    # self-sufficient on an empty cluster: extensions and roles exist before anything runs as the owner
    first_set_role = sql.index("SET ROLE app_owner;")
    assert sql.index("CREATE EXTENSION IF NOT EXISTS vector CASCADE;") < first_set_role
    assert sql.index('CREATE ROLE "app_owner" WITH ') < first_set_role  # LOGIN or NOLOGIN: the role model's business
    assert sql.index("CREATE SCHEMA IF NOT EXISTS dbkit AUTHORIZATION app_owner;") < first_set_role
    assert ";;" not in sql
    assert "COMMIT;\n\nCREATE INDEX CONCURRENTLY" in sql, "outside Alembic's transaction"
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS document_chunks_embedding_hnsw_idx" in sql
    assert "SELECT create_hypertable('app.events', by_range('time', INTERVAL '1 day'), if_not_exists => true)" in sql


def test_cli_status_and_check_json(pg_url, dbkit_cli):
    import json

    env = {"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)}
    st = json.loads(dbkit_cli("migrate", "status", "--json", env=env).stdout)
    assert st["current"] == [] and st["at_head"] is False and len(st["pending"]) == 6
    assert st["pending"][0]["message"].startswith("extensions")
    res = dbkit_cli("migrate", "check", env=env)
    assert res.returncode == 1 and "pending: 0001" in res.stdout
    up = dbkit_cli("migrate", env=env)
    assert up.returncode == 0, up.stderr
    assert "upgraded 0006" in up.stdout  # (Alembic's own "Running upgrade" lines are the CLI's choice)
    res = dbkit_cli("migrate", "check", "--json", env=env)
    assert res.returncode == 0 and json.loads(res.stdout)["clean"] is True
    lint = dbkit_cli("migrate", "lint", "--all", env=env)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "0 violation(s) in 6 revision(s): clean" in lint.stdout
    down = dbkit_cli("migrate", "down", "-1", env=env)
    assert down.returncode == 5 and "needs confirmation" in down.stderr
    typo = dbkit_cli("migrate", "down", "0O05", env=env)  # said before asking for a confirmation that cannot help
    assert typo.returncode == 2 and "Can't locate revision identified by '0O05'" in typo.stderr, typo.stderr
    down = dbkit_cli("migrate", "down", "-1", "--yes", env=env)
    assert down.returncode == 0 and "downgraded 0006" in down.stdout
    prod = dbkit_cli("migrate", "down", "base", "--yes", env={**env, "DBKIT_ENV": "prod"})
    assert prod.returncode == 5 and "refused when DBKIT_ENV=prod" in prod.stderr
