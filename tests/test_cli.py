"""The CLI as users run it: a real subprocess, real exit codes."""

import subprocess
import sys

import pytest

import dbkit

pytestmark = pytest.mark.unit


def test_help_lists_command_groups(dbkit_cli):
    res = dbkit_cli("--help")
    assert res.returncode == 0, res.stderr
    for group in ("check", "config", "dev", "migrate", "seed", "backup", "restore", "roles", "rls"):
        assert f"  {group} " in res.stdout


def test_version(dbkit_cli):
    res = dbkit_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"dbkit, version {dbkit.__version__}"


def test_every_command_group_is_implemented(dbkit_cli):
    for group in ("check", "config", "dev", "migrate", "seed", "roles", "rls", "backup", "restore"):
        res = dbkit_cli(group, "--help")
        assert res.returncode == 0 and "not implemented" not in res.stdout


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from dbkit.cli import cli; "
            "heavy = {'sqlalchemy', 'alembic', 'psycopg', 'boto3', 'faker', 'rich', 'pgvector'}; "
            "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("env, expected", [
    ({"DBKIT_ENV": "production"}, "dbkit: error: DBKIT_ENV is 'production', not one of dev, test, staging, prod"),
    ({"DATABASE_URL": "mysql://root:hunter2@db/app"}, "dbkit: error: DATABASE_URL is malformed"),
    ({"DBKIT_CONNECT_TIMEOUT": "soon"}, "dbkit: error: DBKIT_CONNECT_TIMEOUT is 'soon', not a whole number"),
])
def test_config_errors_are_one_line_exit_2(dbkit_cli, env, expected):
    res = dbkit_cli("config", "show", env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected) and "example:" in lines[0]
    assert "Traceback" not in res.stderr and "hunter2" not in res.stderr


def test_missing_database_url_outside_dev_is_exit_2(dbkit_cli):
    res = dbkit_cli("--env", "staging", "check", "--json")
    assert res.returncode == 2
    assert '"error": "DATABASE_URL is not set and DBKIT_ENV=staging has no embedded cluster' in res.stdout


def test_verbose_shows_traceback(dbkit_cli):
    res = dbkit_cli("-v", "config", "show", env={"DBKIT_ENV": "nope"})
    assert res.returncode == 2 and "Traceback (most recent call last)" in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("dbkit: error: DBKIT_ENV is 'nope'")


def test_password_on_command_line_is_refused(dbkit_cli):
    res = dbkit_cli("--database-url", "postgresql://app:hunter2@db/app", "config", "show")
    assert res.returncode == 2
    assert "--database-url contains a password" in res.stderr and "hunter2" not in res.stderr


def test_config_show_masks_and_names_sources(dbkit_cli):
    res = dbkit_cli("config", "show", "--json", env={"DATABASE_URL": "postgresql://app:hunter2@db/app"})
    assert res.returncode == 0, res.stderr
    assert "hunter2" not in res.stdout
    import json

    rows = {r["variable"]: r for r in json.loads(res.stdout)}
    assert rows["DATABASE_URL"] == {"variable": "DATABASE_URL", "value": "postgresql://app:***@db/app", "source": "env"}
    assert rows["DBKIT_ENV"]["source"] == "default"


def test_unknown_command_is_usage_error(dbkit_cli):
    res = dbkit_cli("frobnicate")
    assert res.returncode == 2 and "No such command 'frobnicate'" in res.stderr


def test_unexpected_errors_are_short_with_a_hint(dbkit_cli, tmp_path):
    # A directory where a file is expected makes the .env read fail in an unplanned way.
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    (tmp_path / ".env").mkdir()
    res = dbkit_cli("config", "show")
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


def _check_result(pending=(), diffs=None, edited=()):
    from dbkit.migrate._runner import CheckResult

    return CheckResult(pending=list(pending), schema_diffs=diffs, edited=list(edited))


@pytest.mark.parametrize("result, expected", [
    (_check_result(diffs=None),
     "clean: at head, revision files unchanged, schema NOT compared (migrations/env.py passes no target_metadata)"),
    (_check_result(diffs=[]), "clean: at head, revision files unchanged, schema matches the models"),
    (_check_result(pending=["0002"], diffs=None),
     "migrate check failed: 1 revision(s) pending, revision files unchanged, schema NOT compared (not at head yet)"),
    (_check_result(diffs=["add_table x"]),
     "migrate check failed: at head, revision files unchanged, schema differs from the models in 1 place(s)"),
])
def test_migrate_check_says_what_it_compared(result, expected):
    from dbkit.cli._migrate import _check_summary

    assert _check_summary(result) == expected
    assert "matches the models" not in _check_summary(_check_result(diffs=None))


@pytest.mark.integration
def test_each_migration_is_listed_once(pg_url, dbkit_cli):
    from migrate_helpers import REPO

    res = dbkit_cli("migrate", env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(REPO)})
    assert res.returncode == 0, res.stderr
    out = res.stdout + res.stderr
    assert out.count("0003") == 1, out  # "upgraded 0003 …", not also alembic's "Running upgrade 0002 -> 0003"
    assert "Running upgrade" not in out and "now at 0006" in res.stdout


def test_restore_help_names_the_kept_database_as_the_code_does(dbkit_cli):
    from pathlib import Path

    from dbkit.backup import _restore

    assert "_pre_restore_{" in Path(_restore.__file__).read_text()  # the name restore --swap gives the old database
    res = dbkit_cli("restore", "--help")
    assert "<db>_pre_restore_<time>" in res.stdout and "_before_" not in res.stdout


@pytest.mark.parametrize("args", [(), ("dev",), ("roles",)])
def test_a_group_without_a_command_shows_its_help(dbkit_cli, args):
    res = dbkit_cli(*args)
    assert "Commands:" in res.stdout + res.stderr and "dbkit: error" not in res.stderr
