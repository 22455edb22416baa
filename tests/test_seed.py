"""`dbkit seed` against the migrated reference schema on a real server."""

import psycopg
import pytest
from migrate_helpers import REPO, copy_reference_project, q, settings_for

from dbkit.errors import ConfigError, Refused
from dbkit.seed import _engine as engine
from dbkit.seed._registry import dependency_order

pytestmark = pytest.mark.integration

TABLES = ["tenants", "users", "documents", "document_chunks", "events", "audit_log"]


def counts(url):
    return {t: q(url, f"SELECT count(*) FROM app.{t}")[0][0] for t in TABLES}


def test_same_seed_gives_identical_tables_in_two_fresh_databases(migrated_url, migrated_template):
    first = engine.run(settings_for(migrated_url), profile="tiny", seed=42)
    assert first.status == "seeded"
    other = migrated_url.with_dbname(migrated_url.dbname + "_b")
    q(migrated_url.with_dbname("postgres"), f'CREATE DATABASE "{other.dbname}" TEMPLATE "{migrated_template}"')
    try:
        second = engine.run(settings_for(other), profile="tiny", seed=42)
        assert [(t.table, t.rows, t.checksum) for t in first.tables] == [
            (t.table, t.rows, t.checksum) for t in second.tables]
        # byte-identical, not just equal digests: compare the full text of every row
        for table in TABLES:
            dump = f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM app.{table} t"
            assert q(migrated_url, dump) == q(other, dump), table
        different = engine.run(settings_for(other), profile="tiny", seed=43, truncate=True)
        assert [t.checksum for t in different.tables] != [t.checksum for t in first.tables]
    finally:
        q(migrated_url.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{other.dbname}" WITH (FORCE)')


def test_foreign_keys_have_no_orphans_and_tenants_match(migrated_url):
    engine.run(settings_for(migrated_url), profile="tiny", seed=1)
    orphans = {
        "documents.author": "SELECT count(*) FROM app.documents d LEFT JOIN app.users u ON u.id = d.author_id "
                            "AND u.tenant_id = d.tenant_id WHERE u.id IS NULL",
        "chunks.document": "SELECT count(*) FROM app.document_chunks c LEFT JOIN app.documents d "
                           "ON d.id = c.document_id AND d.tenant_id = c.tenant_id WHERE d.id IS NULL",
        "events.tenant": "SELECT count(*) FROM app.events e LEFT JOIN app.tenants t ON t.id = e.tenant_id "
                         "WHERE t.id IS NULL",
        "audit.actor": "SELECT count(*) FROM app.audit_log a LEFT JOIN app.users u ON u.id = a.actor_id "
                       "AND u.tenant_id = a.tenant_id WHERE u.id IS NULL",
        "audit.target": "SELECT count(*) FROM app.audit_log a LEFT JOIN app.documents d ON d.id = a.target_id "
                        "WHERE d.id IS NULL",
    }
    for name, sql in orphans.items():
        assert q(migrated_url, sql) == [(0,)], name
    assert q(migrated_url, "SELECT count(*) FROM (SELECT tenant_id, email FROM app.users GROUP BY 1, 2 "
                           "HAVING count(*) > 1) d") == [(0,)]
    assert q(migrated_url, "SELECT count(*) FROM app.documents WHERE search IS NULL") == [(0,)]


def test_tenant_distribution_uniform_and_skewed(migrated_url):
    settings = settings_for(migrated_url)
    engine.run(settings, profile="tiny", scale=20, seed=5, only=["tenants", "events"])
    uniform = [r[0] for r in q(migrated_url, "SELECT count(*) FROM app.events GROUP BY tenant_id ORDER BY 1")]
    assert len(uniform) == 60 and max(uniform) < 3 * min(uniform)
    engine.run(settings, profile="tiny", scale=20, seed=5, only=["tenants", "events"], truncate=True, tenant_skew=1.2)
    skewed = [r[0] for r in q(migrated_url, "SELECT count(*) FROM app.events GROUP BY tenant_id ORDER BY 1")]
    assert max(skewed) > 20 * min(skewed)


def test_rerun_is_a_noop_and_truncate_reloads(migrated_url):
    settings = settings_for(migrated_url)
    first = engine.run(settings, profile="tiny", seed=7)
    again = engine.run(settings, profile="tiny", seed=7)
    assert again.status == "noop" and "already seeded with seed 7, profile tiny" in again.message
    assert counts(migrated_url) == {t.table: t.rows for t in first.tables}
    with pytest.raises(Refused, match="tables already hold rows that this seed did not write.*--truncate"):
        engine.run(settings, profile="tiny", seed=8)
    reloaded = engine.run(settings, profile="tiny", seed=7, truncate=True)
    assert [t.checksum for t in reloaded.tables] == [t.checksum for t in first.tables]
    assert counts(migrated_url) == {t.table: t.rows for t in first.tables}
    status = engine.status(settings)
    assert [r.seed for r in status.runs] == [7, 7] and status.tables["users"] == 12
    with pytest.raises(ConfigError, match=r"--truncate would leave dangling rows: .*app.users \(12 rows\)"):
        engine.run(settings, profile="tiny", seed=7, truncate=True, only=["tenants"])
    assert counts(migrated_url)["tenants"] == 3


def test_refused_in_prod(migrated_url):
    settings = settings_for(migrated_url, DBKIT_ENV="prod")
    with pytest.raises(Refused, match="seeding is refused when DBKIT_ENV=prod"):
        engine.run(settings, profile="tiny")
    with pytest.raises(Refused):
        engine.run(settings, profile="tiny", allow_prod=True)  # --allow-prod needs --yes too
    assert sum(counts(migrated_url).values()) == 0


def test_vectors_have_the_column_dimension_and_unit_norm(migrated_url):
    engine.run(settings_for(migrated_url), profile="tiny", seed=2)
    dims, worst = q(migrated_url, "SELECT min(vector_dims(embedding)), max(abs(vector_norm(embedding) - 1)) "
                                  "FROM app.document_chunks")[0]
    assert dims == 384 and worst < 1e-5


def test_hypertable_rows_land_in_several_chunks(migrated_url):
    engine.run(settings_for(migrated_url), profile="tiny", seed=2, only=["tenants", "events"])
    assert q(migrated_url, "SELECT count(*) FROM show_chunks('app.events')")[0][0] >= 20


def test_only_respects_dependencies(migrated_url):
    settings = settings_for(migrated_url)
    with pytest.raises(ConfigError, match="--only includes users, which depends on tenants, and tenants is empty"):
        engine.run(settings, profile="tiny", only=["users"])
    with pytest.raises(ConfigError, match="--only names nope, which no seeder in seeds/ fills"):
        engine.run(settings, profile="tiny", only=["nope"])
    engine.run(settings, profile="tiny", only=["tenants"])
    result = engine.run(settings, profile="tiny", only=["users"])
    assert [t.table for t in result.tables] == ["users"] and counts(migrated_url)["users"] == 12


def test_dry_run_writes_nothing(migrated_url):
    result = engine.run(settings_for(migrated_url), profile="small", dry_run=True)
    assert result.status == "planned" and sum(t.rows for t in result.tables) > 20_000
    assert sum(counts(migrated_url).values()) == 0
    assert q(migrated_url, "SELECT to_regclass('dbkit.seed_runs')") == [(None,)]


def test_defer_indexes_rebuilds_indexes_and_foreign_keys(migrated_url):
    indexes = "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'app' ORDER BY 1"
    fks = ("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint "
           "WHERE contype = 'f' AND connamespace = 'app'::regnamespace ORDER BY 1, 2")
    before = q(migrated_url, indexes), q(migrated_url, fks)
    result = engine.run(settings_for(migrated_url), profile="tiny", seed=3, defer_indexes=True)
    assert (q(migrated_url, indexes), q(migrated_url, fks)) == before
    plain = engine.run(settings_for(migrated_url), profile="tiny", seed=3, truncate=True)
    assert [t.checksum for t in plain.tables] == [t.checksum for t in result.tables]
    chunks = next(t for t in result.tables if t.table == "document_chunks")
    assert chunks.index_seconds is not None


def test_enforce_role_sees_its_tenants_rows(migrated_url):
    engine.run(settings_for(migrated_url), profile="tiny", seed=4)
    per_tenant = dict(q(migrated_url, "SELECT tenant_id, count(*) FROM app.documents GROUP BY 1"))
    app_url = migrated_url.raw.replace("postgres@", "app_rls@", 1)
    with psycopg.connect(app_url) as conn:
        assert conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == 0  # no tenant: nothing
        for tenant_id, n in per_tenant.items():
            with conn.transaction():
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant_id),))
                assert conn.execute("SELECT count(*) FROM app.documents").fetchone()[0] == n
                assert conn.execute("SELECT count(DISTINCT tenant_id) FROM app.documents").fetchone()[0] == 1


