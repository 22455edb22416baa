import dataclasses
import re
from pathlib import Path

import pytest

from dbkit.config import FIELDS, load_settings, parse_dotenv, settings_table_markdown
from dbkit.errors import ConfigError

pytestmark = pytest.mark.unit


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    return tmp_path


def write(path: Path, text: str) -> None:
    path.write_text(text)


def load(project: Path, environ=None, **flags):
    return load_settings(flags, environ=environ or {}, cwd=project)


def test_defaults(project):
    s = load(project)
    assert s.env == "dev" and s.database_url is None and s.uses_dev_cluster
    assert s.extensions == ("vector", "timescaledb", "pgcrypto")
    assert s.dev_dir == project / ".dbkit"
    assert set(s.sources.values()) == {"default"}


def test_resolution_order_flag_env_envfile_dotenv_pyproject_default(project):
    write(project / "pyproject.toml", '[tool.dbkit]\ndev_database = "from_pyproject"\nconnect_timeout = 7\n'
          'dev_port = 1111\nextensions = ["vector"]\n')
    write(project / ".env", "DBKIT_DEV_DATABASE=from_dotenv\nDBKIT_CONNECT_TIMEOUT=8\nDBKIT_DEV_PORT=2222\n")
    write(project / ".env.dev", "DBKIT_DEV_DATABASE=from_env_dev\nDBKIT_CONNECT_TIMEOUT=9\n")
    environ = {"DBKIT_DEV_DATABASE": "from_environ"}
    s = load(project, environ)
    assert (s.dev_database, s.sources["dev_database"]) == ("from_environ", "env")
    assert (s.connect_timeout, s.sources["connect_timeout"]) == (9, ".env.dev")
    assert (s.dev_port, s.sources["dev_port"]) == (2222, ".env")
    assert (s.extensions, s.sources["extensions"]) == (("vector",), "pyproject")
    assert s.sources["dev_dir"] == "default"
    flagged = load(project, environ, database_url="postgresql://u@h/flag")
    assert flagged.database_url.dbname == "flag" and flagged.sources["database_url"] == "flag"
    assert not flagged.uses_dev_cluster


def test_flag_beats_environment_for_env(project):
    s = load(project, {"DBKIT_ENV": "staging", "DATABASE_URL": "postgresql://u@h/d"}, env="test")
    assert s.env == "test" and s.sources["env"] == "flag"


def test_dbkit_env_from_dotenv_selects_env_file(project):
    write(project / ".env", "DBKIT_ENV=test\nDATABASE_URL=postgresql://u@h/base\n")
    write(project / ".env.test", "DATABASE_URL=postgresql://u@h/testdb\n")
    write(project / ".env.dev", "DATABASE_URL=postgresql://u@h/devdb\n")
    s = load(project)
    assert s.env == "test" and s.database_url.dbname == "testdb" and s.sources["database_url"] == ".env.test"


def test_environment_beats_env_file_and_empty_means_unset(project):
    write(project / ".env", "DATABASE_URL=postgresql://u@h/fromfile\n")
    assert load(project, {"DATABASE_URL": "postgresql://u@h/fromenv"}).database_url.dbname == "fromenv"
    s = load(project, {"DBKIT_CONNECT_TIMEOUT": ""})
    assert s.connect_timeout == 5 and s.sources["connect_timeout"] == "default"


def test_project_dir_is_nearest_pyproject(project):
    sub = project / "a" / "b"
    sub.mkdir(parents=True)
    write(project / ".env", "DBKIT_DEV_DATABASE=found\n")
    s = load_settings(environ={}, cwd=sub)
    assert s.project_dir == project and s.dev_database == "found"
    other = load_settings(environ={"DBKIT_PROJECT_DIR": str(sub)}, cwd=project)
    assert other.project_dir == sub and other.dev_database == "dbkit"


def test_unknown_dbkit_env_is_one_clear_line(project):
    with pytest.raises(ConfigError) as err:
        load(project, {"DBKIT_ENV": "production"})
    msg = str(err.value)
    assert msg.startswith("DBKIT_ENV is 'production', not one of dev, test, staging, prod")
    assert "example: staging" in msg and "\n" not in msg and err.value.exit_code == 2


def test_malformed_database_url_names_variable_and_source(project):
    write(project / ".env", "DATABASE_URL=mysql://root:pw@h/db\n")
    with pytest.raises(ConfigError) as err:
        load(project)
    assert str(err.value).startswith("DATABASE_URL (from .env) is malformed")
    assert ":pw@" not in str(err.value)


