"""The role and RLS model as configuration: a JWT per-user project with only enforce and bypass roles and
custom password variables, a project without RLS in schema public, several roles of one kind with a
read-only table that is not called ``tenants``.  Each is a real project (pytester, a pytest subprocess) using
dbkit's plugin on the session's server: migrate, the RLS matrix, ``roles check`` and ``rls audit`` agree."""

import json
import textwrap

import pytest

from dbkit.config import load_settings
from dbkit.errors import ConfigError
from dbkit.rls import Claims, claims

pytest_plugins = ["pytester"]

ENV_PY = '''\
from dbkit.migrate.env import run

run(target_metadata=None)
'''
MAKO = '''\
"""${message}

Revision ID: ${up_revision}
"""
from alembic import op
${imports if imports else ""}
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
'''
REVISION = '''\
"""{doc}

Revision ID: 0001
"""

from alembic import op

import dbkit.migrate

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = {tables!r}
POLICIES = {policies!r}


def upgrade() -> None:
    s = dbkit.migrate.settings()
    model = dbkit.migrate.role_model()
    op.apply_roles()
{ddl}
    for table in {rls_tables!r}:
        op.enable_rls(table, schema=s.schema)
    for policy in POLICIES:
        op.create_policy(schema=s.schema, **policy)
    for grant in model.grants(TABLES, s.schema):
        op.grant(**grant)


def downgrade() -> None:
    raise NotImplementedError
'''


def _policies(predicate: str, column: str, table: str, enforce: list[str], readers: list[str],
              read_only: bool = False) -> list[dict]:
    match = f"{column} = {predicate}"
    out = [dict(policy_name=f"{table}_select", table_name=table, command="SELECT", roles=enforce + readers,
                using=match)]
    if not read_only:
        out += [dict(policy_name=f"{table}_insert", table_name=table, command="INSERT", roles=enforce,
                     with_check=match),
                dict(policy_name=f"{table}_update", table_name=table, command="UPDATE", roles=enforce,
                     using=match, with_check=match),
                dict(policy_name=f"{table}_delete", table_name=table, command="DELETE", roles=enforce, using=match)]
    return out


CHECKS = '''\
import psycopg
import pytest

import dbkit.rls
from dbkit import roles
from dbkit.rls._audit import audit
from dbkit.testing import settings_for, test_rls_escalation, test_rls_matrix  # noqa: F401


def test_roles_check_and_audit_agree(dbkit_rls_db, dbkit_settings):
    settings = settings_for(dbkit_settings, dbkit_rls_db)
    drifts = [d.describe() for d in roles.check(settings) if d.severity == "error"]
    assert drifts == []
    report = audit(settings)
    assert report.clean, [f.line() for f in report.findings]
    print("AUDIT:", report.summary_line())
'''


def _project(pytester, monkeypatch, *, pyproject: str, revision: str, seeds: str, tests: str) -> None:
    (pytester.path / "pyproject.toml").write_text(pyproject)
    versions = pytester.path / "migrations" / "versions"
    versions.mkdir(parents=True)
    (pytester.path / "migrations" / "env.py").write_text(ENV_PY)
    (pytester.path / "migrations" / "script.py.mako").write_text(MAKO)
    (versions / "0001_initial.py").write_text(revision)
    if seeds:
        (pytester.path / "seeds").mkdir()
        (pytester.path / "seeds" / "data.py").write_text(seeds)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_app.py").write_text(CHECKS + tests)
    for name in ("DATABASE_URL", "DBKIT_ENV", "DBKIT_PROJECT_DIR", "DBKIT_TEST_SERVER_URL",
                 "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(name, raising=False)
    for name in [k for k in __import__("os").environ if k.startswith(("DBKIT_ROLE_", "DBKIT_RLS", "DBKIT_JWT"))]:
        monkeypatch.delenv(name, raising=False)


def _run(pytester, monkeypatch, dbkit_server, **env: str):
    monkeypatch.setenv("DBKIT_TEST_SERVER_URL", dbkit_server.url("postgres").raw)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "-rs", "-s", "tests/test_app.py")