def test_failing_seeder_rolls_back_and_is_named(tmp_path, migrated_url):
    project = copy_reference_project(tmp_path / "proj")
    (project / "seeds" / "users.py").write_text(
        (REPO / "seeds" / "users.py").read_text().replace(
            "        name = ctx.rng.choice(names)",
            "        if i == 5:\n            raise RuntimeError('boom at row 5')\n        name = ctx.rng.choice(names)"))
    with pytest.raises(engine.SeederFailed) as err:
        engine.run(settings_for(migrated_url, project), profile="tiny", seed=1)
    assert str(err.value).startswith("seeder seeds/users.py:users for app.users failed after 5 rows: "
                                     "RuntimeError: boom at row 5; nothing was written")
    assert sum(counts(migrated_url).values()) == 0  # tenants (seeded before users) rolled back too


def test_sql_files_apply_in_name_order(tmp_path, migrated_url):
    project = copy_reference_project(tmp_path / "proj")
    (project / "seeds" / "20_user.sql").write_text(
        "INSERT INTO app.users (id, tenant_id, email, name) SELECT '00000000-0000-4000-8000-000000000002', id, "
        "'ops@fixed.example.com', 'Ops' FROM app.tenants WHERE slug = 'fixed';")
    (project / "seeds" / "10_tenant.sql").write_text(
        "INSERT INTO app.tenants (id, slug, name) VALUES ('00000000-0000-4000-8000-000000000001', 'fixed', 'Fixed');")
    result = engine.run(settings_for(migrated_url, project), profile="tiny", seed=1)
    assert result.sql_files == ["10_tenant.sql", "20_user.sql"]
    assert q(migrated_url, "SELECT u.email FROM app.users u JOIN app.tenants t ON t.id = u.tenant_id "
                           "WHERE t.slug = 'fixed' AND u.name = 'Ops'") == [("ops@fixed.example.com",)]