def test_missing_database_url_outside_dev(project):
    s = load(project, {"DBKIT_ENV": "prod"})
    assert not s.uses_dev_cluster
    with pytest.raises(ConfigError) as err:
        s.require_database_url()
    msg = str(err.value)
    assert msg.startswith("DATABASE_URL is not set and DBKIT_ENV=prod")
    assert "example: postgresql://" in msg and err.value.exit_code == 2


@pytest.mark.parametrize("value", ["abc", "-1", "1.5"])
def test_bad_integer(project, value):
    with pytest.raises(ConfigError) as err:
        load(project, {"DBKIT_CONNECT_TIMEOUT": value})
    assert str(err.value).startswith("DBKIT_CONNECT_TIMEOUT is ")
    assert "example: 10" in str(err.value)


def test_dev_port_above_range(project):
    with pytest.raises(ConfigError, match="DBKIT_DEV_PORT is 70000, above 65535"):
        load(project, {"DBKIT_DEV_PORT": "70000"})


def test_unknown_pyproject_key(project):
    write(project / "pyproject.toml", "[tool.dbkit]\ndatabse_url = 'x'\n")
    with pytest.raises(ConfigError, match=r"\[tool.dbkit\] databse_url in pyproject.toml is not a known setting"):
        load(project)


def test_pyproject_wrong_type(project):
    write(project / "pyproject.toml", "[tool.dbkit]\nconnect_timeout = true\n")
    with pytest.raises(ConfigError, match=r"\[tool.dbkit\] connect_timeout is True, not a whole number"):
        load(project)


