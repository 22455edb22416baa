"""Revisions run as the owner role, and FORCE ROW LEVEL SECURITY applies to the owner: with no claim set,
a policy shows it no row.  Revisions therefore run with ``row_security = off``: a statement RLS would
filter fails and rolls back (with the recipe in the hint) instead of silently touching no rows, and
``op.revert_hypertable`` copies every row before it drops the hypertable (it used to copy none)."""

from __future__ import annotations

import textwrap

import pytest
from migrate_helpers import make_project, q, revision, settings_for

from dbkit.migrate import _runner as runner
from dbkit.migrate._runner import MigrationFailed
from dbkit.testing.plugin import Server

pytestmark = pytest.mark.integration

POLICY = """
    op.enable_rls("{table}", schema="app")  # FORCE too, by default
    op.create_policy("{table}_tenant", "{table}", schema="app", roles=settings().role_enforce,
                     using="tenant_id = current_setting('app.tenant_id', true)")
"""

NOTES = revision("0001", None, """
    from dbkit.migrate import settings
    op.execute("CREATE SCHEMA IF NOT EXISTS app")
    op.execute("CREATE TABLE app.notes (id int PRIMARY KEY, tenant_id text NOT NULL, lang text)")
""" + POLICY.format(table="notes"), "op.execute('DROP TABLE app.notes')", doc="notes with FORCE RLS")


ROWS = {  # 100 rows of two tenants, written as the test's superuser (RLS does not apply to it)
    "notes": "INSERT INTO app.notes (id, tenant_id) SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END "
             "FROM generate_series(1, 100) i",
    "ev": "INSERT INTO app.ev SELECT now() - i * interval '1 hour', CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i "
          "FROM generate_series(1, 100) i",
}


def test_a_backfill_that_rls_would_filter_fails_whole_and_names_the_recipe(tmp_path, pg_url):
    backfill = "op.execute(\"UPDATE app.notes SET lang = 'en' WHERE lang IS NULL\")"
    project = make_project(tmp_path, {"0001_notes.py": NOTES,
                                      "0002_lang.py": revision("0002", "0001", backfill, doc="backfill")})
    settings = settings_for(pg_url, project)
    runner.upgrade(settings, "0001")
    q(pg_url, ROWS["notes"])

    with pytest.raises(MigrationFailed) as err:
        runner.upgrade(settings)
    assert 'query would be affected by row-level security policy for table "notes"' in str(err.value)
    assert "revision 0002 (0002_lang.py) failed and was rolled back" in str(err.value)
    assert "with op.execute_unfiltered(...), as a connecting role that bypasses RLS" in err.value.hint
    assert "NO FORCE ROW LEVEL SECURITY before it and FORCE ROW LEVEL SECURITY after it" in err.value.hint
    assert runner.status(settings).current == ["0001"]
    assert q(pg_url, "SELECT count(*) FROM app.notes WHERE lang IS NULL") == [(100,)]  # before: 0 rows, "applied"

    (project / "migrations" / "versions" / "0002_lang.py").write_text(revision("0002", "0001", """
        op.execute("ALTER TABLE app.notes NO FORCE ROW LEVEL SECURITY")
        op.execute("UPDATE app.notes SET lang = 'en' WHERE lang IS NULL")
        op.execute("ALTER TABLE app.notes FORCE ROW LEVEL SECURITY")
    """, doc="backfill, the recipe"))
    assert [r.revision for r in runner.upgrade(settings).applied] == ["0002"]
    assert q(pg_url, "SELECT count(*) FILTER (WHERE lang = 'en'), count(*) FROM app.notes") == [(100, 100)]
    assert q(pg_url, "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'app.notes'::regclass") \
        == [(True, True)]


def test_execute_unfiltered_backfills_every_row_and_returns_to_the_owner_role(tmp_path, pg_url):
    project = make_project(tmp_path, {"0001_notes.py": NOTES, "0002_lang.py": revision("0002", "0001", """
        op.execute_unfiltered("UPDATE app.notes SET lang = 'en' WHERE lang IS NULL")
        op.execute("CREATE TABLE app.after_backfill (id int)")
    """, doc="backfill as the connecting role")})
    settings = settings_for(pg_url, project)
    runner.upgrade(settings, "0001")
    q(pg_url, ROWS["notes"])
    runner.upgrade(settings)
    assert q(pg_url, "SELECT count(*) FILTER (WHERE lang = 'en'), count(*) FROM app.notes") == [(100, 100)]
    assert q(pg_url, "SELECT relforcerowsecurity FROM pg_class WHERE oid = 'app.notes'::regclass") == [(True,)]
    assert q(pg_url, "SELECT tableowner FROM pg_tables WHERE tablename = 'after_backfill'") == [("app_owner",)]


