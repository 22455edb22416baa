"""The application's own variables ([tool.dbkit.variables]): declared in pyproject.toml, read like dbkit's own
settings (env > .env.<env> > .env), each missing or malformed one a single line, secrets never shown; checked
by `dbkit config check` (every problem, exit 2) and `dbkit check` (service environment); and
`dbkit check --format health`, the compact health-endpoint JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dbkit._env_check import Variable, check_config, check_variables, parse_variables
from dbkit._health_types import Backups, Database, Environment, Report, Service, Storage
from dbkit.config import load_settings
from dbkit.errors import ConfigError

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-Value-That-Must-Never-Print-0123456789"

DECLARATIONS = """
[tool.dbkit]
extensions = ["pgcrypto"]

[tool.dbkit.variables.REDIS_URL]
type = "url"
schemes = ["redis", "rediss"]
purpose = "points at Redis (sessions, queues)"
example = "redis://localhost:6379"

[tool.dbkit.variables.JWT_SECRET]
type = "secret"
min_length = 32
reject = ["change-me-in-production"]
example = "openssl rand -base64 48"

[tool.dbkit.variables.APP_PORT]
type = "port"

[tool.dbkit.variables.DATABASE_POOL_MAX]
type = "int"
min = 1
max = 100

[tool.dbkit.variables.ENABLE_MARKETPLACE]
type = "bool"

[tool.dbkit.variables.JWT_EXPIRES_IN]
type = "duration"

[tool.dbkit.variables.NODE_ENV]
type = "enum"
choices = ["development", "test", "production"]

[tool.dbkit.variables.SUPPORT_EMAIL]
type = "email"
required = false

