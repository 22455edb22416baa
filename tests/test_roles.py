"""Roles as code: apply (idempotent, passwords as SCRAM verifiers), list_roles, check (drift).

Roles are cluster-wide and shared by every test database: tests that create, change or
set a password on a role use throw-away role names (``tmp_roles``), dropped afterwards.
Tests on the configured ``app_*`` roles only read them, or change per-database state
(grants, default privileges) in their own fresh database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path

import psycopg
import pytest
from migrate_helpers import q, settings_for
from psycopg import sql

from dbkit import roles
from dbkit.errors import ConfigError

pytestmark = pytest.mark.integration

ENV_KEYS = {"owner": "DBKIT_ROLE_OWNER", "enforce": "DBKIT_ROLE_ENFORCE", "bypass": "DBKIT_ROLE_BYPASS",
            "readonly": "DBKIT_ROLE_READONLY"}


def _drop_roles(url, names) -> None:
    with psycopg.connect(url.conninfo, autocommit=True) as conn:
        for name in names:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def tmp_roles(pg_url):
    """``{kind: unique role name}``; the roles (whatever a test made of them) are dropped afterwards."""
    prefix = f"rt{uuid.uuid4().hex[:10]}"
    names = {kind: f"{prefix}_{kind}" for kind in roles.KINDS}
    yield names
    _drop_roles(pg_url, names.values())


def role_env(names: dict[str, str], **extra: str) -> dict[str, str]:
    return {**{ENV_KEYS[k]: v for k, v in names.items()}, **extra}


def pw_var(name: str) -> str:
    return "DBKIT_PASSWORD_" + name.upper()


class RecordingCursor(psycopg.Cursor):
    """Keeps the text of every statement sent, to prove what never leaves the process."""

    sent: list[str] = []

    def execute(self, query, params=None, **kwargs):
        text = query if isinstance(query, str | bytes) else query.as_string(self)
        type(self).sent.append(text.decode() if isinstance(text, bytes) else text)
        return super().execute(query, params, **kwargs)


# --------------------------------------------------------------------- pure helpers

@pytest.mark.unit
def test_scram_verifier_matches_rfc7677_example():
    """RFC 7677 section 3: user "user", password "pencil": our keys reproduce the server's signature."""
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = roles.scram_sha256_verifier("pencil", salt=salt, iterations=4096)
    iterations, got_salt, stored_key, server_key = roles.parse_scram_verifier(verifier)
    assert (iterations, got_salt) == (4096, salt)
    assert verifier.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth_message = (f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                    f"c=biws,r={nonce}").encode()
    server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
    assert base64.b64encode(server_signature).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    client_signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, client_signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


@pytest.mark.unit
def test_scram_verifier_shape_salt_and_verify():
    a, b = roles.scram_sha256_verifier("s3cret"), roles.scram_sha256_verifier("s3cret")
    assert a != b  # a fresh random salt each time
    for v in (a, b):
        iterations, salt, stored, server = roles.parse_scram_verifier(v)
        assert (iterations, len(salt), len(stored), len(server)) == (4096, 16, 32, 32)
        assert roles.scram_verify("s3cret", v)
        assert not roles.scram_verify("s3cret ", v)
    assert not roles.scram_verify("s3cret", None)
    assert not roles.scram_verify("s3cret", "md5" + "0" * 32)
    assert roles.parse_scram_verifier("SCRAM-SHA-256$x:y$z:w") is None


@pytest.mark.unit
@pytest.mark.parametrize("password, prepared", [
    ("plain ascii\t!", "plain ascii\t!"),      # ASCII: used as is (even control characters)
    ("I\u00adX\u00e9", "IX\u00e9"),             # soft hyphen maps to nothing
    ("a\u00a0b\u00e9", "a b\u00e9"),            # non-ASCII space maps to a space
    ("\u2168", "IX"),                           # NFKC: ROMAN NUMERAL NINE
    ("\u00e9\u200e", "\u00e9\u200e"),           # prohibited (C.8): the original is used
    ("\u05d0a", "\u05d0a"),                     # mixed direction: the original is used
])
def test_saslprep(password, prepared):
    assert roles.saslprep(password) == prepared.encode()