PARENTS = revision("0002", "0001", """
    from dbkit.migrate import settings
    op.execute("CREATE TABLE app.parents (id int PRIMARY KEY, tenant_id text NOT NULL)")
    op.execute("ALTER TABLE app.notes ADD COLUMN parent_id int")
""" + POLICY.format(table="parents"), doc="parents with FORCE RLS")
FK = "ALTER TABLE app.notes ADD CONSTRAINT notes_parent_fkey FOREIGN KEY (parent_id) REFERENCES app.parents (id)"


@pytest.mark.parametrize("dangling", [False, True])
def test_a_foreign_key_between_force_rls_tables_is_validated_against_every_row(tmp_path, pg_url, dangling):
    """As the owner, PostgreSQL validates a new foreign key between FORCE RLS tables against the rows the policies
    show it, none: a dangling reference passed.  Under dbkit it fails (with the hint), and op.execute_unfiltered
    validates against every row."""
    project = make_project(tmp_path, {"0001_notes.py": NOTES, "0002_parents.py": PARENTS,
                                      "0003_fk.py": revision("0003", "0002", f"op.execute({FK!r})", doc="fk")})
    settings = settings_for(pg_url, project)
    runner.upgrade(settings, "0002")
    q(pg_url, "INSERT INTO app.parents VALUES (1, 'a')")
    q(pg_url, f"INSERT INTO app.notes (id, tenant_id, parent_id) VALUES (1, 'a', 1), (2, 'a', {99 if dangling else 1})")

    with pytest.raises(MigrationFailed) as err:
        runner.upgrade(settings)
    assert "query would be affected by row-level security policy" in str(err.value)
    assert "op.execute_unfiltered" in err.value.hint
    assert runner.status(settings).current == ["0002"]

    (project / "migrations" / "versions" / "0003_fk.py").write_text(
        revision("0003", "0002", f"op.execute_unfiltered({FK!r})", doc="fk, validated against every row"))
    if dangling:
        with pytest.raises(MigrationFailed) as err:
            runner.upgrade(settings)
        assert 'violates foreign key constraint "notes_parent_fkey"' in str(err.value)
        assert runner.status(settings).current == ["0002"]
    else:
        runner.upgrade(settings)
        assert q(pg_url, "SELECT convalidated FROM pg_constraint WHERE conname = 'notes_parent_fkey'") == [(True,)]


def test_the_offline_script_sets_row_security_off_after_set_role(tmp_path, pg_url):
    project = make_project(tmp_path, {"0001_notes.py": NOTES})
    script = runner.offline_sql(settings_for(pg_url, project))
    lines = [line.strip().rstrip(";") for line in script.splitlines() if line.strip()]
    assert lines.index("SET row_security = off") == lines.index("SET ROLE app_owner") + 1


def test_revert_hypertable_keeps_every_row_of_a_force_rls_hypertable(tmp_path, pg_url):
    events = revision("0001", None, textwrap.dedent("""
        from dbkit.migrate import settings
        op.execute("CREATE SCHEMA IF NOT EXISTS app")
        op.execute("CREATE TABLE app.ev (time timestamptz NOT NULL, tenant_id text NOT NULL, v int CHECK (v > 0))")
        op.create_hypertable("ev", "time", schema="app", chunk_interval="1 day")
    """) + textwrap.dedent(POLICY.format(table="ev")), "op.execute('DROP TABLE app.ev')", doc="a FORCE RLS hypertable")
    revert = revision("0002", "0001", 'op.revert_hypertable("ev", schema="app")', doc="back to a plain table")
    project = make_project(tmp_path, {"0001_ev.py": events, "0002_plain.py": revert})
    settings = settings_for(pg_url, project)
    runner.upgrade(settings, "0001")
    q(pg_url, ROWS["ev"])
    assert q(pg_url, "SELECT count(*) > 1 FROM show_chunks('app.ev')") == [(True,)]

    assert [r.revision for r in runner.upgrade(settings).applied] == ["0002"]
    assert q(pg_url, "SELECT count(*), count(DISTINCT tenant_id), sum(v) FROM app.ev") == [(100, 2, 5050)]
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'ev'") \
        == [(0,)]
    assert q(pg_url, "SELECT tableowner FROM pg_tables WHERE schemaname = 'app' AND tablename = 'ev'") \
        == [("app_owner",)]