def test_cli_summary_and_json(migrated_url, dbkit_cli):
    import json

    env = {"DATABASE_URL": migrated_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)}
    res = dbkit_cli("seed", "--profile", "tiny", "--seed", "9", env=env)
    assert res.returncode == 0, res.stderr
    assert "seeded 351 rows into 6 table(s)" in res.stdout
    assert "dbkit: seeding users (12 rows)" in res.stderr  # plain progress lines off a terminal
    again = json.loads(dbkit_cli("seed", "--profile", "tiny", "--seed", "9", "--json", env=env).stdout)
    assert again["status"] == "noop" and again["total_rows"] == 351
    st = json.loads(dbkit_cli("seed", "status", "--json", env=env).stdout)
    assert st["runs"][0]["seed"] == 9 and st["tables"]["events"] == 240  # the --json of seed status
    prod = dbkit_cli("seed", env={**env, "DBKIT_ENV": "prod"})
    assert prod.returncode == 5 and "seeding is refused when DBKIT_ENV=prod" in prod.stderr


@pytest.mark.unit
def test_dependency_order_and_cycles():
    assert dependency_order({"b": {"a"}, "a": set(), "c": {"b", "a"}, "d": set()}) == ["a", "d", "b", "c"]
    with pytest.raises(ConfigError, match="form a cycle among a, b"):
        dependency_order({"a": {"b"}, "b": {"a"}, "c": set()})


def test_cli_noop_and_dry_run_show_no_timings(migrated_url, dbkit_cli):
    env = {"DATABASE_URL": migrated_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)}
    plan = dbkit_cli("seed", "--profile", "tiny", "--dry-run", env=env)
    assert plan.returncode == 0, plan.stderr
    assert plan.stdout.splitlines()[:2] == ["plan: seed 0, profile tiny, scale 1", "table            rows to write"]
    first = dbkit_cli("seed", "--profile", "tiny", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("seeded: seed 0, profile tiny, scale 1\n") and "rows/s" in first.stdout
    again = dbkit_cli("seed", "--profile", "tiny", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("unchanged: seed 0, profile tiny, scale 1\ntable            rows  checksum\n")
    assert "rows/s" not in again.stdout and "0.00" not in again.stdout
    assert "already seeded with seed 0, profile tiny" in again.stdout


@pytest.mark.parametrize("option, value", [("scale", float("nan")), ("scale", float("inf")), ("scale", 0.0),
                                           ("tenant_skew", float("nan")), ("tenant_skew", -1.0)])
def test_non_finite_scale_or_skew_is_refused_before_anything_is_written(migrated_url, option, value):
    with pytest.raises(ConfigError, match=f"--{option.replace('_', '-')} is"):
        engine.run(settings_for(migrated_url), profile="tiny", **{option: value})
    assert counts(migrated_url)["tenants"] == 0


@pytest.mark.parametrize("only", ["", ",", " , "])
def test_an_empty_only_list_is_refused_not_read_as_every_table(migrated_url, dbkit_cli, only):
    engine.run(settings_for(migrated_url), profile="tiny", seed=3)
    before = counts(migrated_url)
    env = {"DATABASE_URL": migrated_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)}
    res = dbkit_cli("seed", "--profile", "tiny", "--seed", "4", "--truncate", "--only", only, env=env)
    assert res.returncode == 2 and res.stderr.startswith("dbkit: error: --only names no table"), res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert counts(migrated_url) == before
    with pytest.raises(ConfigError, match="--only names no table"):
        engine.run(settings_for(migrated_url), profile="tiny", seed=4, truncate=True, only=[])
