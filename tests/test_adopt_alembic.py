"""Adopting a project that plain Alembic migrated (issue 12, item 5).

The project is what `alembic init` writes (its alembic.ini with ``sqlalchemy.url = driver://…``, its
stock env.py, ``public.alembic_version``), migrated by plain `alembic upgrade` to revision 1; then its
env.py gets dbkit's one-call form and dbkit takes over from revision 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import DbkitRunner, clean_env
from migrate_helpers import q, revision, settings_for

from dbkit import _health as health
from dbkit import _lifecycle as lifecycle
from dbkit.backup import _pipeline as pipeline
from dbkit.errors import ConfigError, Refused, UsageError
from dbkit.migrate import _runner as runner

DBKIT_ENV_PY = "from dbkit.migrate.env import run\n\nrun(target_metadata=None)\n"
ADOPT = ('set DBKIT_VERSION_TABLE_SCHEMA=public (or [tool.dbkit] version_table_schema = "public") '
         "to adopt it")
FOUND = "dbkit.alembic_version does not exist, but found public.alembic_version at revision 0001"


def _pyproject(project: Path, extra: str = "") -> None:
    (project / "pyproject.toml").write_text(
        "[project]\nname = 'legacy'\n\n[tool.dbkit]\nextensions = []\nschema = \"public\"\n" + extra)


def _alembic(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alembic", *args], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def legacy(tmp_path, pg_url) -> Path:
    """A plain Alembic project at revision 0001 of two (tables in public), its env.py still Alembic's."""
    project = tmp_path / "legacy"
    project.mkdir()
    assert _alembic(project, "init", "migrations").returncode == 0
    ini = project / "alembic.ini"
    stock = ini.read_text()
    assert "sqlalchemy.url = driver://user:pass@localhost/dbname" in stock
    ini.write_text(stock.replace("driver://user:pass@localhost/dbname", pg_url.sqlalchemy_url.replace("%", "%%")))
    versions = project / "migrations" / "versions"
    (versions / "0001_widgets.py").write_text(revision(
        "0001", None, "op.execute('CREATE TABLE public.widgets (id int PRIMARY KEY)')",
        "op.execute('DROP TABLE public.widgets')", doc="widgets"))
    (versions / "0002_gadgets.py").write_text(revision(
        "0002", "0001", "op.execute('CREATE TABLE public.gadgets (id int PRIMARY KEY)')",
        "op.execute('DROP TABLE public.gadgets')", doc="gadgets"))
    done = _alembic(project, "upgrade", "0001")
    assert done.returncode == 0, done.stderr
    assert q(pg_url, "SELECT version_num FROM public.alembic_version") == [("0001",)]
    ini.write_text(stock)  # back to driver://…: dbkit must never read it
    _pyproject(project)
    return project


def _use_dbkit_env(project: Path) -> None:
    (project / "migrations" / "env.py").write_text(DBKIT_ENV_PY)