# --------------------------------------------------------------------- the model itself (no server)

@pytest.mark.unit
def test_claims_of_each_model():
    tenant = Claims()
    assert tenant.predicate("tenant") == "(SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid)"
    assert tenant.assignments("t1", None) == [("app.tenant_id", "t1"), ("app.user_id", "")]
    jwt = Claims("jwt", jwt_tenant_key="org_id")
    assert jwt.predicate("user", "uuid") == (
        "(SELECT NULLIF(NULLIF(current_setting('request.jwt.claims', true), '')::json ->> 'sub', '')::uuid)")
    assert jwt.predicate("tenant", "bigint").endswith("->> 'org_id', '')::bigint)")
    (setting, value), = jwt.assignments(tenant=7, user="u-1")
    assert setting == "request.jwt.claims" and json.loads(value) == {"sub": "u-1", "org_id": "7"}
    assert jwt.assignments() == [("request.jwt.claims", "")]  # nobody: cleared, never inherited
    per_user = Claims("jwt")
    assert per_user.owners() == ("user",) and per_user.default_owner == "user"
    with pytest.raises(ValueError, match="no tenant key"):
        per_user.predicate("tenant")
    with pytest.raises(ValueError, match="no tenant key"):
        per_user.assignments(tenant="t")
    assert Claims("none").owners() == () and Claims("none").assignments("t", "u") == []
    with pytest.raises(ValueError, match="not a type name"):
        tenant.predicate("tenant", cast="uuid); DROP TABLE x; --")


@pytest.mark.unit
def test_settings_accept_json_claims_and_optional_roles(tmp_path):
    env = {"DBKIT_RLS_MODEL": "jwt", "DBKIT_JWT_CLAIMS": "request.jwt.claims", "DBKIT_JWT_TENANT_KEY": "org_id",
           "DBKIT_TENANT_CLAIM": "request.jwt.claim.org", "DBKIT_ROLE_READONLY": "none",
           "DBKIT_ROLE_ENFORCE": "api, ingest"}
    s = load_settings(environ=env, cwd=tmp_path)
    assert claims(s).describe() == "JSON claims in request.jwt.claims (user key sub, tenant key org_id)"
    assert s.role_readonly == () and s.role_enforce == ("api", "ingest")
    for bad, needle in (({"DBKIT_RLS_MODEL": "supabase"}, "not one of tenant, jwt, none"),
                        ({"DBKIT_JWT_USER_KEY": "sub'--"}, "not a JSON key"),
                        ({"DBKIT_ROLE_ENFORCE": "api,API"}, "not a lower-case SQL identifier"),
                        ({"DBKIT_ROLE_BYPASS": "x,x"}, "names a role twice")):
        with pytest.raises(ConfigError, match=needle) as exc:
            load_settings(environ=bad, cwd=tmp_path)
        assert "\n" not in str(exc.value)