@pytest.mark.unit
def test_declared_roles_read_from_the_role_model():
    declared = roles.model(settings_for(_NoUrl()))
    assert [r.kind for r in declared.roles] == ["owner", "enforce", "bypass", "readonly"]
    assert declared.owner.login and not declared.owner.takes_password and declared.first("enforce").login
    assert declared.first("bypass").attributes["BYPASSRLS"] is True
    assert declared.first("enforce").attributes["BYPASSRLS"] is False
    assert declared.first("enforce").attribute_keywords()[:2] == ["LOGIN", "NOSUPERUSER"]
    attrs, limit = roles.parse_attributes("login noinherit CONNECTION LIMIT 5")
    assert attrs == {"LOGIN": True, "INHERIT": False} and limit == 5
    with pytest.raises(ConfigError, match="VALID"):
        roles.parse_attributes("LOGIN VALID UNTIL 'infinity'", where="x.sql")


@pytest.mark.unit
def test_expected_grants_model():
    model = roles.expected_grants(settings_for(_NoUrl()), ["tenants", "users"])
    dml = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE"})
    assert model == {
        "app_rls": {"tenants": frozenset({"SELECT"}), "users": dml},
        "app_full": {"tenants": dml, "users": dml},
        "app_readonly": {"tenants": frozenset({"SELECT"}), "users": frozenset({"SELECT"})},
    }
    assert roles.allowed_default_privileges(settings_for(_NoUrl())) == {
        "app_rls": frozenset({"SELECT"}), "app_full": dml, "app_readonly": frozenset({"SELECT"})}


class _NoUrl:
    raw = "postgresql://nobody@127.0.0.1:1/none"


# --------------------------------------------------------------------- SCRAM against PostgreSQL

@pytest.mark.parametrize("password", ["x", "correct horse battery staple", "p@ss'w\"rd\\$",
                                      "p\u00e4ssw\u00f6rd", "I\u00adX\u2168\u00a0\u00e9", "\u00e9\u200e",
                                      "\u0645\u0631\u062d\u0628\u0627", "\u05d0a"])
