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
    assert "NO FORCE ROW LEVEL SECURITY before the statement and FORCE ROW LEVEL SECURITY after" in err.value.hint
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
