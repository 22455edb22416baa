"""`dbkit init`: what each option combination writes, idempotence, --force, merging into an existing
pyproject.toml, refusals that write nothing, and a CLI that stays lazy.  No database here: the generated
projects are run for real (migrate, roles check, rls audit, their tests, seed, backup, restore, check) by
tests/test_init_wheel.py, from the wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dbkit import roles
from dbkit.config import load_settings
from dbkit.errors import UsageError
from dbkit.init import InitOptions, init
from dbkit.rls import Claims

pytestmark = pytest.mark.unit

FILES = ["alembic.ini", "migrations/env.py", "migrations/script.py.mako", "migrations/models.py",
         "migrations/versions/0001_initial.py", "seeds/notes.py", "tests/test_rls.py", ".env.example",
         "pyproject.toml"]
JWT = dict(rls="jwt", bypass_role="cognitive_engine_full", enforce_role="cognitive_engine_rls", readonly_role="none",
           password_env=("cognitive_engine_rls=POSTGRES_USER_RLS_PASS", "cognitive_engine_full=POSTGRES_USER_FULL_PASS"))


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBKIT_", "DATABASE_URL"))}
    return subprocess.run([sys.executable, "-m", "dbkit", "init", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, check=False, timeout=60)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def settings_of(directory: Path):
    return load_settings(cwd=directory, environ={})


def revision(directory: Path) -> str:
    return (directory / "migrations/versions/0001_initial.py").read_text()


def module_constants(directory: Path) -> dict:
    """The revision's literal constants (MATCH, POLICIES, GRANTS), read by running its top level without alembic."""
    text = revision(directory)
    body = text[text.index("revision = "):text.index("def upgrade")]
    namespace: dict = {}
    exec(compile(body, "0001_initial.py", "exec"), namespace)  # noqa: S102 - our own generated constants
    return namespace


# --------------------------------------------------------------------- what each combination writes

def test_defaults_tenant_claim_in_schema_app_with_all_four_roles(tmp_path):
    result = init(tmp_path, InitOptions())
    assert [f.path for f in result.files] == FILES
    assert {f.action for f in result.files} == {"written"}
    assert result.next_steps[0].startswith("dbkit dev up") and any("pytest" in s for s in result.next_steps)
    for path in tmp_path.rglob("*.py"):
        compile(path.read_text(), str(path), "exec")

    ini = (tmp_path / "alembic.ini").read_text()
    assert "script_location = %(here)s/migrations" in ini
    assert "sqlalchemy.url" not in ini.replace("NO sqlalchemy.url", "")
    env_py = (tmp_path / "migrations/env.py").read_text()
    assert "from dbkit.migrate.env import run\n" in env_py and "run(target_metadata=models.metadata)" in env_py
    assert (tmp_path / "migrations/script.py.mako").read_text() == (
        Path(__file__).parents[1] / "migrations/script.py.mako").read_text()

    settings = settings_of(tmp_path)
    assert (settings.schema, settings.rls_model, settings.tenant_claim) == ("app", "tenant", "app.tenant_id")
    assert (settings.role_owner, settings.role_enforce, settings.role_bypass, settings.role_readonly) == (
        "app_owner", ("app_rls",), ("app_full",), ("app_readonly",))
    assert settings.extensions == ("pgcrypto",)
    assert settings.version_table_schema == "dbkit"

    consts = module_constants(tmp_path)
    predicate = Claims("tenant").predicate("tenant", cast="uuid")
    assert consts["MATCH"] == f"tenant_id = {predicate}"
    assert consts["MATCH"] == "tenant_id = (SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
    by_command = {p["command"]: p for p in consts["POLICIES"]}
    assert by_command["SELECT"]["roles"] == ["app_rls", "app_readonly"]
    assert all(by_command[c]["roles"] == ["app_rls"] for c in ("INSERT", "UPDATE", "DELETE"))
    expected = roles.model(settings).grants(["notes"], "app")
    assert [{**g, "target": g["target"]} for g in consts["GRANTS"]] == expected
    text = revision(tmp_path)
    assert "op.create_extension(name)" in text and "op.apply_roles()" in text
    assert "op.enable_rls(TABLE, schema=SCHEMA, force=True)" in text
    assert "CREATE SCHEMA IF NOT EXISTS" in text

    seeds = (tmp_path / "seeds/notes.py").read_text()
    assert '@seeder("notes", columns=("id", "tenant_id", "title", "body", "created_at")' in seeds
    tests = (tmp_path / "tests/test_rls.py").read_text()
    assert "from dbkit.testing import test_rls_escalation, test_rls_matrix  # noqa: F401" in tests
    assert 'as_role("enforce", tenant=mine)' in tests
    models = (tmp_path / "migrations/models.py").read_text()
    assert "SCHEMA = load_settings().schema" in models and '"tenant_id"' in models


