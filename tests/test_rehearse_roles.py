"""`dbkit migrate rehearse` and the server's roles.

A scratch database shares its server's roles with every other database there, production's included when the
rehearsal runs on production's server. Without ``--change-roles`` neither the role model (the migrate preflight)
nor a revision may change one: the preflight refuses before any revision runs, a revision that changes one fails
and its transaction rolls the change back. Each test proves the role unchanged on the server afterwards.
"""

from __future__ import annotations

import psycopg
import pytest

from dbkit import _db as db
from dbkit.errors import Refused
from dbkit.migrate import _rehearse as rh
from tests.migrate_helpers import q, settings_for
from tests.test_rehearse import HOUR, chain, checksum, ex, invoke, project, scratch_dbs

ROLE = "dbkit_rehearsal_reporting"  # a role of the test server: dropped after each test


@pytest.fixture
def cleanup(dbkit_seeded_db):
    yield
    if _exists(dbkit_seeded_db):
        for url in (dbkit_seeded_db, dbkit_seeded_db.with_dbname("postgres")):  # its grants, where roles apply ran
            q(url, f"DROP OWNED BY {ROLE}")
    q(dbkit_seeded_db, f"DROP ROLE IF EXISTS {ROLE}")
    q(dbkit_seeded_db, "ALTER ROLE app_readonly CONNECTION LIMIT -1")
    q(dbkit_seeded_db, "ALTER ROLE app_rls RESET ALL")


def unfiltered(sql: str) -> str:
    """As the connecting role (a superuser here): revisions run as the owner role, which may not change roles."""
    return f"op.execute_unfiltered({sql!r})"


def _exists(url, role: str = ROLE) -> bool:
    return bool(q(url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)))


def _server(url) -> dict:
    """What the test server holds of the roles these tests touch."""
    return {
        "role": _exists(url),
        "limit": q(url, "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'app_readonly'")[0][0],
        "membership": q(url, "SELECT pg_has_role('app_rls', 'app_readonly', 'MEMBER')")[0][0],
        "settings": q(url, "SELECT rolconfig FROM pg_roles WHERE rolname = 'app_rls'")[0][0],
    }


@pytest.mark.parametrize(("statement", "change"), [
    (f"CREATE ROLE {ROLE} NOLOGIN", f"role {ROLE} created"),
    (f"DO $$ BEGIN CREATE ROLE {ROLE} NOLOGIN; END $$", f"role {ROLE} created"),  # not visible as a statement
    ("ALTER ROLE app_readonly CONNECTION LIMIT 7", "role app_readonly changed"),
    ("GRANT app_readonly TO app_rls", "membership of app_rls in app_readonly created"),
    ("ALTER ROLE app_rls SET work_mem = '64MB'", "settings of app_rls created"),
])
def test_a_revision_that_changes_a_server_role_fails_and_changes_nothing(tmp_path, dbkit_seeded_db, cleanup,
                                                                        statement, change):
    revs = chain(("add_column", ex("ALTER TABLE app.audit_log ADD COLUMN r float8")), ("roles", unfiltered(statement)))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    server, source = _server(dbkit_seeded_db), checksum(dbkit_seeded_db)
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert not report.ok
    assert report.failed == (f"revision 0008 (0008_roles.py) changes the server's roles ({change}), which every "
                             "database of the server shares: rolled back, a rehearsal changes none; rehearse on a "
                             "rehearsal server with --change-roles, or make the change with the role model "
                             "(`dbkit roles apply`)"), report.failed
    assert [r.revision for r in report.revisions][0] == "0007"  # the revision before it ran
    assert _server(dbkit_seeded_db) == server
    assert scratch_dbs(dbkit_seeded_db) == [] and checksum(dbkit_seeded_db) == source
    cli = invoke(settings, "--clone", "--min-size", "0", "--max-lock", "1h")
    assert cli.exit_code == 1
    assert f"FAIL the revision failed on the scratch copy: revision 0008 (0008_roles.py) changes the server's " \
           f"roles ({change})" in cli.stdout
    assert _server(dbkit_seeded_db) == server


def test_a_setting_of_the_scratch_database_alone_is_the_copys_own(tmp_path, dbkit_seeded_db, cleanup):
    """ALTER ROLE … IN DATABASE of the scratch database itself goes with it."""
    local = ("DO $$ BEGIN EXECUTE format('ALTER ROLE app_rls IN DATABASE %I SET work_mem = ''64MB''', "
             "current_database()); END $$")
    settings = settings_for(dbkit_seeded_db, project(tmp_path, chain(("local", unfiltered(local)))))
    server = _server(dbkit_seeded_db)
    report = rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert report.failed is None and report.ok and report.after == ["0007"]
    assert _server(dbkit_seeded_db) == server