@pytest.mark.unit
def test_role_model_with_several_roles_per_kind_and_none(tmp_path):
    from dbkit import roles

    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""\
        [tool.dbkit]
        role_enforce = ["rtpm_api", "rtpm_ingest"]
        role_bypass = "rtpm_worker"
        role_readonly = "none"

        [tool.dbkit.roles]
        read_only_tables = ["orgs"]

        [tool.dbkit.roles.enforce]
        password_env = { rtpm_api = "RTPM_API_PASSWORD", rtpm_ingest = "RTPM_INGEST_PASSWORD" }
        """))
    s = load_settings(environ={"RTPM_API_PASSWORD": "pw-api"}, cwd=tmp_path)
    m = roles.model(s)
    assert [(r.kind, r.name) for r in m.roles] == [
        ("owner", "app_owner"), ("enforce", "rtpm_api"), ("enforce", "rtpm_ingest"), ("bypass", "rtpm_worker")]
    assert [r.password_env for r in m.of("enforce")] == ["RTPM_API_PASSWORD", "RTPM_INGEST_PASSWORD"]
    assert m.first("readonly") is None and m.first("bypass").password_env == "DBKIT_PASSWORD_RTPM_WORKER"
    assert s.password_for("rtpm_api") == "pw-api" and s.password_variable_of("rtpm_ingest") == "RTPM_INGEST_PASSWORD"
    assert m.expected_grants(["orgs"]) == {
        "rtpm_api": {"orgs": frozenset({"SELECT"})}, "rtpm_ingest": {"orgs": frozenset({"SELECT"})},
        "rtpm_worker": {"orgs": frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})}}
    assert m.table_privileges("readonly", "orgs") == ("SELECT",)  # no readonly role, but the kind's default
    kinds = [g["roles"] for g in m.grants(["orgs"], "app")]
    assert kinds == [["rtpm_api", "rtpm_ingest"], ["rtpm_worker"], ["rtpm_api", "rtpm_ingest"], ["rtpm_worker"]]

    for text, needle in (('role_enforce = "none"', "every project needs an enforce role"),
                         ('role_bypass = "app_owner"', "already the owner role"),
                         ('role_enforce = ["a", "b"]\n[tool.dbkit.roles.enforce]\npassword_env = "ONE"',
                          "one variable for 2 enforce roles"),
                         ('[tool.dbkit.roles.enforce]\npassword_env = { nobody = "X" }', "not a enforce role"),
                         ('[tool.dbkit.roles.enforce]\ntables = { orgs = ["TRUNCATE"] }', "not one of SELECT"),
                         ('[tool.dbkit.roles.owner]\ntables = { orgs = ["SELECT"] }', "owns every table")):
        (tmp_path / "pyproject.toml").write_text("[tool.dbkit]\n" + text + "\n")
        with pytest.raises(ConfigError, match=needle):
            roles.model(load_settings(environ={}, cwd=tmp_path))


# --------------------------------------------------------------------- real projects

JWT_PYPROJECT = """\
[project]
name = "lifebuddy-like"
version = "0"

[tool.dbkit]
extensions = ["pgcrypto"]
schema = "app"
rls_model = "jwt"
role_owner = "lb_owner"
role_enforce = "cognitive_engine_rls"
role_bypass = "cognitive_engine_full"
role_readonly = "none"

[tool.dbkit.roles.enforce]
password_env = "POSTGRES_USER_RLS_PASS"

[tool.dbkit.roles.bypass]
password_env = "POSTGRES_USER_FULL_PASS"