def test_jwt_per_user_with_only_enforce_and_bypass_roles_and_custom_password_variables(tmp_path):
    init(tmp_path, InitOptions(**JWT))
    settings = settings_of(tmp_path)
    assert (settings.rls_model, settings.jwt_claims, settings.jwt_user_key, settings.jwt_tenant_key) == (
        "jwt", "request.jwt.claims", "sub", None)
    assert (settings.role_enforce, settings.role_bypass, settings.role_readonly) == (
        ("cognitive_engine_rls",), ("cognitive_engine_full",), ())
    assert settings.password_variable_of("cognitive_engine_rls") == "POSTGRES_USER_RLS_PASS"
    assert settings.password_variable_of("cognitive_engine_full") == "POSTGRES_USER_FULL_PASS"
    model = roles.model(settings)
    assert [r.password_env for r in model.logins()] == ["POSTGRES_USER_RLS_PASS", "POSTGRES_USER_FULL_PASS"]

    consts = module_constants(tmp_path)
    assert consts["MATCH"] == ("user_id = (SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')"
                               "::json ->> 'sub', '')::uuid)")
    assert {p["policy_name"] for p in consts["POLICIES"]} == {f"notes_user_{c}" for c in
                                                               ("select", "insert", "update", "delete")}
    assert all(p["roles"] == ["cognitive_engine_rls"] for p in consts["POLICIES"])
    assert "app_readonly" not in revision(tmp_path)
    assert 'as_role("enforce", user=mine)' in (tmp_path / "tests/test_rls.py").read_text()
    env_example = (tmp_path / ".env.example").read_text()
    assert "# POSTGRES_USER_RLS_PASS=change-me" in env_example
    assert "# POSTGRES_USER_FULL_PASS=change-me" in env_example
    assert "DBKIT_PASSWORD" not in env_example and "READONLY" not in env_example.upper()


def test_jwt_with_a_tenant_key_owns_rows_per_tenant(tmp_path):
    init(tmp_path, InitOptions(rls="jwt", jwt_claims="request.jwt.claims", jwt_user_key="uid",
                               jwt_tenant_key="org_id"))
    settings = settings_of(tmp_path)
    assert (settings.jwt_user_key, settings.jwt_tenant_key) == ("uid", "org_id")
    assert module_constants(tmp_path)["MATCH"].startswith(
        "tenant_id = (SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'org_id'")
    assert 'as_role("enforce", tenant=mine)' in (tmp_path / "tests/test_rls.py").read_text()


def test_no_rls_in_public(tmp_path):
    init(tmp_path, InitOptions(rls="none", schema="public"))
    settings = settings_of(tmp_path)
    assert (settings.schema, settings.rls_model) == ("public", "none")
    text = revision(tmp_path)
    assert "enable_rls" not in text and "create_policy" not in text and "MATCH" not in text
    assert "CREATE SCHEMA" not in text and "DROP SCHEMA" not in text
    assert module_constants(tmp_path)["GRANTS"] == roles.model(settings).grants(["notes"], "public")
    tests = (tmp_path / "tests/test_rls.py").read_text()
    assert "test_rls_matrix" not in tests and "def test_readonly_role_only_reads" in tests
    assert '"tenant_id"' not in (tmp_path / "migrations/models.py").read_text()
    assert '"id", "title", "body", "created_at"' in (tmp_path / "seeds/notes.py").read_text()
    assert "rls" not in tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["dbkit"]


def test_no_rls_without_a_readonly_role_tests_no_readonly_role(tmp_path):
    init(tmp_path, InitOptions(rls="none", readonly_role="none", bypass_role="none"))
    tests = (tmp_path / "tests/test_rls.py").read_text()
    assert "readonly" not in tests.split('"""', 2)[2] and "import pytest" not in tests
    assert settings_of(tmp_path).role_bypass == ()


