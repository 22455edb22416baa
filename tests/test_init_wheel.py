"""Issue 12's "Done means": dbkit as a team gets it.  Build the wheel, install it into a fresh virtualenv
(with the ``testing`` extra, dependencies from PyPI or pip's cache), and in empty directories outside this
repository run, with that virtualenv's ``dbkit``:

(a) ``dbkit init``: a tenant claim in schema app, all four roles;
(b) ``dbkit init --rls jwt …``: JWT ``sub`` per user, only enforce and bypass roles, custom password variables;
(c) ``dbkit init --rls none --schema public``;

then ``dbkit migrate``, ``roles check``, ``rls audit``, the generated ``tests/test_rls.py`` (the virtualenv's
pytest in a subprocess), ``dbkit seed``, ``backup --to s3://…`` (moto's server), ``restore`` and ``dbkit check``
healthy, against a fresh database on the suite's test server.  Durations are printed (``-s``), never asserted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, REGION, SECRET_KEY

from dbkit import _db as db

pytestmark = [pytest.mark.wheel, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "init-wheel-Sup3r-secret"  # the role passwords of these throwaway projects

CASES = {
    "a": [],
    "b": ["--rls", "jwt", "--bypass-role", "cognitive_engine_full", "--enforce-role", "cognitive_engine_rls",
          "--readonly-role", "none", "--password-env", "cognitive_engine_rls=POSTGRES_USER_RLS_PASS",
          "--password-env", "cognitive_engine_full=POSTGRES_USER_FULL_PASS", "--extensions", "pgcrypto,vector"],
    "c": ["--rls", "none", "--schema", "public"],
}
#: the password variables each project reads (default DBKIT_PASSWORD_<ROLE>, or --password-env)
PASSWORD_VARIABLES = {
    "a": ["DBKIT_PASSWORD_APP_RLS", "DBKIT_PASSWORD_APP_FULL", "DBKIT_PASSWORD_APP_READONLY"],
    "b": ["POSTGRES_USER_RLS_PASS", "POSTGRES_USER_FULL_PASS"],
    "c": ["DBKIT_PASSWORD_APP_RLS", "DBKIT_PASSWORD_APP_FULL", "DBKIT_PASSWORD_APP_READONLY"],
}


def _say(text: str) -> None:
    sys.stderr.write(f"[init-wheel] {text}\n")


def _run(args: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _sources(destination: Path) -> Path:
    """The working tree's files (tracked and new, not ignored) copied aside: a clean build, no stale build/."""
    try:
        listed = _run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO)
    except OSError:  # no git: everything but local state and build output
        listed = None
    if listed is None or listed.returncode != 0:
        ignore = shutil.ignore_patterns(".git", ".venv", ".dbkit", "build", "dist", "*.egg-info", "__pycache__",
                                        "backups", ".pytest_cache")
        return Path(shutil.copytree(REPO, destination, ignore=ignore))
    for name in filter(None, listed.stdout.split("\0")):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory) -> Iterator[Path]:
    """A fresh virtualenv with dbkit's wheel (and its ``testing`` extra) installed; its directory."""
    base = tmp_path_factory.mktemp("init-wheel")
    started = time.monotonic()
    src = _sources(base / "src")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(src)],
                 cwd=base)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (base / "dist").glob("dbkit-*.whl")
    built_at = time.monotonic()
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    installed = _run([str(venv / "bin/python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                      f"{wheel}[testing]"], cwd=base, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    _say(f"wheel built in {built_at - started:.1f}s, fresh virtualenv with it in {time.monotonic() - built_at:.1f}s")
    where = _run([str(venv / "bin/python"), "-c", "import dbkit; print(dbkit.__file__)"], cwd=base)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout + where.stderr  # the wheel's, not the repo's
    yield venv


def _env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a user's shell: no dbkit variables, this repository nowhere on the paths."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DBKIT_", "DATABASE_URL", "S3_", "AWS_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not p.startswith(str(REPO))]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env.update(extra)
    return env


@pytest.fixture
def fresh_database(dbkit_server, request) -> Iterator[str]:
    """A new, empty database on the test server (no extensions); dropped afterwards with its restores."""
    case = getattr(getattr(request.node, "callspec", None), "id", "adopt")
    name = f"dbkit_init_{case}_{os.getpid()}"
    admin_url = dbkit_server.url("postgres")
    with db.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with db.connect(admin_url, autocommit=True) as conn:
        for (other,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)).fetchall():
            conn.execute(f'DROP DATABASE IF EXISTS "{other}" WITH (FORCE)')


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_new_project_from_the_wheel(case, wheel_venv, dbkit_server, fresh_database, s3_endpoint, bucket,
                                      tmp_path_factory):
    project = tmp_path_factory.mktemp(f"project-{case}")
    assert not any(project.iterdir())
    backups = f"s3://{bucket}/{case}"
    env = _env(wheel_venv, DATABASE_URL=str(dbkit_server.url(fresh_database)), DBKIT_BACKUP_URI=backups,
               S3_ENDPOINT=s3_endpoint, S3_REGION=REGION, S3_ACCESS_KEY=ACCESS_KEY, S3_SECRET_KEY=SECRET_KEY,
               S3_ADDRESSING_STYLE="path", DBKIT_TEST_SERVER_URL=str(dbkit_server.url("postgres")),
               **dict.fromkeys(PASSWORD_VARIABLES[case], PASSWORD))
    dbkit = str(wheel_venv / "bin/dbkit")
    timings: list[str] = []

    def step(*args: str, program: str = dbkit, timeout: float = 300) -> str:
        started = time.monotonic()
        res = _run([program, *args], cwd=project, env=env, timeout=timeout)
        timings.append(f"{' '.join(args[:2])} {time.monotonic() - started:.1f}s")
        assert res.returncode == 0, (f"{' '.join(args)} exited {res.returncode}:\n{res.stdout[-3000:]}\n"
                                     f"{res.stderr[-3000:]}")
        return res.stdout if "--json" in args else res.stdout + res.stderr

    out = step("init", *CASES[case])
    assert "Next" in out and not (project / ".dbkit").exists()
    assert step("migrate").count("upgraded 0001") == 1
    assert "0 error(s), 0 warning(s)" in step("roles", "check")
    audit = step("rls", "audit")
    assert "0 errors, 0 warnings" in audit, audit
    tests = step("-m", "pytest", "-q", "-p", "no:cacheprovider", program=str(wheel_venv / "bin/python"), timeout=600)
    summary = tests.strip().splitlines()[-1]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, tests[-3000:]
    if case != "c":  # the RLS matrix ran: every case of the enforce and bypass roles passed
        assert int(summary.split(" passed")[0].split()[-1]) >= 10, summary
    assert "seeded 400 rows" in step("seed")
    step("backup", "--to", backups)
    restored = step("restore", "latest", "--from", backups, timeout=600)
    found = re.search(r"restored backup \S+ into database (\S+) ", restored)
    assert found and "alembic revision: 0001" in restored, restored
    schema = "public" if case == "c" else "app"
    with db.connect(dbkit_server.url(found[1]), autocommit=True) as conn:  # the seeded rows came back
        assert conn.execute(f"SELECT count(*) FROM {schema}.notes").fetchone()[0] == 400
    check = step("check")
    assert "status: healthy" in check, check
    # the next revision, rehearsed on a copy of that backup while two clients act as the application (the
    # project's role, claims and owner column)
    (project / "migrations" / "versions" / "0002_flag.py").write_text(FLAG_REVISION.format(schema=schema))
    rehearsal = json.loads(step("migrate", "rehearse", "--from-backup", "latest", "--from", backups, "--load", "2",
                                "--json", timeout=600))
    assert rehearsal["ok"] and [r["revision"] for r in rehearsal["revisions"]] == ["0002"], rehearsal["summary"]
    assert [w["label"] for w in rehearsal["load"]] == ["baseline", "0002"], rehearsal["load"]
    assert rehearsal["load"][0]["ops"] > 0 and rehearsal["load_errors"] == [], rehearsal["load_errors"]
    assert rehearsal["load"][0]["rows"] > 0, rehearsal["load"]  # the claims reach the seeded rows
    status = json.loads(step("migrate", "status", "--json"))  # the project's own database was not migrated
    assert (status["current"], [r["revision"] for r in status["pending"]]) == (["0001"], ["0002"]), status
    if case != "c":  # a shared table (no tenant's rows): the audit accepts it, the role model grants SELECT only
        with (project / "pyproject.toml").open("a") as f:
            f.write('\n[tool.dbkit.rls]\nshared_tables = ["plans"]\n')
        (project / "migrations" / "versions" / "0003_plans.py").write_text(SHARED_REVISION)
        assert "upgraded 0003" in step("migrate")
        assert "0 error(s), 0 warning(s)" in step("roles", "check")
        audit = step("rls", "audit")
        assert "0 errors, 0 warnings" in audit, audit
        enforce = "app_rls" if case == "a" else "cognitive_engine_rls"
        with db.connect(dbkit_server.url(fresh_database), autocommit=True) as conn:
            assert conn.execute("SELECT has_table_privilege(%s, 'app.plans', 'SELECT'), has_table_privilege(%s, "
                                "'app.plans', 'INSERT')", (enforce, enforce)).fetchone() == (True, False)
    _say(f"case {case}: " + ", ".join(timings))


FLAG_REVISION = """\
\"\"\"flag: a nullable column (no rewrite)

Revision ID: 0002
Revises: 0001
\"\"\"

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("notes", sa.Column("flag", sa.Boolean()), schema="{schema}")


def downgrade():
    op.drop_column("notes", "flag", schema="{schema}")
"""

SHARED_REVISION = """\
\"\"\"plans: a shared table (no tenant's rows), granted as the role model says

Revision ID: 0003
Revises: 0002
\"\"\"

import sqlalchemy as sa
from alembic import op

from dbkit import roles
from dbkit.migrate import settings

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    s = settings()
    op.create_table("plans", sa.Column("code", sa.Text, primary_key=True), schema=s.schema)
    op.execute(f"INSERT INTO {s.schema}.plans VALUES ('free'), ('pro')")
    for grant in roles.model(s).grants(["plans"], s.schema):
        if grant.get("object_type") != "SCHEMA":
            op.grant(**grant)


def downgrade():
    op.drop_table("plans", schema=settings().schema)
"""


REVISION = """\
revision = "{rev}"
down_revision = {down}
branch_labels = None
depends_on = None

from alembic import op


def upgrade():
    op.execute("CREATE TABLE public.{table} (id int PRIMARY KEY)")


def downgrade():
    op.execute("DROP TABLE public.{table}")
"""


@pytest.mark.parametrize("folder", ["migrations", "alembic"])
def test_an_existing_alembic_project_is_adopted(folder, wheel_venv, dbkit_server, fresh_database, tmp_path_factory):
    """A project plain Alembic migrated to revision 0001 of two: ``dbkit init`` adds dbkit's settings (plain
    Alembic's version table, the script folder ``alembic init <folder>`` made) and nothing of the example; with
    dbkit's rails in env.py, dbkit shows 0001, upgrades from there and ``migrate check`` is clean."""
    project = tmp_path_factory.mktemp("project-adopt")
    url = dbkit_server.url(fresh_database)
    env = _env(wheel_venv, DATABASE_URL=str(url), **dict.fromkeys(PASSWORD_VARIABLES["c"], PASSWORD))

    def run(program: str, *args: str) -> str:
        res = _run([str(wheel_venv / "bin" / program), *args], cwd=project, env=env)
        assert res.returncode == 0, f"{program} {' '.join(args)} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        return res.stdout + res.stderr

    run("alembic", "init", folder)
    ini = project / "alembic.ini"
    stock = ini.read_text()
    ini.write_text(stock.replace("driver://user:pass@localhost/dbname", url.sqlalchemy_url.replace("%", "%%")))
    versions = project / folder / "versions"
    (versions / "0001_widgets.py").write_text(REVISION.format(rev="0001", down=None, table="widgets"))
    (versions / "0002_gadgets.py").write_text(REVISION.format(rev="0002", down='"0001"', table="gadgets"))
    run("alembic", "upgrade", "0001")
    ini.write_text(stock)

    out = run("dbkit", "init", "--rls", "none", "--schema", "public")
    assert f"an existing Alembic project ({folder}/versions/0001_widgets.py)" in out
    assert f"{folder}/env.py: end it with" in out and "run(target_metadata=" in out
    assert f'migrations_dir = "{folder}"' in (project / "pyproject.toml").read_text()
    assert not (versions / "0001_initial.py").exists() and not (project / "seeds").exists()
    assert (folder == "migrations") == (project / "migrations").is_dir()  # nothing beside alembic/
    (project / folder / "env.py").write_text("from dbkit.migrate.env import run\n\nrun(target_metadata=None)\n")
    assert re.search(r"\b0001\b", run("dbkit", "migrate", "status"))
    assert "upgraded 0002" in run("dbkit", "migrate")
    run("dbkit", "migrate", "check")
    with db.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [("0002",)]