[tool.dbkit.rls.tables.profiles]
user_column = "id"   # a profile is owned by its own id (the JWT sub), a defaulted primary key
"""
JWT_SEEDS = '''\
from dbkit.seed import seeder


@seeder("goals", columns=("user_id", "title"), rows={"tiny": 30, "small": 300, "medium": 3000, "large": 30000})
def goals(ctx):
    users = [ctx.uuid() for _ in range(3)]
    for user_id in ctx.spread(users, ctx.rows):
        yield user_id, ctx.rng.choice(["run", "read", "rest"])


@seeder("profiles", columns=("id", "name"), rows={"tiny": 3, "small": 3, "medium": 3, "large": 3})
def profiles(ctx):
    for i in range(ctx.rows):
        yield ctx.uuid(), f"user {i}"
'''
JWT_TESTS = '''

def test_scoped_sets_the_json_claims(dbkit_rls_db, dbkit_server, dbkit_settings):
    from dbkit.testing import connect_as

    with psycopg.connect(dbkit_rls_db.conninfo) as admin:
        user = admin.execute("SELECT user_id FROM app.goals GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
        mine = admin.execute("SELECT count(*) FROM app.goals WHERE user_id = %s", (user,)).fetchone()[0]
    with connect_as(dbkit_server, dbkit_rls_db, dbkit_settings, "enforce") as conn:
        assert conn.info.user == "cognitive_engine_rls"
        with dbkit.rls.scoped(conn, user_id=user):  # the configured model: request.jwt.claims = {"sub": …}
            claims = conn.execute("SELECT current_setting('request.jwt.claims')").fetchone()[0]
            assert claims == '{"sub":"%s"}' % user
            assert conn.execute("SELECT count(*) FROM app.goals").fetchone()[0] == mine > 0
        hostile = "x\\'); DELETE FROM app.goals; --"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="x'\\); DELETE"):  # data, never SQL
            with dbkit.rls.scoped(conn, user_id=hostile):
                conn.execute("SELECT count(*) FROM app.goals").fetchone()
        with dbkit.rls.scoped(conn, user_id=user):
            assert conn.execute("SELECT count(*) FROM app.goals").fetchone()[0] == mine
        with dbkit.rls.scoped(conn):
            assert conn.execute("SELECT count(*) FROM app.goals").fetchone()[0] == 0


def test_as_role_per_user(as_role, dbkit_seeded_db):
    with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
        users = [r[0] for r in admin.execute("SELECT DISTINCT user_id FROM app.goals")]
    with as_role("enforce", user=users[0]) as conn:
        assert {r[0] for r in conn.execute("SELECT user_id FROM app.goals")} == {users[0]}
'''


@pytest.mark.integration
def test_jwt_per_user_project_with_enforce_and_bypass_roles_only(pytester, monkeypatch, dbkit_server):
    predicate = Claims("jwt").predicate("user", "uuid")
    revision = REVISION.format(
        doc="goals per user (JWT sub), profiles owned by their own id", tables=["goals", "profiles"],
        rls_tables=["goals", "profiles"],
        policies=_policies(predicate, "user_id", "goals", ["cognitive_engine_rls"], [])
        + _policies(predicate, "id", "profiles", ["cognitive_engine_rls"], []),
        ddl='    op.execute("CREATE SCHEMA IF NOT EXISTS app")\n'
            '    op.execute("CREATE TABLE app.goals (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), '
            'user_id uuid NOT NULL, title text NOT NULL)")\n'
            '    op.execute("CREATE TABLE app.profiles (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text)")')
    _project(pytester, monkeypatch, pyproject=JWT_PYPROJECT, revision=revision, seeds=JWT_SEEDS, tests=JWT_TESTS)
    result = _run(pytester, monkeypatch, dbkit_server, POSTGRES_USER_RLS_PASS="rls-pw-1",
                  POSTGRES_USER_FULL_PASS="full-pw-2")
    out = result.stdout.str()
    # matrix: enforce x 4 and bypass x 4 run; readonly x 4 skipped (no such role); escalation; the checks
    result.assert_outcomes(passed=12, skipped=4)
    assert "the project has no readonly role" in out, out
    assert "AUDIT: 2 tables checked in app (enforce role cognitive_engine_rls)" in out, out


NONE_PYPROJECT = """\
[project]
name = "studio-like"
version = "0"

[tool.dbkit]
extensions = ["pgcrypto"]
schema = "public"
rls_model = "none"
role_owner = "studio_owner"
role_enforce = "studio_app"
role_bypass = "none"
role_readonly = "none"
"""
NONE_TESTS = '''

def test_the_grants_hold(dbkit_seeded_db, as_role):
    with as_role("enforce") as conn:
        assert conn.info.user == "studio_app"
        conn.execute("INSERT INTO public.documents (title) VALUES ('x')")
        assert conn.execute("SELECT count(*) FROM public.documents").fetchone()[0] >= 1
        assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'documents'").fetchone()[0] \\
            == "studio_owner"
'''


@pytest.mark.integration
def test_project_without_rls_in_schema_public(pytester, monkeypatch, dbkit_server):
    revision = REVISION.format(
        doc="documents in public, no RLS", tables=["documents"], rls_tables=[], policies=[],
        ddl='    op.execute("CREATE TABLE public.documents (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, '
            'title text NOT NULL)")')
    _project(pytester, monkeypatch, pyproject=NONE_PYPROJECT, revision=revision, seeds="", tests=NONE_TESTS)
    result = _run(pytester, monkeypatch, dbkit_server)
    out = result.stdout.str()
    # the checks and the grants test pass; every matrix case and the escalation test say RLS is not used
    result.assert_outcomes(passed=2, skipped=13)
    assert "does not use row-level security (DBKIT_RLS_MODEL=none)" in out, out
    assert "AUDIT: RLS is not used (DBKIT_RLS_MODEL=none)" in out, out


MULTI_PYPROJECT = """\
[project]
name = "telemetry-like"
version = "0"