def test_several_roles_of_a_kind_and_a_custom_claim_and_extensions(tmp_path):
    init(tmp_path, InitOptions(schema="telemetry", enforce_role="rtpm_api,rtpm_ingest", bypass_role="rtpm_worker",
                               readonly_role="rtpm_grafana", owner_role="rtpm_owner", tenant_claim="rtpm.org_id",
                               password_env=("rtpm_ingest=INGEST_DB_PASSWORD",),
                               extensions="pgcrypto,vector,timescaledb"))
    settings = settings_of(tmp_path)
    assert settings.role_enforce == ("rtpm_api", "rtpm_ingest")
    assert settings.password_variable_of("rtpm_ingest") == "INGEST_DB_PASSWORD"
    assert settings.password_variable_of("rtpm_api") == "DBKIT_PASSWORD_RTPM_API"
    assert settings.extensions == ("pgcrypto", "vector", "timescaledb")
    consts = module_constants(tmp_path)
    assert "current_setting('rtpm.org_id', true)" in consts["MATCH"]
    assert consts["EXTENSIONS"] == ("pgcrypto", "vector", "timescaledb")
    by_command = {p["command"]: p["roles"] for p in consts["POLICIES"]}
    assert by_command["SELECT"] == ["rtpm_api", "rtpm_ingest", "rtpm_grafana"]
    assert by_command["DELETE"] == ["rtpm_api", "rtpm_ingest"]


def test_no_secret_in_any_generated_file(tmp_path):
    init(tmp_path, InitOptions(**JWT))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            for line in path.read_text().splitlines():
                if "PASS" in line and "=" in line and "password_env" not in line:
                    assert line.startswith("# ") and line.endswith("=change-me"), (path, line)


# --------------------------------------------------------------------- idempotence, --force, merging

