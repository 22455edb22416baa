"""Settings through the real CLI: `dbkit config show` names where every value came from, bad settings are
one line (exit 2), and nothing of the settings machinery (pydantic, python-dotenv) loads for --help."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SETTINGS_MODULES = {"pydantic", "pydantic_core", "dotenv", "dbkit.config"}


def _modules_after(*args: str) -> set[str]:
    code = ("import sys; from dbkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    return set(out.rpartition("MODULES ")[2].split())


@pytest.mark.parametrize("args", [("--help",), ("config", "--help"), ("migrate", "--help"), ("backup", "--help")])
def test_help_does_not_load_settings(args):
    loaded = _modules_after(*args)
    assert sorted(m for m in loaded if m.split(".")[0] in SETTINGS_MODULES or m in SETTINGS_MODULES) == []


def test_config_show_names_every_kind_of_source(dbkit_cli):
    project = dbkit_cli.cwd
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n[tool.dbkit]\nschema = 'from_pyproject'\n"
                                            "connect_timeout = 1\ndev_port = 1\ndev_database = 'x'\n")
    (project / ".env").write_text("DBKIT_ENV=test\nDBKIT_CONNECT_TIMEOUT=2\nDBKIT_DEV_PORT=2\n"
                                  "DBKIT_PASSWORD_APP_RLS=dotenv-secret\n")
    (project / ".env.test").write_text("DBKIT_CONNECT_TIMEOUT=3\nS3_SECRET_KEY=file-secret\n")
    res = dbkit_cli("--database-url", "postgresql://app@db.internal/flagdb", "config", "show", "--json",
                    env={"DBKIT_DEV_DATABASE": "from_env", "DBKIT_LOCK_TIMEOUT": ""})
    assert res.returncode == 0, res.stderr
    assert "dotenv-secret" not in res.stdout and "file-secret" not in res.stdout
    rows = {r["variable"]: (r["value"], r["source"]) for r in json.loads(res.stdout)}
    assert rows["DATABASE_URL"] == ("postgresql://app@db.internal/flagdb", "flag")
    assert rows["DBKIT_DEV_DATABASE"] == ("from_env", "env")
    assert rows["DBKIT_CONNECT_TIMEOUT"] == ("3", ".env.test")
    assert rows["S3_SECRET_KEY"] == ("***", ".env.test")
    assert rows["DBKIT_ENV"] == ("test", ".env") and rows["DBKIT_DEV_PORT"] == ("2", ".env")
    assert rows["DBKIT_PASSWORD_APP_RLS"] == ("***", ".env")
    assert rows["DBKIT_SCHEMA"] == ("from_pyproject", "pyproject")
    assert rows["DBKIT_LOCK_TIMEOUT"] == ("5s", "default")  # empty means unset


@pytest.mark.parametrize("files, expected", [
    ({".env": "DBKIT_DEV_PORT=99999\n"}, "DBKIT_DEV_PORT (from .env) is 99999, above 65535"),
    ({".env.dev": "DBKIT_MIGRATE_SET_ROLE=perhaps\n"},
     "DBKIT_MIGRATE_SET_ROLE (from .env.dev) is 'perhaps', not true or false"),
    ({"pyproject.toml": "[tool.dbkit]\nlock_timeout = [1]\n"},
     "[tool.dbkit] lock_timeout is [1], not a PostgreSQL duration"),
    ({".env": "DIRECT_DATABASE_URL=postgresql://app:s3cr3t@db:notaport/app\n"},
     "DIRECT_DATABASE_URL (from .env) is malformed"),
])
def test_bad_settings_are_one_line_exit_2(dbkit_cli, files, expected):
    (dbkit_cli.cwd / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for name, text in files.items():
        path = dbkit_cli.cwd / name
        path.write_text(path.read_text() + text if path.exists() else text)
    res = dbkit_cli("config", "show")
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"dbkit: error: {expected}") and "example: " in lines[0]
    assert "s3cr3t" not in res.stderr and "validation error" not in res.stderr.lower()