[tool.dbkit]
extensions = ["pgcrypto"]
schema = "telemetry"
role_owner = "rtpm_owner"
role_enforce = ["rtpm_api", "rtpm_ingest"]
role_bypass = "rtpm_worker"
role_readonly = "rtpm_grafana"

[tool.dbkit.roles]
read_only_tables = ["orgs"]

[tool.dbkit.roles.readonly]
tables = { orgs = [] }  # dashboards read readings only

[tool.dbkit.rls]
tenant_column = "org_id"

[tool.dbkit.rls.tables.orgs]
tenant_column = "id"
"""
MULTI_SEEDS = '''\
from dbkit.seed import seeder


@seeder("orgs", columns=("id", "name"), rows={"tiny": 3, "small": 3, "medium": 3, "large": 3})
def orgs(ctx):
    for i in range(ctx.rows):
        yield ctx.uuid(), f"org {i}"


@seeder("readings", columns=("org_id", "value"), depends_on=("orgs",), rows={"tiny": 40, "small": 400, "medium": 4000, "large": 40000})
def readings(ctx):
    orgs = ctx.ids("orgs")
    for org in ctx.spread(orgs, ctx.rows):
        yield org, ctx.rng.random()
'''


@pytest.mark.integration
def test_several_enforce_roles_and_a_read_only_table_not_named_tenants(pytester, monkeypatch, dbkit_server):
    tenant = Claims().predicate("tenant", "uuid")
    readers = ["rtpm_grafana"]
    enforce = ["rtpm_api", "rtpm_ingest"]
    revision = REVISION.format(
        doc="orgs (read-only for the application) and readings per org", tables=["orgs", "readings"],
        rls_tables=["orgs", "readings"],
        policies=_policies(tenant, "id", "orgs", enforce, readers, read_only=True)
        + _policies(tenant, "org_id", "readings", enforce, readers),
        ddl='    op.execute("CREATE SCHEMA IF NOT EXISTS telemetry")\n'
            '    op.execute("CREATE TABLE telemetry.orgs (id uuid PRIMARY KEY, name text NOT NULL)")\n'
            '    op.execute("CREATE TABLE telemetry.readings (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, '
            'org_id uuid NOT NULL REFERENCES telemetry.orgs, value float8 NOT NULL)")')
    _project(pytester, monkeypatch, pyproject=MULTI_PYPROJECT, revision=revision, seeds=MULTI_SEEDS, tests="")
    result = _run(pytester, monkeypatch, dbkit_server)
    out = result.stdout.str()
    result.assert_outcomes(passed=14)  # 12 matrix cases (both enforce roles), escalation, roles check + audit
    assert "AUDIT: 2 tables checked in telemetry (enforce role rtpm_api, rtpm_ingest)" in out, out


@pytest.mark.unit
def test_per_kind_table_privileges(tmp_path):
    from dbkit import roles

    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("""\
        [tool.dbkit.roles.readonly]
        tables = { audit_log = [], events = ["select"] }

        [tool.dbkit.roles.enforce]
        tables = { audit_log = ["SELECT", "INSERT"] }
        """))
    m = roles.model(load_settings(environ={}, cwd=tmp_path))
    assert m.table_privileges("readonly", "audit_log") == () and m.table_privileges("readonly", "events") == ("SELECT",)
    assert m.table_privileges("enforce", "audit_log") == ("SELECT", "INSERT")
    assert m.table_privileges("enforce", "users") == ("SELECT", "INSERT", "UPDATE", "DELETE")
    grants = m.grants(["audit_log"], "app")
    assert {tuple(g["roles"]): g["privileges"] for g in grants if g.get("object_type") != "SCHEMA"} == {
        ("app_rls",): ["SELECT", "INSERT"], ("app_full",): ["SELECT", "INSERT", "UPDATE", "DELETE"]}
    # default privileges may only grant what every table of the kind gets
    assert m.allowed_default_privileges()["app_full"] == frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
    assert m.allowed_default_privileges()["app_readonly"] == frozenset()
