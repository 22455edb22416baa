"""Bad input at the front door: one line naming the option or variable and the fix, exit 2, no
traceback, nothing changed.  The CLI as users run it (a subprocess), against the real test server
where the command would touch a database."""

from __future__ import annotations

import json

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dbkit.cli import error_text
from dbkit.cli._dev import _psql_dbname

BIG = "a" * 100_000


def assert_one_line_usage_error(res, *, names: str, fix: str | None = None, leaks: tuple[str, ...] = ()) -> str:
    """exit 2, exactly one stderr line starting 'dbkit: error:', naming ``names``; returns that line."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert len(lines) == 1, res.stderr[-2000:]
    line = lines[0]
    assert line.startswith("dbkit: error: ") and "Traceback" not in res.stderr
    assert names in line, line
    if fix is not None:
        assert fix in line, line
    assert len(line) < 600, f"{len(line)} characters: {line[:300]}"
    for secret in leaks:
        assert secret not in res.stderr + res.stdout
    return line


# --------------------------------------------------------------------- options (no database needed)

@pytest.mark.parametrize("args, names, fix", [
    (("seed", "--scale", "nan"), "'--scale'", "not a finite number"),
    (("seed", "--scale", "inf"), "'--scale'", "not a finite number"),
    (("seed", "--scale", "-inf"), "'--scale'", "not a finite number"),
    (("seed", "--scale", "0"), "'--scale'", "x>0"),
    (("seed", "--tenant-skew", "nan"), "'--tenant-skew'", "not a finite number"),
    (("seed", "--seed", str(2**64)), "'--seed'", "range"),
    (("check", "--max-backup-age", "inf"), "'--max-backup-age'", "not a finite number"),
    (("backup", "--level", "99"), "--level is 99", "zstd takes 1 to 22"),
    (("backup", "--compress", "gzip", "--level", "10"), "--level is 10", "gzip takes 0 to 9"),
    (("backup", "--compress", "none", "--level", "3"), "--level is 3", "has no levels"),
    (("restore", "--jobs", "0"), "'--jobs'", "x>=1"),
    (("restore", "--jobs", "-3"), "'--jobs'", "x>=1"),
    (("backup", "prune", "--keep-last", "-1"), "'--keep-last'", "x>=0"),
    (("restore", "--into", "appdb "), "--into is 'appdb '", "leading or trailing whitespace"),
    (("restore", "--into", " appdb"), "--into is ' appdb'", "leading or trailing whitespace"),
    (("restore", "--into", ""), "--into is empty", "example: --into"),
    (("restore", "--into", "app\tdb"), "--into is 'app\\tdb'", "control or invisible character"),
    (("restore", "--into", "x" * 64), "--into is 64 bytes long", "at most 63 bytes"),
    (("restore", "--into", "é" * 32), "--into is 64 bytes long", "at most 63 bytes"),
    (("dev", "url", "--database", "x y "), "--database is 'x y '", "leading or trailing whitespace"),
    (("dev", "psql", "-d", "é" * 32), "-d is 64 bytes long", "at most 63 bytes"),
    (("restore", "--from", "s3://Not_A_Bucket/x"), "--from is 's3://Not_A_Bucket/x'", "example:"),
    (("backup", "list", "--from", "ftp://host/x"), "--from is 'ftp://host/x'", "unsupported scheme"),
    (("backup", "show", "--from", "file://elsewhere/x"), "--from is", "file:///abs/path"),
    (("backup", "prune", "--from", "s3://b/x?y=1"), "--from is", "no ?query"),
    (("backup", "--to", "ftp://host/x"), "--to is 'ftp://host/x'", "unsupported scheme"),
    (("migrate", "--to", ""), "--to is empty", "example: --to head"),
    (("migrate", "--to", "  "), "--to is empty", "example: --to head"),
    (("migrate", "sql", "--from", ""), "--from is empty", "example: --from head"),
    (("migrate", "down", "--yes", ""), "REVISION is empty", "example:"),
    (("frobnicate",), "No such command 'frobnicate'", "dbkit --help"),
    (("seed", "--profile", "huge"), "'--profile'", "'tiny', 'small', 'medium', 'large'"),
])
def test_bad_option_values_are_one_line_exit_2(dbkit_cli, args, names, fix):
    assert_one_line_usage_error(dbkit_cli(*args), names=names, fix=fix)


def test_errors_about_from_never_name_to(dbkit_cli):
    for args in (("restore", "--from", "ftp://x/y"), ("backup", "list", "--from", "s3://X/y"),
                 ("backup", "verify", "--from", "gs://b/p")):
        line = assert_one_line_usage_error(dbkit_cli(*args), names="--from")
        assert "--to" not in line


@pytest.mark.parametrize("args, names", [
    (("restore", "--into", BIG), "--into is 100000 bytes long"),
    (("restore", "--from", BIG), "--from is 100000 bytes long"),
    (("backup", "--to", "s3://" + BIG), "--to is"),
    (("backup", "--tag", BIG), "--tag is"),
    (("migrate", "sql", "--to", BIG), "revision"),
    (("--database-url", "postgresql://u@h/" + BIG, "config", "show"), "--database-url is malformed"),
])
def test_a_100_kb_argument_is_not_echoed_whole(dbkit_cli, args, names):
    from migrate_helpers import REPO

    res = dbkit_cli(*args, env={"DBKIT_PROJECT_DIR": str(REPO)})
    assert res.returncode in (1, 2), res.stderr[-500:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and names in lines[0] and len(lines[0]) < 600, lines[0][:600]
    assert "a" * 81 not in lines[0] and "…" in lines[0]


@pytest.mark.parametrize("args, names", [
    (("restore", "--into", "appdb\udcff"), "argument 3 (after --into) is not valid UTF-8"),
    (("restore", "--into=appdb\udcff"), "--into is not valid UTF-8"),
    (("backup", "list", "--from", "/srv/b\udcffackups"), "(after --from) is not valid UTF-8"),
    (("--database-url", "postgresql://u@h/app\udcff", "config", "show"), "(after --database-url) is not valid UTF-8"),
    (("migrate", "down", "--yes", "\udcff"), "argument 4 (after --yes) is not valid UTF-8"),
])
def test_arguments_that_are_not_utf8_are_refused(dbkit_cli, args, names):
    # subprocess encodes the lone surrogate back into the byte b'\xff' on the command line
    assert_one_line_usage_error(dbkit_cli(*args), names=names, fix="UTF-8")


# --------------------------------------------------------------------- DATABASE_URL

@pytest.mark.parametrize("url, fix, secret", [
    ("postgresql://tricky:ab/Secr3tSlash@db/app", "percent-encode it", "Secr3tSlash"),
    ("postgresql://u:Secr3t#Hash@db/app", "percent-encode it", "Secr3t"),
    ("postgresql://u:Secr3t?Q@db/app", "percent-encode it", "Secr3t"),
    ("postgresql://u:Secr3t@At@db/app", "percent-encode it", "Secr3t"),
    ("postgresql://u@db/app?foo=bar", "?foo= is not a libpq connection parameter", None),
    ("postgresql://u@db/app%zz", "percent-encode '%' as %25", None),
    ("postgresql://u:Secr3t%zz@db/app", "a '%' in the password", "Secr3t"),
    ("postgresql://u@db/app\udcff", "not valid UTF-8", None),
    ("postgresql://u@db/" + "d" * 64, "over PostgreSQL's limit of 63", None),
])
def test_database_url_problems_are_one_line_without_secrets(dbkit_cli, url, fix, secret):
    for command in (("config", "show"), ("migrate", "status"), ("roles", "list")):
        res = dbkit_cli(*command, env={"DATABASE_URL": url})
        line = assert_one_line_usage_error(res, names="DATABASE_URL is malformed", fix=fix,
                                           leaks=(secret,) if secret else ())
        assert "unexpected error" not in line


_reserved_pw = st.text(alphabet="QXZJKVWY!$~/#?@", min_size=4, max_size=24).filter(
    lambda p: any(c in p for c in "/#?@"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=_reserved_pw)
def test_database_url_passwords_with_reserved_characters_never_print(dbkit_cli, password):
    res = dbkit_cli("config", "show", env={"DATABASE_URL": f"postgresql://appuser:{password}@db.internal:5432/app"})
    line = assert_one_line_usage_error(res, names="DATABASE_URL is malformed", fix="percent-encode")
    assert not [password[i:i + 3] for i in range(len(password) - 2) if password[i:i + 3] in line]
    assert "appuser" not in line


# --------------------------------------------------------------------- against the real server

def _databases(url) -> set[str]:
    with psycopg.connect(url.with_dbname("postgres").conninfo, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database")}


@pytest.fixture
def local_backup(pg_url, dbkit_cli, shared_tmp):
    """A real backup of the test database in a local directory: (env, backup id)."""
    env = {"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "DBKIT_BACKUP_URI": str(shared_tmp / "backups")}
    made = dbkit_cli("backup", "--json", env=env)
    assert made.returncode == 0, made.stderr
    return env, json.loads(made.stdout)["id"]


@pytest.mark.parametrize("args, names", [
    (("--into", "appdb "), "--into is 'appdb '"),
    (("--into", "x" * 64), "--into is 64 bytes long"),
    (("--into", "restored_ok", "--jobs", "0"), "'--jobs'"),
    (("--into", "restored_ok", "--jobs", "-3"), "'--jobs'"),
    (("--into", "restored_ok", "--from", "s3://Bad_Bucket/x"), "--from is"),
])
def test_restore_with_bad_input_creates_no_database(local_backup, pg_url, dbkit_cli, args, names):
    env, backup_id = local_backup
    before = _databases(pg_url)
    res = dbkit_cli("restore", backup_id, *args, env=env)
    assert_one_line_usage_error(res, names=names)
    assert _databases(pg_url) == before


def test_restore_with_a_good_name_still_works(local_backup, pg_url, dbkit_cli):
    env, backup_id = local_backup
    name = f"{pg_url.dbname}_r"
    res = dbkit_cli("restore", backup_id, "--into", name, "--jobs", "2", env=env)
    try:
        assert res.returncode == 0, res.stderr
        assert name in _databases(pg_url)
    finally:
        with psycopg.connect(pg_url.with_dbname("postgres").conninfo, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_backup_with_a_bad_level_writes_nothing(pg_url, dbkit_cli, shared_tmp):
    target = shared_tmp / "b"
    res = dbkit_cli("backup", "--to", str(target), "--level", "99",
                    env={"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test"})
    assert_one_line_usage_error(res, names="--level is 99")
    assert not target.exists() or not any(target.iterdir())


def test_database_url_with_unknown_query_parameter_touches_nothing(pg_url, dbkit_cli):
    before = _databases(pg_url)
    res = dbkit_cli("migrate", "status", env={"DATABASE_URL": pg_url.raw + "?foo=bar", "DBKIT_ENV": "test"})
    assert_one_line_usage_error(res, names="DATABASE_URL is malformed", fix="?foo=")
    assert _databases(pg_url) == before


# --------------------------------------------------------------------- pure helpers

@given(st.text(min_size=81, max_size=5000))
def test_error_text_is_one_printable_bounded_line(value):
    text = error_text(f"--into is {value!r}; example: --into x")
    assert "\n" not in text and len(text) <= 2001
    text.encode("utf-8")  # no lone surrogates left


@pytest.mark.parametrize("args, dbname, rest", [
    (("-d", "other", "-c", "select 1"), "other", ["-c", "select 1"]),
    (("-dother",), "other", []),
    (("--dbname=other", "-q"), "other", ["-q"]),
    (("--dbname", "other"), "other", []),
    (("-c", "select 1"), None, ["-c", "select 1"]),
    (("-d", "host=elsewhere dbname=x"), None, ["-d", "host=elsewhere dbname=x"]),
    (("-c", "x", "--", "-d", "y"), None, ["-c", "x", "--", "-d", "y"]),
])
def test_psql_dbname_is_taken_out_of_psql_arguments(args, dbname, rest):
    assert _psql_dbname(args) == (dbname, rest)


def test_empty_database_url_option_is_refused_not_ignored(dbkit_cli):
    assert_one_line_usage_error(dbkit_cli("--database-url", "", "config", "show"), names="--database-url is empty")


def test_migrate_new_with_an_empty_message_writes_no_file(dbkit_cli, tmp_path):
    from migrate_helpers import copy_reference_project

    project = copy_reference_project(tmp_path / "project")
    before = sorted(p.name for p in (project / "migrations" / "versions").iterdir())
    res = dbkit_cli("migrate", "new", "-m", " ", env={"DBKIT_PROJECT_DIR": str(project)})
    assert_one_line_usage_error(res, names="--message is empty")
    assert sorted(p.name for p in (project / "migrations" / "versions").iterdir()) == before