def test_change_roles_lets_a_rehearsal_server_change_them(tmp_path, dbkit_seeded_db, cleanup):
    revs = chain(("roles", unfiltered(f"CREATE ROLE {ROLE} NOLOGIN")))
    settings = settings_for(dbkit_seeded_db, project(tmp_path, revs))
    result = invoke(settings, "--clone", "--min-size", "0", "--max-lock", "1h", "--change-roles")
    assert result.exit_code == 0, result.output
    assert _exists(dbkit_seeded_db)  # what --change-roles is for: the role is the server's now


def test_a_role_model_the_server_lacks_is_refused_before_any_revision(tmp_path, dbkit_seeded_db, cleanup):
    """The migrate preflight applies the role model: a read-only role the server does not have yet would be
    created, on production's server too. The rehearsal stops before any revision with one line."""
    settings = settings_for(dbkit_seeded_db, project(tmp_path, chain(("add_column", ex(
        "ALTER TABLE app.audit_log ADD COLUMN r float8")))), DBKIT_ROLE_READONLY=f"app_readonly,{ROLE}")
    source = checksum(dbkit_seeded_db)
    with pytest.raises(Refused) as err:
        rh.rehearse(settings, min_size=0, max_lock=HOUR)
    assert str(err.value).startswith(f"the role model would change the server's roles (role {ROLE} created")
    assert "--change-roles" in err.value.hint and "dbkit roles apply" in err.value.hint
    assert not _exists(dbkit_seeded_db) and scratch_dbs(dbkit_seeded_db) == []
    assert checksum(dbkit_seeded_db) == source
    cli = invoke(settings, "--clone", "--min-size", "0", "--max-lock", "1h")
    assert isinstance(cli.exception, Refused) and cli.exception.exit_code == 5 and "\n" not in str(cli.exception)
    assert not _exists(dbkit_seeded_db)
    changed = invoke(settings, "--clone", "--min-size", "0", "--max-lock", "1h", "--change-roles")
    assert changed.exit_code == 0, changed.output
    assert _exists(dbkit_seeded_db)


def test_what_other_sessions_commit_meanwhile_is_not_the_transactions(dbkit_seeded_db, cleanup):
    """The check compares the transaction's view with another connection's: a role another session creates
    while the revision runs is not blamed on it."""
    other_role = f"{ROLE}_other"
    try:
        with psycopg.connect(dbkit_seeded_db.conninfo) as conn, \
                psycopg.connect(dbkit_seeded_db.conninfo, autocommit=True) as outside:
            assert db.uncommitted_role_changes(conn, outside) == []
            conn.execute(f"CREATE ROLE {ROLE} NOLOGIN")  # in conn's open transaction
            q(dbkit_seeded_db, f"CREATE ROLE {other_role} NOLOGIN")  # another session, committed
            assert db.uncommitted_role_changes(conn, outside) == [f"role {ROLE} created"]
            conn.rollback()
    finally:
        q(dbkit_seeded_db, f"DROP ROLE IF EXISTS {other_role}")
    assert not _exists(dbkit_seeded_db)


def test_a_backup_that_needs_a_role_the_server_lacks_is_refused(tmp_path, dbkit_seeded_db, cleanup):
    """``--from-backup``: the restore creates the role model's roles a backup refers to when the server lacks
    them (a fresh rehearsal server); a rehearsal does so only with --change-roles."""
    from dbkit import roles
    from dbkit.backup import _pipeline as pipeline

    settings = settings_for(dbkit_seeded_db, project(tmp_path / "p", chain(("add_column", ex(
        "ALTER TABLE app.audit_log ADD COLUMN r float8")))), DBKIT_BACKUP_URI=str(tmp_path / "backups"),
        DBKIT_ROLE_READONLY=f"app_readonly,{ROLE}")
    roles.apply(settings)  # the new read-only role
    q(dbkit_seeded_db, f"GRANT SELECT ON app.tenants TO {ROLE}")  # which the backup then refers to
    pipeline.backup(settings)
    q(dbkit_seeded_db, f"DROP OWNED BY {ROLE}")
    q(dbkit_seeded_db, f"DROP ROLE {ROLE}")  # this server is not the one the backup came from
    result = invoke(settings, "--min-size", "0", "--max-lock", "1h")
    assert isinstance(result.exception, Refused), result.output
    assert str(result.exception).startswith(f"the backup needs roles this server lacks ({ROLE}): a rehearsal "
                                            "changes no role of the server")
    assert "--change-roles" in result.exception.hint
    assert not _exists(dbkit_seeded_db) and scratch_dbs(dbkit_seeded_db) == []
    changed = invoke(settings, "--min-size", "0", "--max-lock", "1h", "--change-roles")
    assert changed.exit_code == 0, changed.output
    assert _exists(dbkit_seeded_db) and scratch_dbs(dbkit_seeded_db) == []
