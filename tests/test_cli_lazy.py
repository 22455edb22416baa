"""The lazily loaded CLI: `dbkit --help` lists every command without importing their modules (or any
heavy library), and each command's own --help loads its module and works."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from dbkit.cli import COMMANDS, cli

pytestmark = pytest.mark.unit

HEAVY = {"sqlalchemy", "alembic", "psycopg", "boto3", "botocore", "rich", "faker", "pgvector", "zstandard",
         "pydantic", "pydantic_core", "dotenv", "obstore", "pglast", "prometheus_client"}


def _modules_after(*args: str) -> tuple[str, list[str]]:
    """Run the CLI in a fresh interpreter with ``args``; its stdout and the modules it had imported."""
    code = ("import sys; from dbkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    text, _, modules = out.rpartition("MODULES ")
    return text, modules.split()


def test_help_lists_every_command_and_imports_none_of_them():
    text, modules = _modules_after("--help")
    assert set(COMMANDS) == {"backup", "check", "config", "dev", "init", "migrate", "reset", "restore", "rls", "roles", "seed"}
    for name in COMMANDS:
        assert f"  {name} " in text, name
    assert sorted({m.split(".")[0] for m in modules} & HEAVY) == []
    command_modules = {path.partition(":")[0] for path, _ in COMMANDS.values()}
    assert sorted(command_modules & set(modules)) == []


def test_a_command_imports_only_its_own_module():
    text, modules = _modules_after("migrate", "--help")
    assert "Usage: dbkit migrate" in text and "dbkit.cli._migrate" in modules
    assert not {"dbkit.cli._backup", "dbkit.cli._seed", "dbkit.cli._check"} & set(modules)
    assert sorted({m.split(".")[0] for m in modules} & HEAVY) == []


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_help_works(name):
    ctx = click.Context(cli, info_name="dbkit")
    cmd = cli.get_command(ctx, name)
    assert isinstance(cmd, click.Command) and cmd.name == name
    res = subprocess.run([sys.executable, "-m", "dbkit", name, "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith(f"Usage: dbkit {name} "), res.stderr
    assert sorted({m.split(".")[0] for m in _modules_after(name, "--help")[1]} & HEAVY) == []
    for sub in getattr(cmd, "commands", {}):
        res = subprocess.run([sys.executable, "-m", "dbkit", name, sub, "--help"], capture_output=True, text=True)
        assert res.returncode == 0 and res.stdout.startswith(f"Usage: dbkit {name} {sub} "), res.stderr


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("limit", [20, 45, 70, 90, 200])
def test_the_help_kept_in_the_map_is_the_commands_own(name, limit):
    """`dbkit --help` shows the map's text: it must shorten exactly as the command's docstring does."""
    cmd = cli.get_command(click.Context(cli), name)
    assert click.Command(name, help=COMMANDS[name][1]).get_short_help_str(limit) == cmd.get_short_help_str(limit)


def test_unknown_command_imports_no_command_module():
    res = subprocess.run([sys.executable, "-m", "dbkit", "frobnicate"], capture_output=True, text=True)
    assert res.returncode == 2 and "No such command 'frobnicate'" in res.stderr
    _, modules = _modules_after("frobnicate")
    assert not {path.partition(":")[0] for path, _ in COMMANDS.values()} & set(modules)