def test_execute_unfiltered_needs_a_connecting_role_that_bypasses_rls(tmp_path, pg_url, postgresql):
    """A deployer that is only a member of the owner role (the roles were applied by a superuser): it migrates,
    and op.execute_unfiltered stops with one line naming the role and both ways out; nothing changed."""
    project = make_project(tmp_path, {"0001_notes.py": NOTES, "0002_lang.py": revision("0002", "0001", """
        op.execute_unfiltered("UPDATE app.notes SET lang = 'en' WHERE lang IS NULL")
    """, doc="backfill as the connecting role")})
    runner.upgrade(settings_for(pg_url, project), "0001")
    q(pg_url, ROWS["notes"])
    q(pg_url, "CREATE ROLE rls_rows_deployer LOGIN PASSWORD 'deploy-secret' IN ROLE app_owner")
    try:
        info = postgresql.info
        deployer = Server(info.host, info.port, info.user, info.password).url(
            info.dbname, user="rls_rows_deployer", password="deploy-secret")
        with pytest.raises(MigrationFailed) as err:
            runner.upgrade(settings_for(deployer, project))
        assert "op.execute_unfiltered needs a connecting role that bypasses row-level security" in str(err.value)
        assert "rls_rows_deployer does not" in str(err.value) and "NO FORCE ROW LEVEL SECURITY" in str(err.value)
        assert "deploy-secret" not in str(err.value)
        assert q(pg_url, "SELECT count(*) FROM app.notes WHERE lang IS NULL") == [(100,)]
        assert runner.status(settings_for(pg_url, project)).current == ["0001"]
    finally:
        q(pg_url, "DROP OWNED BY rls_rows_deployer")
        q(pg_url, "DROP ROLE rls_rows_deployer")


CREATE_FK = ('op.create_foreign_key("notes_parent_fkey", "notes", "parents", ["parent_id"], ["id"], '
             'source_schema="app", referent_schema="app")')
ADD_COLUMN_FK = ('import sqlalchemy as sa\n'
                 'op.add_column("notes", sa.Column("other_parent_id", sa.Integer, '
                 'sa.ForeignKey("app.parents.id", name="notes_other_parent_fkey")), schema="app")')


@pytest.mark.parametrize("dangling", [False, True])
def test_alembics_own_foreign_key_operations_are_validated_against_every_row(tmp_path, pg_url, dangling):
    """op.create_foreign_key and a ForeignKey in op.add_column need nothing of the user: dbkit adds them as the
    connecting role (a superuser here), so PostgreSQL checks every row, and objects stay the owner role's."""
    project = make_project(tmp_path, {"0001_notes.py": NOTES, "0002_parents.py": PARENTS,
                                      "0003_fk.py": revision("0003", "0002", CREATE_FK + "\n" + ADD_COLUMN_FK + "\n"
                                                             + 'op.execute("CREATE TABLE app.after_fk (id int)")',
                                                             doc="foreign keys with Alembic's operations")})
    settings = settings_for(pg_url, project)
    runner.upgrade(settings, "0002")
    q(pg_url, "INSERT INTO app.parents VALUES (1, 'a')")
    q(pg_url, f"INSERT INTO app.notes (id, tenant_id, parent_id) VALUES (1, 'a', 1), (2, 'a', {99 if dangling else 1})")
    if dangling:
        with pytest.raises(MigrationFailed) as err:
            runner.upgrade(settings)
        assert 'violates foreign key constraint "notes_parent_fkey"' in str(err.value)
        assert runner.status(settings).current == ["0002"]
        return
    runner.upgrade(settings)
    assert q(pg_url, "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'app.notes'::regclass "
                     "AND contype = 'f' ORDER BY 1") == [("notes_other_parent_fkey", True), ("notes_parent_fkey", True)]
    assert q(pg_url, "SELECT tableowner FROM pg_tables WHERE tablename = 'after_fk'") == [("app_owner",)]


def test_the_offline_script_adds_a_foreign_key_as_the_connecting_role(tmp_path, pg_url):
    project = make_project(tmp_path, {"0001_notes.py": NOTES, "0002_parents.py": PARENTS,
                                      "0003_fk.py": revision("0003", "0002", CREATE_FK, doc="fk")})
    script = runner.offline_sql(settings_for(pg_url, project))
    lines = [line.strip().rstrip(";") for line in script.splitlines() if line.strip()]
    at = next(i for i, line in enumerate(lines) if "ADD CONSTRAINT notes_parent_fkey" in line)
    assert lines[at - 1] == "SET ROLE NONE" and lines[at + 1] == "SET ROLE app_owner"
