"""Messages that fit the project (issue 12, item 6): `check`, `migrate status` and `migrate` speak of the
project's own migrations and of what the database holds; what is not configured is "not configured"."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DbkitRunner
from migrate_helpers import make_project, q, revision, settings_for

from dbkit import _health as health
from dbkit.errors import Refused
from dbkit.migrate import _runner as runner

TWO = {"0001_a.py": revision("0001", None, "op.execute('CREATE TABLE public.a (id int)')", doc="a"),
       "0002_b.py": revision("0002", "0001", "op.execute('CREATE TABLE public.b (id int)')", doc="b")}
PUBLIC = 'schema = "public"\n'


def _cli(project: Path, pg_url, *args: str, **env: str):
    return DbkitRunner(project)(*args, env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", **env})


def test_no_migrations_directory_is_not_configured_and_points_at_dbkit_init(tmp_path, pg_url):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n\n[tool.dbkit]\nextensions = []\n")
    report = health.check(settings_for(pg_url, tmp_path))
    migrations = report.services["migrations"]
    assert migrations.status == "ok"
    assert migrations.note == ("not configured: no Alembic environment at migrations/env.py "
                               "(run `dbkit init` to create one)")
    out = _cli(tmp_path, pg_url, "check").stdout
    assert "migrations" in out and "not configured: no Alembic environment" in out
    status = _cli(tmp_path, pg_url, "migrate", "status")
    assert status.returncode == 2
    assert "run `dbkit init` to create it" in status.stderr and "alembic init" not in status.stderr


def test_a_project_without_revisions_yet(tmp_path, pg_url):
    project = make_project(tmp_path, {}, pyproject_extra=PUBLIC)
    settings = settings_for(pg_url, project)
    st = runner.status(settings)
    assert st.heads == [] and st.advice() == (
        "the database has no version table and your project has no migrations yet (migrations/versions is empty): "
        'create one with `dbkit migrate new -m "..."`')
    out = _cli(project, pg_url, "migrate", "status").stdout
    assert "head:    none (migrations/versions has no revisions yet)" in out
    migrations = health.check(settings).services["migrations"]
    assert migrations.status == "ok" and migrations.note == st.advice()


def test_pending_names_the_database_revision_and_the_projects_head(tmp_path, pg_url):
    project = make_project(tmp_path, TWO, pyproject_extra=PUBLIC)
    settings = settings_for(pg_url, project)
    st = runner.status(settings)
    assert st.advice() == ("the database has no revision of your migrations applied yet; your migrations' head is "
                           "0002 (2 pending revisions): run `dbkit migrate`")
    runner.upgrade(settings, "0001")
    st = runner.status(settings)
    assert st.advice() == ("the database is at revision 0001, your migrations' head is 0002 (1 pending revision): "
                           "run `dbkit migrate`")
    out = _cli(project, pg_url, "check").stdout
    assert "database at 0001, your migrations (migrations) at 0002; 1 pending; fix: run `dbkit migrate`" in out


def test_a_database_of_another_project_is_not_advised_a_plain_migrate(tmp_path, pg_url):
    """Tables but no version table: before, `dbkit check` said only "run `dbkit migrate`"."""
    q(pg_url, "CREATE TABLE public.customers (id int)")
    project = make_project(tmp_path, TWO, pyproject_extra=PUBLIC)
    settings = settings_for(pg_url, project)
    st = runner.status(settings)
    assert st.unversioned == ["public.customers"]
    advice = st.advice()
    assert advice.startswith("the database has no revision of your migrations applied (dbkit.alembic_version is "
                             "missing or empty) but already has tables (public.customers): check that DATABASE_URL is "
                             "this project's database")
    assert "`dbkit migrate stamp <revision>`" in advice
    assert advice in _cli(project, pg_url, "migrate", "status").stdout
    migrations = health.check(settings).services["migrations"]
    assert migrations.status == "warn" and migrations.hint == advice


def test_a_revision_the_project_does_not_have(tmp_path, pg_url):
    q(pg_url, "CREATE SCHEMA dbkit; CREATE TABLE dbkit.alembic_version (version_num varchar(32) PRIMARY KEY); "
              "INSERT INTO dbkit.alembic_version VALUES ('ffff0000')")
    project = make_project(tmp_path, TWO, pyproject_extra=PUBLIC)
    settings = settings_for(pg_url, project)
    problem = ("the database is at revision ffff0000 (dbkit.alembic_version), which is not a revision of your "
               "migrations (migrations): is DATABASE_URL the database of this project, and DBKIT_MIGRATIONS_DIR its "
               "migrations?")
    assert runner.status(settings).problem == problem
    assert [r.revision for r in runner.history(settings)] == ["0001", "0002"]
    with pytest.raises(Refused, match="ffff0000"):
        runner.upgrade(settings)
    migrate = _cli(project, pg_url, "migrate")
    assert migrate.returncode == Refused.exit_code
    assert migrate.stderr.strip().splitlines() == [f"dbkit: error: {problem}"]
    assert q(pg_url, "SELECT to_regclass('public.a')") == [(None,)]
    check = runner.check(settings)
    assert not check.clean and check.summary() == f"migrate check failed: {problem}"
    migrations = health.check(settings).services["migrations"]
    assert migrations.status == "fail" and migrations.error == problem


def test_rls_not_used_is_not_configured_in_check(tmp_path, pg_url):
    project = make_project(tmp_path, TWO, pyproject_extra=PUBLIC + 'rls_model = "none"\n')
    settings = settings_for(pg_url, project)
    runner.upgrade(settings)
    rls = health.check(settings).services["rls"]
    assert rls.note.startswith("not configured: RLS is not used (DBKIT_RLS_MODEL=none)")


def test_another_projects_alembic_table_is_never_advised_for_adoption(tmp_path, pg_url):
    q(pg_url, "CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY); "
              "INSERT INTO public.alembic_version VALUES ('cafe0000')")
    project = make_project(tmp_path, TWO, pyproject_extra=PUBLIC)
    settings = settings_for(pg_url, project)
    problem = runner.status(settings).problem
    assert problem == ("dbkit.alembic_version does not exist, but found public.alembic_version at revision cafe0000, "
                       "which is not a revision of your migrations; check that DATABASE_URL is this project's database "
                       "and DBKIT_MIGRATIONS_DIR its migrations (never adopt another project's version table)")
    migrate = _cli(project, pg_url, "migrate")
    assert migrate.returncode == Refused.exit_code
    assert migrate.stderr.strip() == f"dbkit: error: {problem}"
    assert "DBKIT_VERSION_TABLE_SCHEMA" not in migrate.stderr
    assert q(pg_url, "SELECT to_regclass('public.a')") == [(None,)]


def test_a_version_table_of_another_name_is_found_and_named_in_the_advice(tmp_path, pg_url):
    q(pg_url, "CREATE TABLE public.schema_version (version_num varchar(32) PRIMARY KEY); "
              "INSERT INTO public.schema_version VALUES ('0001')")
    project = make_project(tmp_path, TWO, pyproject_extra=PUBLIC)
    renamed = runner.status(settings_for(pg_url, project, DBKIT_VERSION_TABLE="schema_version")).problem
    assert renamed == ("dbkit.schema_version does not exist, but found public.schema_version at revision 0001; "
                       'set DBKIT_VERSION_TABLE_SCHEMA=public (or [tool.dbkit] version_table_schema = "public") '
                       "to adopt it")
    q(pg_url, "ALTER TABLE public.schema_version RENAME TO alembic_version")
    other = runner.status(settings_for(pg_url, project, DBKIT_VERSION_TABLE="schema_version")).problem
    assert other.endswith("set DBKIT_VERSION_TABLE_SCHEMA=public DBKIT_VERSION_TABLE=alembic_version (or [tool.dbkit] "
                          'version_table_schema = "public", version_table = "alembic_version") to adopt it')


def test_check_summary_with_revisions_applied_without_dbkit_or_an_untrusted_revision():
    from dbkit.migrate._runner import NOT_COMPARED_NO_METADATA, NOT_COMPARED_UNKNOWN, CheckResult

    info = CheckResult(pending=[], schema_diffs=None, edited=[], schema_not_compared=NOT_COMPARED_NO_METADATA,
                       unrecorded=["0001"])
    assert info.clean  # information, not a failure
    assert info.summary() == ("clean: no pending revisions, no edited revisions; schema not compared "
                              "(env.py gives no target_metadata); 1 applied without dbkit (no checksum to compare)")
    untrusted = CheckResult(pending=[], schema_diffs=None, edited=[], schema_not_compared=NOT_COMPARED_UNKNOWN,
                            problem="dbkit.alembic_version does not exist, but found public.alembic_version at "
                                    "revision 0001; set …")
    assert not untrusted.clean
    assert untrusted.summary() == f"migrate check failed: {untrusted.problem}"
    assert untrusted.as_dict()["problem"] == untrusted.problem