def _cli(project: Path, pg_url, *args: str, **env: str):
    return DbkitRunner(project)(*args, env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", **env})


def _one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.integration
def test_stock_env_py_is_refused_with_the_one_call_fix(legacy, pg_url):
    """`alembic init`'s env.py connects with sqlalchemy.url (driver://…): NoSuchModuleError before the fix."""
    result = _cli(legacy, pg_url, "migrate")
    assert result.returncode == ConfigError.exit_code
    line = _one_line(result)
    assert "NoSuchModuleError" not in line and "driver" not in line
    assert line.startswith("dbkit: error: migrations/env.py does not use dbkit: it is Alembic's own environment")
    assert "from dbkit.migrate.env import run" in line and "run(target_metadata=None)" in line
    assert q(pg_url, "SELECT to_regclass('public.gadgets')") == [(None,)]
    # reading state does not run env.py: status works and already finds the plain Alembic table
    assert FOUND in _cli(legacy, pg_url, "migrate", "status").stdout


@pytest.mark.integration
def test_adopted_with_the_setting_upgrades_from_revision_1(legacy, pg_url):
    _use_dbkit_env(legacy)
    _pyproject(legacy, 'version_table_schema = "public"\n')
    settings = settings_for(pg_url, legacy)
    st = runner.status(settings)
    assert st.current == ["0001"] and [r.revision for r in st.pending] == ["0002"] and st.problem is None
    assert st.version_table == "public.alembic_version"
    out = _cli(legacy, pg_url, "migrate", "status").stdout
    assert "version table: public.alembic_version" in out and "current: 0001" in out
    assert "your migrations' head is 0002" in out and not re.search(r"\bbase\b", out)

    result = runner.upgrade(settings)
    assert [r.revision for r in result.applied] == ["0002"]  # revision 1 did not run again
    assert result.before == ["0001"] and result.after == ["0002"]
    assert q(pg_url, "SELECT version_num FROM public.alembic_version") == [("0002",)]
    assert q(pg_url, "SELECT to_regclass('dbkit.alembic_version')") == [(None,)]
    assert q(pg_url, "SELECT tableowner FROM pg_tables WHERE tablename = 'gadgets'") == [("app_owner",)]

    check = runner.check(settings)
    assert check.clean and check.edited == [] and check.unrecorded == ["0001"]
    cli = _cli(legacy, pg_url, "migrate", "check")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "applied without dbkit (no checksum recorded, so not compared): 0001" in cli.stdout
    assert cli.stdout.strip().splitlines()[-1].startswith("clean: ")


@pytest.mark.integration
def test_without_the_setting_dbkit_finds_the_table_and_refuses_to_start_from_base(legacy, pg_url):
    _use_dbkit_env(legacy)
    settings = settings_for(pg_url, legacy)
    st = runner.status(settings)
    assert st.problem == f"{FOUND}; {ADOPT}" and not st.at_head

    status = _cli(legacy, pg_url, "migrate", "status")
    assert status.returncode == 0
    assert f"current: unknown: {FOUND}; {ADOPT}" in status.stdout
    assert not re.search(r"\bbase\b", status.stdout)

    with pytest.raises(Refused, match=re.escape(FOUND)):
        runner.upgrade(settings)
    migrate = _cli(legacy, pg_url, "migrate")
    assert migrate.returncode == Refused.exit_code
    line = _one_line(migrate)
    assert FOUND in line and "would re-run every revision" in line and ADOPT in line
    # refused before any DDL: not dbkit's schema, not its version table, not revision 2
    assert q(pg_url, "SELECT to_regnamespace('dbkit')") == [(None,)]
    assert q(pg_url, "SELECT to_regclass('public.gadgets')") == [(None,)]
    assert q(pg_url, "SELECT version_num FROM public.alembic_version") == [("0001",)]

    check = _cli(legacy, pg_url, "migrate", "check")
    assert check.returncode == 1
    assert check.stdout.strip() == f"migrate check failed: {FOUND}; {ADOPT}"

    report = health.check(settings)
    migrations = report.services["migrations"]
    assert migrations.status == "fail" and FOUND in migrations.error and migrations.hint == ADOPT

    # plain `alembic upgrade` through dbkit's env.py refuses the same way (Alembic's one FAILED line)
    plain = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=legacy,
                           env=clean_env(DATABASE_URL=pg_url.raw, DBKIT_ENV="test"),
                           capture_output=True, text=True, timeout=120, check=False)
    assert plain.returncode != 0 and "FAILED" in plain.stdout and FOUND in plain.stdout
    assert q(pg_url, "SELECT to_regclass('public.gadgets')") == [(None,)]


@pytest.mark.integration
def test_stamp_records_a_revision_without_running_it(legacy, pg_url):
    _use_dbkit_env(legacy)
    settings = settings_for(pg_url, legacy)
    # adopting by stamping dbkit's own version table at the revision plain Alembic reached
    stamped = _cli(legacy, pg_url, "migrate", "stamp", "0001")
    assert stamped.returncode == 0, stamped.stderr
    assert stamped.stdout.strip() == "stamped 0001 (was base); no revision ran"
    assert q(pg_url, "SELECT version_num FROM dbkit.alembic_version") == [("0001",)]
    assert runner.status(settings).current == ["0001"]

    result = runner.stamp(settings, "head")
    assert result.applied == [] and result.before == ["0001"] and result.after == ["0002"]
    assert q(pg_url, "SELECT to_regclass('public.gadgets')") == [(None,)]  # stamped, not run
    check = runner.check(settings)
    assert check.edited == [] and check.unrecorded == ["0001", "0002"]

    unknown = _cli(legacy, pg_url, "migrate", "stamp", "nope")
    assert unknown.returncode == UsageError.exit_code
    assert "nope" in _one_line(unknown) and "not a revision of the project" in unknown.stderr

    back = runner.stamp(settings, "base")
    assert back.after == [] and q(pg_url, "SELECT count(*) FROM dbkit.alembic_version") == [(0,)]