def test_invalid_pyproject_toml(project):
    write(project / "pyproject.toml", "[tool.dbkit\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load(project)


def test_describe_masks_passwords(project):
    s = load(project, {"DATABASE_URL": "postgresql://app:hunter2@h/db"})
    rendered = " ".join(" ".join(row) for row in s.describe())
    assert "hunter2" not in rendered and "postgresql://app:***@h/db" in rendered


def test_parse_dotenv_forms():
    text = """
# comment
export A=1
B = two words  # trailing comment
C="quoted # not a comment"
D='single $NOEXPAND'
E="line\\nbreak"
F=
"""
    assert parse_dotenv(text) == {"A": "1", "B": "two words", "C": "quoted # not a comment",
                                  "D": "single $NOEXPAND", "E": "line\nbreak", "F": ""}


@pytest.mark.parametrize("text, problem", [
    ("not an assignment", ".env:1 is not a KEY=value line"),
    ("A=1\nB='open", ".env:2 has an unterminated ' quote"),
    ("A=1\n\nLONELY\n", ".env:3 is not a KEY=value line"),
])
def test_parse_dotenv_errors(text, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_dotenv(text)


def test_settings_table_lists_every_setting():
    table = settings_table_markdown()
    for f in FIELDS:
        assert f"`{f.env}`" in table


def test_readme_settings_table_is_current():
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert settings_table_markdown() in readme, "regenerate with: python -m dbkit.config"


def test_env_example_lists_every_setting_and_nothing_else():
    text = (Path(__file__).parents[1] / ".env.example").read_text()
    shown = set(re.findall(r"^(?:# )?((?:DBKIT_|S3_|DATABASE_|DIRECT_)\w+)=", text, re.M))
    declared = {f.env for f in FIELDS}
    assert declared - shown == set(), "add them to .env.example"
    assert {v for v in shown - declared if not v.startswith("DBKIT_PASSWORD_")} == set(), "not settings"


def test_empty_value_is_unset_for_text_settings_too(project):
    write(project / "pyproject.toml", '[tool.dbkit]\ns3_endpoint = "http://127.0.0.1:9000"\n')
    s = load(project, {"S3_ENDPOINT": "", "S3_REGION": " ", "DBKIT_DEV_DATABASE": ""})
    assert (s.s3_endpoint, s.sources["s3_endpoint"]) == ("http://127.0.0.1:9000", "pyproject")
    assert (s.s3_region, s.sources["s3_region"]) == (None, "default")
    assert s.dev_database == "dbkit"


def test_env_file_cannot_change_dbkit_env(project):
    write(project / ".env", "DBKIT_ENV=test\n")
    write(project / ".env.test", "DBKIT_ENV=prod\nDBKIT_SCHEMA=from_test\n")
    s = load(project)
    assert (s.env, s.sources["env"], s.schema) == ("test", ".env", "from_test")


def test_malformed_dotenv_line_stops_loading(project):
    write(project / ".env.dev", "DBKIT_SCHEMA=x\nthis is not an assignment\n")
    with pytest.raises(ConfigError, match=r"^\.env\.dev:2 is not a KEY=value line"):
        load(project)


@pytest.mark.parametrize("toml, start", [
    ("pg_bindir = 5", "[tool.dbkit] pg_bindir is 5, not valid"),
    ("migrate_set_role = 'maybe'", "[tool.dbkit] migrate_set_role is 'maybe', not true or false"),
    ("schema = 'App-Schema'", "[tool.dbkit] schema is 'App-Schema', not a lower-case SQL identifier"),
    ("tenant_claim = 'tenant'", "[tool.dbkit] tenant_claim is 'tenant', not a custom setting name"),
    ("lock_timeout = '5 parsecs'", "[tool.dbkit] lock_timeout is '5 parsecs', not a PostgreSQL duration"),
    ("seed_maintenance_work_mem = '1G'", "[tool.dbkit] seed_maintenance_work_mem is '1G', not a PostgreSQL memory"),
    ("s3_addressing_style = 'sideways'", "[tool.dbkit] s3_addressing_style is 'sideways', not one of auto, path"),
])
def test_malformed_setting_is_one_line_not_a_validation_dump(project, toml, start):
    write(project / "pyproject.toml", f"[tool.dbkit]\n{toml}\n")
    with pytest.raises(ConfigError) as err:
        load(project)
    msg = str(err.value)
    assert msg.startswith(start) and "\n" not in msg and "validation error" not in msg and "example: " in msg


def test_typed_values_from_every_kind_of_source(project):
    write(project / "pyproject.toml", "[tool.dbkit]\nmigrate-set-role = false\nlint_ignore = ['a', ' b ']\n"
          "dev_dir = '/abs/dev'\n")
    s = load(project, {"DBKIT_MIGRATIONS_DIR": "db/migrations", "DBKIT_AGE_RECIPIENTS": "age1x, age1y,",
                       "DBKIT_LOCK_TIMEOUT": " 2 min", "S3_ADDRESSING_STYLE": "PATH"})
    assert s.migrate_set_role is False and s.lint_ignore == ("a", "b") and s.dev_dir == Path("/abs/dev")
    assert s.migrations_dir == project / "db" / "migrations" and s.age_recipients == ("age1x", "age1y")
    assert s.lock_timeout == "2min" and s.s3_addressing_style == "path"


def test_secrets_stay_out_of_errors_repr_and_describe(project):
    environ = {"DATABASE_URL": "postgresql://app:hunter2@db/app", "S3_SECRET_KEY": "s3cr3t",
               "DBKIT_AGE_IDENTITY": "AGE-SECRET-KEY-1XYZ", "DBKIT_PASSWORD_APP_RLS": "pw-rls"}
    s = load(project, environ)
    shown = repr(s) + " ".join(" ".join(row) for row in s.describe())
    for secret in environ.values():
        assert secret not in shown
    with pytest.raises(ConfigError) as err:
        load(project, {"DIRECT_DATABASE_URL": "postgresql://app:hunter2@db:port/app"})
    assert "hunter2" not in str(err.value) and str(err.value).startswith("DIRECT_DATABASE_URL is malformed")


def test_role_password_variables_and_their_sources(project):
    write(project / "pyproject.toml", "[tool.dbkit.roles.enforce]\npassword_env = 'APP_DB_PASSWORD'\n")
    write(project / ".env", "DBKIT_PASSWORD_APP_FULL=from-dotenv\nAPP_DB_PASSWORD=custom\nUNRELATED=x\n")
    s = load(project, {"DBKIT_PASSWORD_APP_FULL": "from-env"})
    assert s.passwords == {"DBKIT_PASSWORD_APP_FULL": "from-env", "APP_DB_PASSWORD": "custom"}
    assert (s.sources["DBKIT_PASSWORD_APP_FULL"], s.sources["APP_DB_PASSWORD"]) == ("env", ".env")
    assert s.password_for("app_full") == "from-env" and s.roles_config["enforce"]["password_env"] == "APP_DB_PASSWORD"
    assert ("DBKIT_PASSWORD_APP_FULL", "***", "env") in s.describe()


def test_replace_keeps_working_and_revalidates(project):
    s = load(project, {"DBKIT_DEV_DATABASE": "x"})
    copy = dataclasses.replace(s, database_url=s.database_url, env="test")
    assert copy.env == "test" and copy.dev_database == "x" and copy.dev_dir == s.dev_dir
    with pytest.raises(ValueError):
        dataclasses.replace(s, env="production")
