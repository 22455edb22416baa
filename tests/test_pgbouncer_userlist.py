"""PgBouncer's auth_file from the role model (dbkit.roles._pgbouncer): the SCRAM verifiers dbkit set, proven
with a real PgBouncer (auth_type = scram-sha-256): the right password gets in, a wrong one does not; and
the lines dbkit refuses to write (no superuser, no password, a stale password, an unknown role)."""

import shutil
import socket
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import make_shared_tmpdir, start_pgbouncer
from migrate_helpers import q, settings_for

from dbkit import roles
from dbkit.errors import ConfigError, OperationFailed, UsageError
from dbkit.roles._pgbouncer import auth_file_line, userlist, write_userlist

PYPROJECT = """\
[tool.dbkit]
extensions = ["pgcrypto"]
role_owner = "pgbul_owner"
role_enforce = "pgbul_api"
role_bypass = "none"
role_readonly = "pgbul_grafana"

[tool.dbkit.roles.enforce]
password_env = "PGBUL_API_PASSWORD"
"""
PASSWORDS = {"PGBUL_API_PASSWORD": 'test-only "api" pw', "DBKIT_PASSWORD_PGBUL_GRAFANA": "test-only-grafana"}


@pytest.fixture
def project(tmp_path, pg_url):
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    settings = settings_for(pg_url, tmp_path, **PASSWORDS)
    roles.apply(settings)
    return settings


@pytest.mark.unit
def test_a_line_quotes_as_pgbouncer_reads_it():
    assert auth_file_line('we"ird', "SCRAM-SHA-256$x") == '"we""ird" "SCRAM-SHA-256$x"'


def _start(directory: Path, server, dbname: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (directory / "pgbouncer.ini").write_text(f"""
[databases]
app = host={server.host} port={server.port} dbname={dbname}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {directory}/userlist.txt
pool_mode = transaction
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
""")
    proc = start_pgbouncer(directory / "pgbouncer.ini", port)
    return proc, port


@pytest.mark.integration
def test_pgbouncer_lets_in_the_right_password_only(project, pg_url, dbkit_server):
    text = userlist(project)
    lines = text.splitlines()
    assert [line.split()[0] for line in lines] == ['"pgbul_api"', '"pgbul_grafana"']  # never the owner
    assert all(line.split()[1].startswith('"SCRAM-SHA-256$4096:') for line in lines)
    directory = make_shared_tmpdir("dbkit-userlist-")
    try:
        written = write_userlist(directory / "userlist.txt", text)
        assert written.stat().st_mode & 0o777 == 0o600 and written.read_text() == text
        proc, port = _start(directory, dbkit_server, pg_url.dbname)
        try:
            for user, variable in (("pgbul_api", "PGBUL_API_PASSWORD"), ("pgbul_grafana",
                                                                        "DBKIT_PASSWORD_PGBUL_GRAFANA")):
                with psycopg.connect(host="127.0.0.1", port=port, dbname="app", user=user,
                                     password=PASSWORDS[variable], prepare_threshold=None) as conn:
                    assert conn.execute("SELECT current_user").fetchone()[0] == user
                with pytest.raises(psycopg.OperationalError):
                    psycopg.connect(host="127.0.0.1", port=port, dbname="app", user=user, password="wrong",
                                    connect_timeout=5).close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.integration
def test_what_pgbouncer_could_not_use_is_refused_with_the_fix(project, pg_url, dbkit_server, tmp_path):
    with pytest.raises(UsageError, match="pgbul_owner is not a LOGIN role"):
        userlist(project, roles=["pgbul_owner"])
    # a connection that cannot read pg_authid: the setting to change
    with psycopg.connect(dbkit_server.url(pg_url.dbname, user="pgbul_api").conninfo, autocommit=True) as conn:
        with pytest.raises(ConfigError, match="^DATABASE_URL connects as pgbul_api, who cannot read pg_authid"):
            userlist(project, conn)
    # the password variable changed since `dbkit roles apply`: the file would let the old password in
    changed = settings_for(pg_url, tmp_path, **{**PASSWORDS, "PGBUL_API_PASSWORD": "test-only-new"})
    with pytest.raises(OperationFailed, match="not made from PGBUL_API_PASSWORD.*dbkit roles apply"):
        userlist(changed)
    # no password at all
    q(pg_url, "ALTER ROLE pgbul_grafana PASSWORD NULL")
    with pytest.raises(ConfigError, match="^DBKIT_PASSWORD_PGBUL_GRAFANA was not applied: role pgbul_grafana"):
        userlist(project, roles=["pgbul_grafana"])
    # an md5 password
    q(pg_url, "SET password_encryption = 'md5'; ALTER ROLE pgbul_grafana PASSWORD 'test-only-md5'")
    with pytest.raises(OperationFailed, match="not stored as SCRAM-SHA-256"):
        userlist(project, roles=["pgbul_grafana"])
    with pytest.raises(ConfigError, match="does not exist"):
        write_userlist(tmp_path / "missing" / "userlist.txt", "")


@pytest.mark.integration
def test_the_cli_prints_or_writes_the_auth_file(project, pg_url, tmp_path, dbkit_cli):
    env = {"DATABASE_URL": pg_url.raw, "DBKIT_ENV": "test", "DBKIT_PROJECT_DIR": str(project.project_dir), **PASSWORDS}
    printed = dbkit_cli("roles", "userlist", env=env)
    assert printed.returncode == 0, printed.stderr
    assert [line.split()[0] for line in printed.stdout.splitlines()] == ['"pgbul_api"', '"pgbul_grafana"']
    assert all('"SCRAM-SHA-256$' in line for line in printed.stdout.splitlines())
    assert all(secret not in printed.stdout + printed.stderr for secret in PASSWORDS.values())
    out = tmp_path / "userlist.txt"
    written = dbkit_cli("roles", "userlist", "--output", str(out), "--role", "pgbul_grafana", env=env)
    assert written.returncode == 0 and written.stdout.strip() == f"wrote {out} (1 roles)", written.stderr
    assert out.read_text().startswith('"pgbul_grafana" "SCRAM-SHA-256$') and (out.stat().st_mode & 0o777) == 0o600
    refused = dbkit_cli("roles", "userlist", "--role", "pgbul_owner", env=env)
    assert refused.returncode == 2 and "pgbul_owner is not a LOGIN role" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