@pytest.fixture
def prod_env(pg_url):
    """Variables of a prod deploy whose requirements are met, with roles of its own (cf. test_migrate_prod)."""
    tag = uuid.uuid4().hex[:8]
    roles = {kind: f"adopt_{tag}_{kind}" for kind in ("owner", "enforce", "bypass", "readonly")}
    env = {f"DBKIT_ROLE_{kind.upper()}": name for kind, name in roles.items()}
    env.update({f"DBKIT_PASSWORD_{roles[k].upper()}": f"pw-{k}-{tag}" for k in ("enforce", "bypass", "readonly")})
    env.update(DBKIT_BACKUP_URI="s3://dbkit-prod-test/backups", DBKIT_ENV="prod")
    yield env
    for name in roles.values():
        q(pg_url, f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN "
                  f"EXECUTE 'DROP OWNED BY {name} CASCADE'; EXECUTE 'DROP ROLE {name}'; END IF; END $$")


@pytest.mark.integration
def test_stamping_backwards_in_prod_needs_allow_prod(legacy, pg_url, prod_env):
    _use_dbkit_env(legacy)
    settings = settings_for(pg_url, legacy, **prod_env)
    assert runner.stamp(settings, "head").after == ["0002"]  # forwards: no confirmation
    refused = _cli(legacy, pg_url, "migrate", "stamp", "0001", **prod_env)
    assert refused.returncode == Refused.exit_code
    line = _one_line(refused)
    assert "stamping an earlier revision is refused when DBKIT_ENV=prod" in line and "--allow-prod" in line
    assert q(pg_url, "SELECT version_num FROM dbkit.alembic_version") == [("0002",)]
    allowed = _cli(legacy, pg_url, "migrate", "stamp", "0001", "--allow-prod", **prod_env)
    assert allowed.returncode == 0, allowed.stderr
    assert q(pg_url, "SELECT version_num FROM dbkit.alembic_version") == [("0001",)]
    assert q(pg_url, "SELECT to_regclass('public.widgets') IS NOT NULL") == [(True,)]  # nothing was dropped


@pytest.mark.integration
def test_offline_sql_and_restore_follow_the_version_table_setting(legacy, pg_url, tmp_path):
    _use_dbkit_env(legacy)
    _pyproject(legacy, 'version_table_schema = "public"\n')
    settings = settings_for(pg_url, legacy, DBKIT_BACKUP_URI=str(tmp_path / "backups"))
    script = runner.offline_sql(settings, "0001", "0002")
    assert "UPDATE public.alembic_version SET version_num='0002'" in script
    assert "dbkit.alembic_version" not in script
    runner.upgrade(settings)
    manifest = pipeline.backup(settings)
    assert manifest.alembic_revision == "0002"  # the manifest reads the configured version table too
    result = lifecycle.restore(settings, "latest", into=f"{pg_url.dbname}_adopted")
    try:
        assert result.alembic_revision == "0002"  # read from public.alembic_version
        assert result.migrate_check == "clean"
    finally:
        q(pg_url.with_dbname("postgres"), f'DROP DATABASE IF EXISTS "{result.database}" WITH (FORCE)')


@pytest.mark.integration
def test_altering_a_table_made_before_dbkit_says_who_must_own_it(legacy, pg_url):
    """Tables plain Alembic created belong to the role it connected as; dbkit's revisions run as the owner role."""
    _use_dbkit_env(legacy)
    _pyproject(legacy, 'version_table_schema = "public"\n')
    (legacy / "migrations" / "versions" / "0003_name.py").write_text(revision(
        "0003", "0002", "op.execute('ALTER TABLE public.widgets ADD COLUMN name text')", doc="widget names"))
    settings = settings_for(pg_url, legacy)
    failed = _cli(legacy, pg_url, "migrate")
    assert failed.returncode == 1
    line = _one_line(failed)
    assert "revision 0003 (0003_name.py) failed and was rolled back" in line and "must be owner of table widgets" in line
    assert "REASSIGN OWNED BY <that role> TO app_owner" in line and "dbkit roles apply --take-ownership" in line
    assert runner.status(settings).current == ["0002"]  # revision 2 ran, 3 was rolled back
    applied = _cli(legacy, pg_url, "roles", "apply", "--take-ownership")  # what plain Alembic made, to the owner
    assert applied.returncode == 0 and "owner: TABLE public.widgets (was " in applied.stdout, applied.stderr
    assert q(pg_url, "SELECT tableowner FROM pg_tables WHERE tablename = 'widgets'") == [("app_owner",)]
    assert [r.revision for r in runner.upgrade(settings).applied] == ["0003"]