[tool.dbkit.variables.TWILIO_AUTH_TOKEN]
type = "secret"
required = ["staging", "prod"]
"""

GOOD = {"REDIS_URL": "redis://:pw@localhost:6379/0", "JWT_SECRET": SECRET, "APP_PORT": "3001",
        "DATABASE_POOL_MAX": "10", "ENABLE_MARKETPLACE": "false", "JWT_EXPIRES_IN": "1h", "NODE_ENV": "development"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text(DECLARATIONS)
    return tmp_path


def load(project: Path, environ=None, **kw):
    return load_settings(environ=environ or {}, cwd=project, **kw)


def by_name(report):
    return {v.name: v for v in report.variables}


def test_valid_values_of_every_type_pass_and_optional_ones_may_be_unset(project):
    report = check_variables(load(project, GOOD))
    checks = by_name(report)
    assert report.problems == ()
    assert {n: c.status for n, c in checks.items()} == {**{n: "ok" for n in GOOD}, "SUPPORT_EMAIL": "unset",
                                                       "TWILIO_AUTH_TOKEN": "unset"}
    assert checks["REDIS_URL"].value == "redis://:***@localhost:6379/0"  # a URL's password is masked
    assert checks["JWT_SECRET"].value == "***" and checks["JWT_SECRET"].secret


def test_precedence_environment_then_env_file_then_dotenv(project):
    (project / ".env").write_text("APP_PORT=1000\nNODE_ENV=test\nJWT_EXPIRES_IN=5m\n")
    (project / ".env.staging").write_text("APP_PORT=2000\nNODE_ENV=production\n")
    settings = load(project, {"DBKIT_ENV": "staging", "DATABASE_URL": "postgresql://u@h/d", "APP_PORT": "3000"})
    assert settings.variable_values["APP_PORT"] == ("3000", "env")
    assert settings.variable_values["NODE_ENV"] == ("production", ".env.staging")
    assert settings.variable_values["JWT_EXPIRES_IN"] == ("5m", ".env")
    # empty counts as unset, as for dbkit's own settings: the next source is used
    assert load(project, {"APP_PORT": "  "}).variable_values["APP_PORT"] == ("1000", ".env")
    (project / ".env").write_text("APP_PORT=\n")
    assert "APP_PORT" not in load(project, {"APP_PORT": ""}).variable_values


def test_every_problem_is_one_line_naming_the_variable_its_file_and_an_example(project):
    (project / ".env").write_text(f"JWT_SECRET={SECRET[:10]}\nAPP_PORT=99999\nDATABASE_POOL_MAX=abc\n"
                                  "ENABLE_MARKETPLACE=maybe\nJWT_EXPIRES_IN=soon\nNODE_ENV=dev\n"
                                  "REDIS_URL=http://localhost:6379\nSUPPORT_EMAIL=nobody\n")
    problems = check_variables(load(project)).problems
    assert all("\n" not in p for p in problems) and len(problems) == 8
    text = "\n".join(problems)
    assert ("REDIS_URL (from .env) has the scheme 'http', not redis or rediss; it points at Redis (sessions, "
            "queues); example: redis://localhost:6379") in text
    assert "JWT_SECRET (from .env) is 10 characters long, shorter than 32; example: openssl rand" in text
    assert "APP_PORT (from .env) is 99999, outside 1..65535" in text
    assert "DATABASE_POOL_MAX (from .env) is 'abc', not a whole number" in text
    assert "ENABLE_MARKETPLACE (from .env) is 'maybe', not true or false" in text
    assert "JWT_EXPIRES_IN (from .env) is 'soon', not a duration such as 30s, 15m, 1h or 7d" in text
    assert "NODE_ENV (from .env) is 'dev', not one of development, test, production" in text
    assert "SUPPORT_EMAIL (from .env) is 'nobody', not an email address" in text
    assert SECRET[:10] not in text


def test_missing_required_and_required_only_in_some_environments(project):
    dev = by_name(check_variables(load(project, {k: v for k, v in GOOD.items() if k != "REDIS_URL"})))
    assert dev["REDIS_URL"].status == "missing"
    assert dev["REDIS_URL"].problem == ("REDIS_URL is not set (required when DBKIT_ENV=dev); it points at Redis "
                                        "(sessions, queues); example: redis://localhost:6379")
    assert dev["TWILIO_AUTH_TOKEN"].status == "unset" and dev["TWILIO_AUTH_TOKEN"].problem is None
    staging = load(project, {**GOOD, "DBKIT_ENV": "staging", "DATABASE_URL": "postgresql://u@h/d"})
    assert by_name(check_variables(staging))["TWILIO_AUTH_TOKEN"].problem.startswith(
        "TWILIO_AUTH_TOKEN is not set (required when DBKIT_ENV=staging)")


@pytest.mark.parametrize("value", [
    "change-me-in-production",       # a placeholder
    "short\x00" + SECRET[:5],        # too short, with a control character
    SECRET[:31],                     # one too short
])
def test_a_malformed_secret_is_never_shown(project, value):
    settings = load(project, {**GOOD, "JWT_SECRET": value})
    report = check_config(settings)
    dumped = json.dumps(report.as_dict()) + repr(report)
    assert report.problems and not report.ok
    assert value not in dumped and value[:8] not in dumped
    assert value not in repr(settings) or value in settings.variables[1].reject  # only the declaration names it


def test_a_malformed_url_with_a_password_is_not_quoted(project):
    check = by_name(check_variables(load(project, {**GOOD, "REDIS_URL": f"redis://u:{SECRET}@host:notaport"})))
    assert check["REDIS_URL"].status == "invalid" and SECRET not in check["REDIS_URL"].problem
    assert "not shown: it may hold a password" in check["REDIS_URL"].problem
    assert SECRET not in (check["REDIS_URL"].value or "")


@pytest.mark.parametrize("table, problem", [
    ('[tool.dbkit.variables.REDIS_URL]\ntype = "uri"', "[tool.dbkit.variables.REDIS_URL] type is 'uri', not one of"),
    ('[tool.dbkit.variables.REDIS_URL]\ntyp = "url"', "has unknown key(s) typ"),
    ('[tool.dbkit.variables.MODE]\ntype = "enum"', "is an enum without choices"),
    ('[tool.dbkit.variables.X]\nrequired = ["production"]', "names production, not an environment"),
    ('[tool.dbkit.variables.X]\nmin_length = "8"', "min_length is not a whole number"),
    ('[tool.dbkit.variables.X]\npattern = "("', "pattern is not a regular expression"),
    ('[tool.dbkit.variables.DATABASE_URL]\ntype = "url"', "one of dbkit's own settings (database_url)"),
])
def test_a_malformed_declaration_is_one_line(tmp_path, table, problem):
    (tmp_path / "pyproject.toml").write_text(table + "\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path)
    assert problem in exc.value.message and "\n" not in exc.value.message


def test_types_directly():
    url = Variable("U", "url")
    assert url.problem("https://127.0.0.1:54321") is None and url.problem("localhost:6379") is not None
    assert url.problem("http://host:99x") is not None and url.problem("http:// host") is not None
    assert "hunter2" not in url.problem("redis:/host?password=hunter2")  # a secret query parameter is masked
    duration = Variable("D", "duration")
    assert [duration.problem(v) for v in ("1h", "30s", "15m", "7d", "2 days", "3600", "500ms")] == [None] * 7
    phone = Variable("P", "text", pattern=r"\+[1-9][0-9]{6,14}", required=())
    assert phone.problem("+96890000000") is None and "not of the expected form" in phone.problem("0900")
    assert parse_variables({}) == ()


def test_lenient_settings_list_every_malformed_setting(project):
    environ = {**GOOD, "DBKIT_CONNECT_TIMEOUT": "abc", "DBKIT_DEV_PORT": "70000", "DBKIT_ENV": "test"}
    with pytest.raises(ConfigError):
        load(project, environ)
    report = check_config(load(project, environ, lenient=True))
    assert [p.split(" ", 1)[0] for p in report.problems] == ["DBKIT_CONNECT_TIMEOUT", "DBKIT_DEV_PORT",
                                                             "DATABASE_URL"]
    assert "DATABASE_URL is not set and DBKIT_ENV=test has no embedded cluster" in report.problems[2]


def test_a_likely_typo_in_a_dotenv_file_is_a_warning(project):
    (project / ".env").write_text("REDIS_ULR=redis://localhost:6379\nDBKIT_DEV_PORT=5433\nPOSTGRES_DB=x\n")
    report = check_variables(load(project, {k: v for k, v in GOOD.items() if k != "REDIS_URL"}))
    assert report.warnings == ("REDIS_ULR in .env is not read by dbkit or declared: did you mean REDIS_URL?",)


def test_config_check_cli_lists_every_problem_and_exits_2(project, dbkit_cli):
    dbkit_cli.cwd = project
    (project / ".env").write_text(f"JWT_SECRET={SECRET[:12]}\nAPP_PORT=http\nDBKIT_CONNECT_TIMEOUT=x\n")
    out = dbkit_cli("config", "check", env={k: v for k, v in GOOD.items() if k not in ("JWT_SECRET", "APP_PORT")})
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["DBKIT_CONNECT_TIMEOUT", "JWT_SECRET", "APP_PORT"]
    assert SECRET[:12] not in out.stdout + out.stderr
    assert "3 problem(s)" in out.stdout and "JWT_SECRET" in out.stdout and "***" in out.stdout
    (project / ".env").unlink()
    data = json.loads(dbkit_cli("config", "check", "--json", env=GOOD).stdout)
    assert data["ok"] is True and data["problems"] == [] and {v["name"] for v in data["variables"]} >= set(GOOD)
    assert SECRET not in json.dumps(data)
    shown = {r["variable"]: (r["value"], r["source"]) for r in json.loads(dbkit_cli("config", "show", "--json",
                                                                                  env=GOOD).stdout)}
    assert shown["JWT_SECRET"] == ("***", "env") and shown["APP_PORT"] == ("3001", "env")
    assert shown["SUPPORT_EMAIL"] == ("(unset)", "unset") and shown["DBKIT_ENV"] == ("dev", "default")
    ok = dbkit_cli("config", "check", env=GOOD)
    assert ok.returncode == 0 and "ok: dbkit's settings and 9 declared variable(s) are valid" in ok.stdout


def _report(**services) -> Report:
    worst = max({"ok": 0, "warn": 1, "fail": 2}[s.status] for s in services.values())
    return Report(status=("healthy", "degraded", "unhealthy")[worst], timestamp="2026-11-30T08:00:00+00:00",
                  version="0.1.0", settings=(), services=services)


def test_health_summary_is_the_documented_shape():
    report = _report(
        environment=Environment(status="ok", env="prod", problems=()),
        database=Database(status="ok", url="postgresql://u:***@db/app", embedded=False, latency_ms=0.42),
        storage=Storage(status="ok", target="s3://b/p", latency_ms=12.5),
        backups=Backups(status="warn", complete=1, incomplete=0, max_age_hours=26,
                        hint="the newest backup is 30.0 h old (limit 26 h)"))
    assert report.summary() == {
        "status": "degraded", "timestamp": "2026-11-30T08:00:00+00:00",
        "services": {"environment": {"status": "up"}, "database": {"status": "up", "latency": 0.42},
                     "storage": {"status": "up", "latency": 12.5},
                     "backups": {"status": "up", "warning": "the newest backup is 30.0 h old (limit 26 h)"}},
        "version": "0.1.0"}
    down = _report(environment=Environment(status="fail", env="prod", problems=("REDIS_URL is not set",),
                                           hint="set it"),
                   database=Service(status="fail", error="could not connect", hint="start it"),
                   storage=Storage(status="warn", target="s3://b", error="unreachable"))
    summary = down.summary()
    assert summary["status"] == "unhealthy"
    assert summary["services"]["environment"] == {"status": "down", "error": "REDIS_URL is not set; fix: set it"}
    assert summary["services"]["database"] == {"status": "down", "latency": None,
                                               "error": "could not connect; fix: start it"}
    assert summary["services"]["storage"] == {"status": "up", "latency": None, "warning": "unreachable"}


def test_environment_problems_in_the_table_and_prometheus():
    from dbkit._health import prometheus
    from dbkit._health_types import VariableState
    from dbkit.cli._check import _service_detail

    env = Environment(status="fail", env="test", problems=("REDIS_URL is not set",),
                      variables=(VariableState("REDIS_URL", "url", "missing"), VariableState("APP_PORT", "port", "ok",
                                                                                             ".env.test")))
    assert _service_detail(env) == "DBKIT_ENV=test; 1 of 2 declared variables valid; REDIS_URL is not set"
    assert env.as_dict()["variables"] == [{"name": "REDIS_URL", "type": "url", "status": "missing", "source": None},
                                          {"name": "APP_PORT", "type": "port", "status": "ok", "source": ".env.test"}]
    assert "dbkit_environment_problems 1.0" in prometheus(_report(environment=env))
    assert "variables" not in Environment(status="ok", env="dev", problems=()).as_dict()  # none declared


def test_check_reports_declared_variables_in_the_environment_service(project, dbkit_cli):
    """An unreachable database: the environment service is still checked, and --format health says so."""
    dbkit_cli.cwd = project
    env = {**GOOD, "DBKIT_ENV": "test", "DATABASE_URL": "postgresql://u@127.0.0.1:1/none",
           "DBKIT_CONNECT_TIMEOUT": "1", "DBKIT_BACKUP_URI": str(project / "b"), "JWT_SECRET": "change-me-in-production"}
    out = dbkit_cli("check", "--format", "health", env=env)
    assert out.returncode == 2, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == ["status", "timestamp", "services", "version"] and data["status"] == "unhealthy"
    assert data["services"]["environment"]["status"] == "down"
    assert data["services"]["environment"]["error"].startswith("JWT_SECRET is a placeholder value")
    assert data["services"]["database"]["status"] == "down" and data["services"]["database"]["latency"] is None
    full = json.loads(dbkit_cli("check", "--json", env=env).stdout)["services"]["environment"]
    assert {v["name"]: v["status"] for v in full["variables"]}["JWT_SECRET"] == "invalid"
    assert "change-me-in-production" not in json.dumps(full["variables"])
    both = dbkit_cli("check", "--json", "--format", "health", env=env)
    assert both.returncode == 2 and "give one" in both.stderr and both.stdout == ""
