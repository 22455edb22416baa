"""The role model as data: defaults per kind, [tool.dbkit.roles] overrides, generated SQL, extra files."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from migrate_helpers import q

from dbkit import roles
from dbkit.config import load_settings
from dbkit.errors import ConfigError


def project(tmp_path, roles_toml: str = "", files: dict[str, str] | None = None):
    (tmp_path / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.dbkit]\n{roles_toml}\n")
    for name, text in (files or {}).items():
        (tmp_path / "sql" / "roles").mkdir(parents=True, exist_ok=True)
        (tmp_path / "sql" / "roles" / name).write_text(text)
    return tmp_path


def drop(url, prefix: str) -> None:
    for k in roles.KINDS:
        if q(url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (f"{prefix}_{k}",)):
            q(url, f"DROP OWNED BY {prefix}_{k}")
            q(url, f"DROP ROLE {prefix}_{k}")


def settings_in(path, url=None, **env):
    environ = {"DBKIT_ENV": "test", **({"DATABASE_URL": url.raw} if url else {}), **env}
    return load_settings(environ=environ, cwd=path)


@pytest.mark.unit
def test_defaults_per_kind_without_configuration(tmp_path):
    m = roles.model(settings_in(project(tmp_path)))
    assert [r.kind for r in m.roles] == ["owner", "enforce", "bypass", "readonly"]
    assert m.read_only_tables == frozenset()
    # timescaledb is among the default extensions: its jobs run as the owner, which then has LOGIN, never a password
    assert m.owner.login and not m.owner.takes_password and m.owner.password_env is None
    assert [r.name for r in m.logins()] == ["app_rls", "app_full", "app_readonly"]
    assert m.first("bypass").attributes["BYPASSRLS"] and not m.first("enforce").attributes["BYPASSRLS"]
    assert m.first("enforce").password_env == "DBKIT_PASSWORD_APP_RLS"
    dml = frozenset(roles.DML)
    assert m.expected_grants(["orgs"]) == {"app_rls": {"orgs": dml}, "app_full": {"orgs": dml},
                                           "app_readonly": {"orgs": frozenset({"SELECT"})}}


@pytest.mark.unit
def test_overrides_from_pyproject(tmp_path):
    path = project(tmp_path, '[tool.dbkit.roles]\nread_only_tables = ["orgs"]\n'
                             '[tool.dbkit.roles.readonly]\nattributes = "NOINHERIT"\nconnection_limit = 7\n'
                             '[tool.dbkit.roles.enforce]\npassword_env = "POSTGRES_USER_RLS_PASS"\n')
    s = settings_in(path, DBKIT_ROLE_ENFORCE="lifebuddy_rw", POSTGRES_USER_RLS_PASS="s3cret-rls")
    m = roles.model(s)
    assert m.read_only_tables == {"orgs"}
    assert m.expected_grants(["orgs"])["lifebuddy_rw"] == {"orgs": frozenset({"SELECT"})}
    assert m.first("readonly").attributes["INHERIT"] is False and m.first("readonly").connection_limit == 7
    assert m.first("enforce").password_env == "POSTGRES_USER_RLS_PASS"
    assert roles._common.password_of(s, m.first("enforce")) == "s3cret-rls"
    assert "CONNECTION LIMIT 7" in roles.model_statements(m)[-1]


@pytest.mark.unit
@pytest.mark.parametrize("toml, needle", [
    ('[tool.dbkit.roles]\nreadonly_tables = ["x"]\n', "unknown keys readonly_tables"),
    ('[tool.dbkit.roles]\nread_only_tables = "tenants"\n', "not a list"),
    ('[tool.dbkit.roles.enforce]\nattributes = "BYPASSRLS"\n', "only the bypass role"),
    ('[tool.dbkit.roles.owner]\nattributes = "SUPERUSER"\n', "superuser"),
    ('[tool.dbkit.roles.readonly]\nattributes = "VALID UNTIL"\n', "cannot check"),
    ('[tool.dbkit.roles.readonly]\nconnection_limit = "many"\n', "whole number"),
    ('[tool.dbkit.roles.bypass]\npassword_env = "not a var"\n', "environment variable name"),
    ('[tool.dbkit.roles.bypass]\npasword_env = "X"\n', "unknown keys pasword_env"),
])
def test_bad_configuration_is_one_clear_line(tmp_path, toml, needle):
    with pytest.raises(ConfigError) as info:
        roles.model(settings_in(project(tmp_path, toml)))
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_generated_sql_creates_then_corrects_roles(pg_url, tmp_path):
    prefix = f"rm{uuid.uuid4().hex[:8]}"
    env = {f"DBKIT_ROLE_{k.upper()}": f"{prefix}_{k}" for k in roles.KINDS}
    s = settings_in(project(tmp_path, '[tool.dbkit.roles.readonly]\nconnection_limit = 3\n'), pg_url, **env)
    try:
        with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
            for stmt in roles.statements(s):  # what op.apply_roles() and the offline script run
                conn.execute(stmt)
            q(pg_url, f"ALTER ROLE {prefix}_readonly CONNECTION LIMIT 9 NOINHERIT")
            for stmt in roles.statements(s):
                conn.execute(stmt)
        assert q(pg_url, "SELECT rolconnlimit, rolinherit FROM pg_roles WHERE rolname = %s",
                 (f"{prefix}_readonly",)) == [(3, True)]
        assert roles.apply(s).created == [] and not [d for d in roles.check(s) if d.what.startswith("attribute")]
    finally:
        drop(pg_url, prefix)


def test_extra_role_files_run_after_the_model(pg_url, tmp_path):
    prefix = f"rx{uuid.uuid4().hex[:8]}"
    env = {f"DBKIT_ROLE_{k.upper()}": f"{prefix}_{k}" for k in roles.KINDS}
    path = project(tmp_path, files={"50_readonly.sql": "ALTER ROLE {{role}} SET statement_timeout = '5s'"})
    try:
        roles.apply(settings_in(path, pg_url, **env))
        assert q(pg_url, "SELECT rolconfig FROM pg_roles WHERE rolname = %s",
                 (f"{prefix}_readonly",)) == [(["statement_timeout=5s"],)]
    finally:
        drop(pg_url, prefix)


def test_libpq_verifiers_verify_and_log_in(pg_url, tmp_path):
    """Passwords are set with libpq's PQencryptPasswordConn; our check recognises them."""
    prefix = f"rp{uuid.uuid4().hex[:8]}"
    env = {f"DBKIT_ROLE_{k.upper()}": f"{prefix}_{k}" for k in roles.KINDS}
    path = project(tmp_path, '[tool.dbkit.roles.enforce]\npassword_env = "APP_DB_PASS"\n')
    password = "p\u00e4ss w\u00f6rd-" + uuid.uuid4().hex
    s = settings_in(path, pg_url, APP_DB_PASS=password, **env)
    try:
        result = roles.apply(s)
        assert result.password_set == [f"{prefix}_enforce"]
        stored = q(pg_url, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (f"{prefix}_enforce",))[0][0]
        assert stored.startswith("SCRAM-SHA-256$") and roles.scram_verify(password, stored)
        assert roles.apply(s).password_unchanged == [f"{prefix}_enforce"]
        assert not [d for d in roles.check(s) if d.role == f"{prefix}_enforce" and "password" in d.what]
    finally:
        drop(pg_url, prefix)