def test_scram_verifier_matches_postgresqls_own(pg_url, password):
    name = f"rt{uuid.uuid4().hex[:10]}_scram"
    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(sql.SQL("CREATE ROLE {} PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        try:
            stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (name,)).fetchone()[0]
        finally:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
    iterations, salt, _, _ = roles.parse_scram_verifier(stored)
    assert roles.scram_sha256_verifier(password, salt=salt, iterations=iterations) == stored
    assert roles.scram_verify(password, stored)
    assert not roles.scram_verify(password + "!", stored)


# --------------------------------------------------------------------- apply

def test_apply_creates_then_is_idempotent(pg_url, tmp_roles):
    settings = settings_for(pg_url, **role_env(tmp_roles))
    first = roles.apply(settings)
    assert sorted(first.created) == sorted(tmp_roles.values())
    assert first.altered == [] and first.password_set == [] and first.changed
    assert len(first.warnings) == 3 and all("keeps its current password" in w for w in first.warnings)
    second = roles.apply(settings)
    assert (second.created, second.altered, second.password_set, second.changed) == ([], [], [], False)
    rows = dict(q(pg_url, "SELECT rolname, rolbypassrls FROM pg_roles WHERE rolname = ANY(%s)",
                  (list(tmp_roles.values()),)))
    assert rows == {tmp_roles["owner"]: False, tmp_roles["enforce"]: False, tmp_roles["bypass"]: True,
                    tmp_roles["readonly"]: False}


def test_apply_on_a_migrated_database_is_idempotent(migrated_url):
    settings = settings_for(migrated_url)
    first = roles.apply(settings)
    # A database copied from a template does not inherit the template's ACL: the owner file
    # grants the owner CREATE on this database again, and that is all that changes.
    assert (first.created, first.password_set) == ([], []) and first.altered in ([], ["app_owner"])
    second = roles.apply(settings)
    assert (second.created, second.altered, second.password_set, second.changed) == ([], [], [], False)
    assert len(second.warnings) == 3


def test_enforce_role_with_bypassrls_is_reported_then_corrected(pg_url, tmp_roles):
    settings = settings_for(pg_url, **role_env(tmp_roles))
    roles.apply(settings)
    enforce = tmp_roles["enforce"]
    q(pg_url, f'ALTER ROLE "{enforce}" BYPASSRLS CREATEDB')
    drifts = [d for d in roles.check(settings) if d.what.startswith("attribute")]
    assert {(d.role, d.what, d.expected, d.actual) for d in drifts} == {
        (enforce, "attribute BYPASSRLS", "NOBYPASSRLS", "BYPASSRLS"),
        (enforce, "attribute CREATEDB", "NOCREATEDB", "CREATEDB"),
    }
    assert all(d.fix == "run `dbkit roles apply`" and d.severity == "error" for d in drifts)
    result = roles.apply(settings)
    assert result.altered == [enforce] and result.created == []
    assert q(pg_url, "SELECT rolbypassrls, rolcreatedb FROM pg_roles WHERE rolname = %s", (enforce,)) == [
        (False, False)]
    assert [d for d in roles.check(settings) if d.what.startswith("attribute")] == []


def test_apply_corrects_attributes_the_file_condition_misses(pg_url, tmp_roles):
    """The attrs line is the truth: CONNECTION LIMIT is not in the files' own drift condition."""
    settings = settings_for(pg_url, **role_env(tmp_roles))
    roles.apply(settings)
    q(pg_url, f'ALTER ROLE "{tmp_roles["readonly"]}" NOINHERIT')
    assert roles.apply(settings).altered == [tmp_roles["readonly"]]
    assert q(pg_url, "SELECT rolinherit FROM pg_roles WHERE rolname = %s", (tmp_roles["readonly"],)) == [(True,)]


def test_apply_sets_passwords_as_scram_verifiers_only_when_changed(pg_url, tmp_roles):
    secrets = {k: f"pw-{k}-{uuid.uuid4().hex}" for k in ("enforce", "bypass", "readonly")}
    env = role_env(tmp_roles, **{pw_var(tmp_roles[k]): v for k, v in secrets.items()})
    settings = settings_for(pg_url, **env)
    RecordingCursor.sent = []
    with psycopg.connect(pg_url.conninfo, autocommit=True, cursor_factory=RecordingCursor) as conn:
        result = roles.apply(settings, conn=conn)
    assert sorted(result.password_set) == sorted(tmp_roles[k] for k in secrets)
    assert result.warnings == []
    sent = "\n".join(RecordingCursor.sent)
    assert "PASSWORD 'SCRAM-SHA-256$4096:" in sent
    for secret in secrets.values():  # nothing the server (or its log) saw holds a password
        assert secret not in sent
        assert secret not in json.dumps(result.as_dict())
    stored = dict(q(pg_url, "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                    (list(tmp_roles.values()),)))
    assert stored[tmp_roles["owner"]] is None  # never a password
    for kind, secret in secrets.items():
        assert q(pg_url, r"SELECT rolpassword ~ '^SCRAM-SHA-256\$4096:' FROM pg_authid WHERE rolname = %s",
                 (tmp_roles[kind],)) == [(True,)]
        assert roles.scram_verify(secret, stored[tmp_roles[kind]])
    assert not [d for d in roles.check(settings) if d.what.startswith("password")]

    again = roles.apply(settings)
    assert again.password_set == [] and sorted(again.password_unchanged) == sorted(result.password_set)
    assert not again.changed
    unchanged = dict(q(pg_url, "SELECT rolname, rolpassword FROM pg_authid WHERE rolname = ANY(%s)",
                       (list(tmp_roles.values()),)))
    assert unchanged == stored  # same salt: nothing was re-sent

    # a new password for one role: check reports it, apply sets only that one
    rotated = settings_for(pg_url, **{**env, pw_var(tmp_roles["enforce"]): "rotated-" + uuid.uuid4().hex})
    drifts = [d for d in roles.check(rotated) if d.what == "password"]
    assert [(d.role, d.fix) for d in drifts] == [(tmp_roles["enforce"], "run `dbkit roles apply`")]
    assert roles.apply(rotated).password_set == [tmp_roles["enforce"]]
    assert not [d for d in roles.check(rotated) if d.what.startswith("password")]


def _server_log(conn) -> Path | None:
    current = conn.execute("SELECT pg_current_logfile()").fetchone()[0]
    data_dir = Path(conn.execute("SHOW data_directory").fetchone()[0])
    candidates = [data_dir / current] if current else []
    candidates += [data_dir.parent / "log" / "postgresql.log", *sorted(data_dir.parent.glob("*.log"))]
    for path in candidates:
        try:
            path.read_bytes()
            return path
        except OSError:
            continue
    return None


def test_password_never_reaches_the_server_log(pg_url, tmp_roles):
    secret = "log-canary-" + uuid.uuid4().hex
    settings = settings_for(pg_url, **role_env(tmp_roles, **{pw_var(tmp_roles["enforce"]): secret}))
    with psycopg.connect(pg_url.conninfo, autocommit=True) as conn:
        log = _server_log(conn)
        if log is None:
            pytest.skip("the test server's log file is not readable from here")
        start = log.stat().st_size
        conn.execute("SET log_statement = 'all'")
        result = roles.apply(settings, conn=conn)
    assert result.password_set == [tmp_roles["enforce"]]
    logged = log.read_bytes()[start:].decode(errors="replace")
    assert f'ALTER ROLE "{tmp_roles["enforce"]}" PASSWORD \'SCRAM-SHA-256$4096:' in logged  # logging works
    assert secret not in logged


def test_prod_without_a_password_variable_refuses_before_changing_anything(pg_url, tmp_roles):
    # 1. nothing exists yet: nothing is created
    env = role_env(tmp_roles, DBKIT_ENV="prod", **{pw_var(tmp_roles["enforce"]): "a", pw_var(tmp_roles["bypass"]): "b"})
    with pytest.raises(ConfigError) as info:
        roles.apply(settings_for(pg_url, **env))
    assert info.value.variable == pw_var(tmp_roles["readonly"])
    assert info.value.exit_code == 2 and "is not set" in str(info.value) and "prod" in str(info.value)
    assert q(pg_url, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(tmp_roles.values()),)) == []
    # 2. drifted roles stay as they are, passwords are not set
    roles.apply(settings_for(pg_url, **role_env(tmp_roles)))
    q(pg_url, f'ALTER ROLE "{tmp_roles["enforce"]}" BYPASSRLS')
    with pytest.raises(ConfigError):
        roles.apply(settings_for(pg_url, **env))
    assert q(pg_url, "SELECT rolbypassrls, rolpassword IS NULL FROM pg_authid WHERE rolname = %s",
             (tmp_roles["enforce"],)) == [(True, True)]
    # check says the same, as an error in prod and a warning elsewhere
    prod = [d for d in roles.check(settings_for(pg_url, **env)) if d.what == "password variable"]
    assert [(d.role, d.severity) for d in prod] == [(tmp_roles["readonly"], "error")]
    test = [d for d in roles.check(settings_for(pg_url, **role_env(tmp_roles))) if d.what == "password variable"]
    assert {d.severity for d in test} == {"warn"} and len(test) == 3
    assert all(d.fix.startswith(f"set {pw_var(d.role)} ") for d in test)


# --------------------------------------------------------------------- list

def test_list_roles_shape(migrated_url):
    infos = roles.list_roles(settings_for(migrated_url))
    assert [(i.kind, i.name) for i in infos] == [("owner", "app_owner"), ("enforce", "app_rls"),
                                                 ("bypass", "app_full"), ("readonly", "app_readonly")]
    data = [i.as_dict() for i in infos]
    json.dumps(data)
    assert set(data[0]) >= {"name", "kind", "exists", "login", "superuser", "bypassrls", "inherit", "createrole",
                            "createdb", "member_of", "has_password", "password_variable"}
    owner, enforce, bypass, readonly = infos
    assert all(i.exists for i in infos)
    assert owner.login is True and owner.password_variable is None and owner.has_password is False
    assert (enforce.login, enforce.bypassrls, enforce.superuser) == (True, False, False)
    assert bypass.bypassrls is True and readonly.bypassrls is False
    assert enforce.password_variable == "DBKIT_PASSWORD_APP_RLS" and enforce.password_variable_set is False
    assert isinstance(enforce.member_of, list) and isinstance(enforce.has_password, bool)


def test_list_roles_missing_role_and_membership(pg_url, tmp_roles):
    settings = settings_for(pg_url, **role_env(tmp_roles))
    assert [i.exists for i in roles.list_roles(settings)] == [False] * 4
    roles.apply(settings)
    q(pg_url, f'GRANT "{tmp_roles["owner"]}" TO "{tmp_roles["enforce"]}"')
    infos = {i.kind: i for i in roles.list_roles(settings)}
    assert infos["enforce"].member_of == [tmp_roles["owner"]]
    assert infos["enforce"].has_password is False
    drift = [d for d in roles.check(settings) if d.what.startswith("membership")]
    assert [(d.role, d.severity, d.fix) for d in drift] == [
        (tmp_roles["enforce"], "error", f'REVOKE {tmp_roles["owner"]} FROM {tmp_roles["enforce"]}')]


# --------------------------------------------------------------------- check

def _errors(drifts):
    return [d for d in drifts if d.severity == "error"]


def test_check_is_clean_right_after_migration(migrated_url):
    drifts = roles.check(settings_for(migrated_url))
    assert _errors(drifts) == []
    assert sorted((d.role, d.what) for d in drifts) == [
        ("app_full", "password variable"), ("app_readonly", "password variable"), ("app_rls", "password variable")]
    json.dumps([d.as_dict() for d in drifts])


def test_roles_use_the_direct_url_not_the_applications_pooled_one(migrated_url):
    """DATABASE_URL is the application's (through PgBouncer, as its own role); roles are the administrator's work
    and connect with DIRECT_DATABASE_URL."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: the pooled URL must not be used
        s.bind(("127.0.0.1", 0))
        unused = s.getsockname()[1]
    pooled = f"postgresql://app_rls@127.0.0.1:{unused}/{migrated_url.dbname}"
    settings = settings_for(migrated_url, DATABASE_URL=pooled, DIRECT_DATABASE_URL=migrated_url.raw)
    assert settings.database_url.port == unused
    assert _errors(roles.check(settings)) == []
    assert [r.name for r in roles.list_roles(settings)][:2] == ["app_owner", "app_rls"]


def test_check_reports_an_extra_table_privilege_with_a_revoke(migrated_url):
    settings = settings_for(migrated_url)
    q(migrated_url, "GRANT DELETE ON app.tenants TO app_readonly")
    drifts = _errors(roles.check(settings))
    assert len(drifts) == 1
    d = drifts[0]
    assert (d.role, d.object) == ("app_readonly", "app.tenants")
    assert "DELETE" in d.what and "app.tenants" in d.what
    assert (d.expected, d.actual) == ("SELECT", "SELECT, DELETE")
    assert d.fix == "REVOKE DELETE ON app.tenants FROM app_readonly"
    q(migrated_url, d.fix)
    assert _errors(roles.check(settings)) == []


def test_check_reports_missing_grants_public_grants_and_ownership(migrated_url):
    settings = settings_for(migrated_url)
    q(migrated_url, "REVOKE INSERT, UPDATE ON app.users FROM app_rls")
    q(migrated_url, "GRANT TRUNCATE ON app.events TO PUBLIC")
    q(migrated_url, "GRANT SELECT ON app.documents TO app_readonly WITH GRANT OPTION")
    q(migrated_url, "CREATE TABLE app.stray (id int)")  # as the superuser, without grants
    drifts = {(d.role, d.what): d for d in _errors(roles.check(settings))}
    assert drifts[("app_rls", "missing privileges on table app.users: INSERT, UPDATE")].fix == (
        "GRANT INSERT, UPDATE ON app.users TO app_rls")
    assert drifts[("PUBLIC", "extra privileges on table app.events: TRUNCATE")].fix == (
        "REVOKE TRUNCATE ON app.events FROM PUBLIC")
    assert drifts[("app_readonly", "grant option on table app.documents: SELECT")].fix == (
        "REVOKE GRANT OPTION FOR SELECT ON app.documents FROM app_readonly")
    owner = drifts[("app_owner", "owner of table app.stray")]
    assert (owner.expected, owner.actual, owner.fix) == ("app_owner", "postgres", "ALTER TABLE app.stray OWNER TO app_owner")
    assert ("app_full", "missing privileges on table app.stray: SELECT, INSERT, UPDATE, DELETE") in drifts
    for d in list(drifts.values()):
        q(migrated_url, d.fix)
    assert _errors(roles.check(settings)) == []


def test_check_reports_default_privileges_the_model_does_not_declare(migrated_url):
    settings = settings_for(migrated_url)
    # within the model (readonly reads every table): not drift
    q(migrated_url, "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app GRANT SELECT ON TABLES TO app_readonly")
    assert _errors(roles.check(settings)) == []
    q(migrated_url, "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app GRANT INSERT, TRUNCATE ON TABLES "
                    "TO app_readonly")
    q(migrated_url, "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner GRANT USAGE ON SEQUENCES TO app_rls")
    drifts = _errors(roles.check(settings))
    by_role = {d.role: d for d in drifts}
    assert set(by_role) == {"app_readonly", "app_rls"}
    ro = by_role["app_readonly"]
    assert ro.what == "default privileges on TABLES created by app_owner in schema app: INSERT, TRUNCATE"
    assert ro.fix == ("ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA app REVOKE INSERT, TRUNCATE ON TABLES "
                      "FROM app_readonly")
    assert by_role["app_rls"].fix == "ALTER DEFAULT PRIVILEGES FOR ROLE app_owner REVOKE USAGE ON SEQUENCES FROM app_rls"
    for d in drifts:
        q(migrated_url, d.fix)
    assert _errors(roles.check(settings)) == []


def test_check_reports_missing_roles_and_schema(pg_url, tmp_roles):
    drifts = roles.check(settings_for(pg_url, **role_env(tmp_roles)))
    assert {(d.role, d.what, d.actual) for d in drifts} == {
        *((name, "role", "missing") for name in tmp_roles.values()),
        (tmp_roles["owner"], "schema app", "missing"),
    }
    fixes = {d.what: d.fix for d in drifts}
    assert fixes == {"role": "run `dbkit roles apply`", "schema app": "run `dbkit migrate`"}


# --------------------------------------------------------------------- without superuser

def test_non_superuser_apply_is_atomic_and_sets_passwords_without_reading_pg_authid(pg_url, tmp_roles):
    from dbkit.errors import MissingDependency

    admin = f"rt{uuid.uuid4().hex[:10]}_admin"
    q(pg_url, f'CREATE ROLE "{admin}" LOGIN CREATEROLE')
    try:
        settings = settings_for(pg_url, **role_env(tmp_roles, **{pw_var(tmp_roles["enforce"]): "s3cret-enforce"}))
        # A CREATEROLE role cannot create the BYPASSRLS role: a clear error, and nothing was created.
        with psycopg.connect(pg_url.conninfo, user=admin, autocommit=True) as conn:
            with pytest.raises(MissingDependency, match=tmp_roles["bypass"]):
                roles.apply(settings, conn=conn)
        assert q(pg_url, "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(tmp_roles.values()),)) == []
        # Once a superuser created the roles, the admin can keep passwords in step (always sent: no pg_authid).
        roles.apply(settings_for(pg_url, **role_env(tmp_roles)))
        with psycopg.connect(pg_url.conninfo, user=admin, autocommit=True) as conn:
            result = roles.apply(settings, conn=conn)
            infos = {i.kind: i for i in roles.list_roles(settings, conn=conn)}
        assert result.password_set == [tmp_roles["enforce"]]
        assert any("pg_authid is not readable" in w for w in result.warnings)
        assert infos["enforce"].has_password is None  # unknown without pg_authid
        stored = q(pg_url, "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (tmp_roles["enforce"],))[0][0]
        assert roles.scram_verify("s3cret-enforce", stored)
    finally:
        _drop_roles(pg_url, [admin])


def test_no_password_warnings_on_the_embedded_dev_cluster(migrated_url):
    """The dev cluster trusts local connections: a missing DBKIT_PASSWORD_* is not worth a warning there."""
    import psycopg
    from migrate_helpers import REPO

    from dbkit.config import load_settings

    dev = load_settings(environ={"DBKIT_ENV": "dev"}, cwd=REPO)
    assert dev.uses_dev_cluster
    with psycopg.connect(migrated_url.conninfo, autocommit=True) as conn:
        result = roles.apply(dev, conn)
        assert not any("is not set" in w for w in result.warnings), result.warnings
        assert not [d for d in roles.check(dev, conn) if d.what == "password variable"]
    remote = settings_for(migrated_url)  # a DATABASE_URL: the variables matter again
    with psycopg.connect(migrated_url.conninfo, autocommit=True) as conn:
        assert any("DBKIT_PASSWORD_APP_RLS is not set" in w for w in roles.apply(remote, conn).warnings)


def test_the_owner_logs_in_only_for_timescaledb_jobs_and_never_has_a_password(pg_url, tmp_roles):
    """With the timescaledb extension the owner has LOGIN (TimescaleDB refuses to run policies and jobs for an
    owner that cannot log in) but never a password: apply removes one set by hand, check reports it."""
    settings = settings_for(pg_url, **role_env(tmp_roles))
    assert "timescaledb" in settings.extensions
    roles.apply(settings)
    owner = tmp_roles["owner"]
    assert q(pg_url, "SELECT rolcanlogin, rolpassword IS NULL FROM pg_authid WHERE rolname = %s", (owner,)) == [
        (True, True)]
    q(pg_url, f'ALTER ROLE "{owner}" PASSWORD \'set-by-hand\'')
    drift = [d for d in roles.check(settings) if d.role == owner and d.what == "password"]
    assert [(d.actual, d.severity) for d in drift] == [("a password", "error")]
    roles.apply(settings)  # password authentication can never log in as it: no password is stored
    assert q(pg_url, "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = %s", (owner,)) == [(True,)]
    assert not [d for d in roles.check(settings) if d.role == owner and d.what == "password"]
    without = settings_for(pg_url, **role_env(tmp_roles), DBKIT_EXTENSIONS="vector,pgcrypto")
    roles.apply(without)  # no TimescaleDB: the owner is NOLOGIN again
    assert q(pg_url, "SELECT rolcanlogin FROM pg_roles WHERE rolname = %s", (owner,)) == [(False,)]