def test_second_run_changes_nothing_and_says_so(tmp_path):
    init(tmp_path, InitOptions())
    before = snapshot(tmp_path)
    again = init(tmp_path, InitOptions())
    assert snapshot(tmp_path) == before
    assert not again.changed and {f.action for f in again.files} == {"skipped"}
    res = run_cli("--dir", str(tmp_path), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "skipped" in res.stdout and "written" not in res.stdout and "nothing to write" in res.stdout
    assert snapshot(tmp_path) == before


def test_existing_files_are_skipped_unless_force(tmp_path):
    init(tmp_path, InitOptions())
    (tmp_path / "seeds/notes.py").write_text("# mine\n")
    other = init(tmp_path, InitOptions(schema="other"))
    actions = {f.path: (f.action, f.reason) for f in other.files}
    assert actions["seeds/notes.py"] == ("skipped", "exists (--force overwrites it)")
    assert actions["pyproject.toml"] == ("skipped", "it has [tool.dbkit] already, which says schema = 'app' (not "
                                         "'other'): the other files follow the options; --force replaces it")
    assert (tmp_path / "seeds/notes.py").read_text() == "# mine\n"
    assert settings_of(tmp_path).schema == "app"

    forced = init(tmp_path, InitOptions(schema="other", force=True))
    actions = {f.path: f.action for f in forced.files}
    assert actions["seeds/notes.py"] == "overwritten" and actions["pyproject.toml"] == "overwritten"
    assert settings_of(tmp_path).schema == "other"
    assert 'SCHEMA = "other"' in revision(tmp_path)
    once = (tmp_path / "pyproject.toml").read_text()
    init(tmp_path, InitOptions(schema="other", force=True))
    assert (tmp_path / "pyproject.toml").read_text() == once  # replacing [tool.dbkit] does not pile up


EXISTING = """\
# my project
[project]
name = "lifebuddy"  # the app
version = "1.0"
dependencies = ["fastapi"]

[tool.ruff]
line-length = 100
"""


def test_merge_into_an_existing_pyproject_keeps_its_content_and_comments(tmp_path):
    (tmp_path / "pyproject.toml").write_text(EXISTING)
    result = init(tmp_path, InitOptions(**JWT))
    assert {f.path: f.action for f in result.files}["pyproject.toml"] == "merged"
    text = (tmp_path / "pyproject.toml").read_text()
    assert text.startswith(EXISTING)
    data = tomllib.loads(text)
    assert data["project"]["dependencies"] == ["fastapi"] and data["tool"]["ruff"] == {"line-length": 100}
    assert data["tool"]["dbkit"]["role_enforce"] == "cognitive_engine_rls"
    assert "pytest" not in data["tool"]  # a merge adds [tool.dbkit] only
    assert settings_of(tmp_path).password_variable_of("cognitive_engine_rls") == "POSTGRES_USER_RLS_PASS"


def test_force_replaces_an_existing_tool_dbkit_and_keeps_everything_around_it(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n# dbkit, old\n[tool.dbkit]\nschema = "old"\n\n[tool.dbkit.roles]\n'
        'read_only_tables = ["orgs"]\n\n# ruff: ours\n[tool.ruff]\nline-length = 99\n')
    skipped = init(tmp_path, InitOptions())
    assert {f.path: f.action for f in skipped.files}["pyproject.toml"] == "skipped"
    assert settings_of(tmp_path).schema == "old"
    init(tmp_path, InitOptions(force=True))
    text = (tmp_path / "pyproject.toml").read_text()
    assert "old" not in text and "orgs" not in text
    assert '[project]\nname = "x"\n\n# ruff: ours\n[tool.ruff]\nline-length = 99\n' in text
    assert tomllib.loads(text)["tool"]["dbkit"]["schema"] == "app"


def test_an_existing_alembic_project_gets_no_example_table_and_plain_alembics_version_table(tmp_path):
    versions = tmp_path / "migrations/versions"
    versions.mkdir(parents=True)
    (versions / "a1b2c3_first.py").write_text("revision = 'a1b2c3'\ndown_revision = None\n")
    (tmp_path / "migrations/env.py").write_text("# theirs\n")
    result = init(tmp_path, InitOptions(rls="none", schema="public"))
    actions = {f.path: f.action for f in result.files}
    for path in ("migrations/models.py", "migrations/versions/0001_initial.py", "seeds/notes.py",
                 "tests/test_rls.py", "migrations/env.py"):
        assert actions[path] == "skipped", path
    assert not (versions / "0001_initial.py").exists() and not (tmp_path / "seeds").exists()
    assert (tmp_path / "migrations/env.py").read_text() == "# theirs\n"
    assert settings_of(tmp_path).version_table_schema == "public"
    assert any("run(target_metadata=" in step for step in result.next_steps)
    assert any(step.startswith("dbkit migrate status") for step in result.next_steps)


# --------------------------------------------------------------------- refusals write nothing

REFUSED = [
    (["--schema", "Bad-Name"], "--schema 'Bad-Name' is not a lower-case SQL identifier"),
    (["--schema", "pg_catalog"], "--schema pg_catalog is reserved"),
    (["--schema", "dbkit"], "--schema dbkit is reserved"),
    (["--rls", "row"], "'row' is not one of"),
    (["--tenant-claim", "tenant_id"], "--tenant-claim 'tenant_id' is not a custom setting name"),
    (["--rls", "jwt", "--jwt-claims", "Request.JWT"], "--jwt-claims 'Request.JWT' is not a custom setting name"),
    (["--rls", "jwt", "--jwt-user-key", "s-u-b"], "--jwt-user-key 's-u-b' is not a JSON key"),
    (["--jwt-user-key", "sub"], "--jwt-user-key applies to --rls jwt only"),
    (["--rls", "none", "--tenant-claim", "app.t"], "--tenant-claim applies to --rls tenant only"),
    (["--enforce-role", "none"], "--enforce-role cannot be none"),
    (["--owner-role", "a,b"], "--owner-role 'a,b' names several roles"),
    (["--owner-role", "pg_owner"], "starts with pg_"),
    (["--enforce-role", "Api"], "--enforce-role 'Api' is not a lower-case SQL identifier"),
    (["--bypass-role", "app_rls"], "--bypass-role app_rls is already the enforce role"),
    (["--enforce-role", "api,api"], "names a role twice"),
    (["--password-env", "app_rls"], "--password-env 'app_rls' is not ROLE=VARIABLE"),
    (["--password-env", "ghost=X"], "names ghost, which is not a role of this project"),
    (["--password-env", "app_owner=X"], "app_owner is the owner role, which cannot log in"),
    (["--password-env", "app_rls=DATABASE_URL"], "DATABASE_URL is a dbkit setting"),
    (["--password-env", "app_rls=1X"], "'1X' is not an environment variable name"),
    (["--password-env", "app_rls=X", "--password-env", "app_full=X"], "X is given for two roles"),
    (["--extensions", "pgcrypto,bad ext"], "--extensions has 'bad ext', not an extension name"),
]


@pytest.mark.parametrize(("args", "message"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_options_are_one_line_exit_2_and_nothing_is_written(tmp_path, args, message):
    project = tmp_path / "project"
    res = run_cli("--dir", str(project), *args, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not project.exists()


def test_refusals_found_late_still_write_nothing(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[project\nname = 1\n")
    with pytest.raises(UsageError, match="cannot be read as TOML"):
        init(tmp_path, InitOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]

    (tmp_path / "pyproject.toml").write_text('[tool]\ndbkit = { schema = "x" }\n')
    with pytest.raises(UsageError, match="cannot merge"):
        init(tmp_path, InitOptions(force=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]

    (tmp_path / "pyproject.toml").unlink()
    (tmp_path / "alembic.ini").mkdir()
    with pytest.raises(UsageError, match="is a directory where dbkit init writes a file"):
        init(tmp_path, InitOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alembic.ini"]

    a_file = tmp_path / "file"
    a_file.write_text("")
    res = run_cli("--dir", str(a_file), cwd=tmp_path)
    assert res.returncode == 2 and "is not a directory" in res.stderr and len(res.stderr.splitlines()) == 1


def test_a_write_that_fails_half_way_puts_everything_back(tmp_path):
    (tmp_path / "alembic.ini").write_text("# theirs\n")
    (tmp_path / "tests").write_text("a file where init wants a directory\n")
    from dbkit.errors import OperationFailed

    with pytest.raises(OperationFailed, match="nothing was written"):
        init(tmp_path, InitOptions(force=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alembic.ini", "tests"]
    assert (tmp_path / "alembic.ini").read_text() == "# theirs\n"


def test_an_env_py_without_dbkits_rails_is_named(tmp_path):
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations/env.py").write_text("from alembic import context\n")
    result = init(tmp_path, InitOptions())
    [env] = [f for f in result.files if f.path == "migrations/env.py"]
    assert env.action == "skipped" and "from dbkit.migrate.env import run" in env.reason


# --------------------------------------------------------------------- the CLI

def test_cli_prints_what_it_wrote_and_the_next_commands(tmp_path):
    res = run_cli(cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(line.split() == ["written", "migrations/versions/0001_initial.py"] for line in lines)
    tail = res.stdout[res.stdout.index("Next"):]
    for command in ("dbkit dev up", "dbkit migrate", "dbkit roles check", "dbkit rls audit", "dbkit seed", "pytest"):
        assert command in tail
    data = json.loads(run_cli("--json", "--force", cwd=tmp_path).stdout)
    assert data["changed"] is False and {f["action"] for f in data["files"]} == {"skipped"}
    assert data["settings"]["schema"] == "app" and data["next_steps"]


def test_dbkit_help_does_not_import_init_and_init_help_stays_light():
    code = ("import sys; from dbkit.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('MODULES', ' '.join(sorted(sys.modules)))")
    for args, listed in ((["--help"], "  init "), (["init", "--help"], "--rls [tenant|jwt|none]")):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
        text, _, modules = out.rpartition("MODULES ")
        assert listed in text
        loaded = set(modules.split())
        assert not {m for m in loaded if m == "dbkit.init" or m.startswith("dbkit.init.")}
        assert not {m.split(".")[0] for m in loaded} & {"sqlalchemy", "alembic", "psycopg", "pydantic", "rich"}


@pytest.mark.parametrize(("location", "versions", "expected", "adopting"), [
    ("%(here)s/alembic", "alembic/versions", "alembic", True),   # what `alembic init alembic` writes
    ("db/alembic", "db/alembic/versions", "db/alembic", True),   # relative to the project
    ("alembic", None, "migrations", False),                       # no versions/: not a project to adopt
    ("myapp:migrations", "migrations/versions", "migrations", True),  # a package resource is no folder here
    ("/elsewhere/alembic", None, "migrations", False),            # outside the project
])
def test_an_existing_alembic_projects_script_folder_is_found(tmp_path, location, versions, expected, adopting):
    (tmp_path / "alembic.ini").write_text(f"[alembic]\nscript_location = {location}\n")
    if versions:
        (tmp_path / versions).mkdir(parents=True)
        (tmp_path / versions / "0001_widgets.py").write_text("revision = '0001'\ndown_revision = None\n")
    result = init(tmp_path, InitOptions(rls="none", schema="public"))
    section = tomllib.loads((tmp_path / "pyproject.toml").read_text())["tool"]["dbkit"]
    assert section["migrations_dir"] == expected
    assert ("version_table_schema" in section) == adopting
    assert (f"# {expected}/env.py: end it with" in "\n".join(result.next_steps)) == adopting
    assert (tmp_path / "alembic.ini").read_text().startswith("[alembic]\nscript_location")  # left as it was
