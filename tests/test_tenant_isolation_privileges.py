"""What row-level security does not filter: TRUNCATE, TRIGGER and REFERENCES on an RLS table, NOTIFY, and the
REPLICATION attribute.

A ``GRANT ALL ON ALL TABLES IN SCHEMA app TO app_rls`` hands the three privileges to the application's role. Each
path is proven open first (another tenant's rows are emptied, seen, probed or streamed), then ``dbkit rls audit``
must fail on it (and the pytest plugin's escalation checks catch the privileges), and the audit is clean again
once it is revoked.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess

import psycopg
import pytest
from migrate_helpers import q, settings_for
from psycopg import errors
from test_tenant_isolation import login, tenants

from dbkit.backup._common import find_program
from dbkit.rls import scoped
from dbkit.rls._audit import audit

pytestmark = pytest.mark.integration


def _finding(settings, table: str):
    (hit,) = [f for f in audit(settings).findings if f.code == "privilege_bypasses_rls" and f.table == table]
    return hit


def _document_of(url, tenant: str) -> str:
    return str(q(url, "SELECT id FROM app.documents WHERE tenant_id = %s ORDER BY id LIMIT 1", (tenant,))[0][0])


def test_truncate_empties_every_tenant_and_fails_the_audit(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    assert audit(settings).clean
    before = q(url, "SELECT count(*), count(DISTINCT tenant_id) FROM app.document_chunks")[0]
    assert before[0] > 0 and before[1] > 1
    q(url, "GRANT TRUNCATE ON app.document_chunks TO app_rls")
    hit = _finding(settings, "document_chunks")
    assert hit.role == "app_rls" and hit.severity == "error"
    assert "holds TRUNCATE on this table" in hit.message and "every tenant's rows" in hit.message
    assert hit.fix.startswith("REVOKE TRUNCATE ON app.document_chunks FROM app_rls")
    with login(dbkit_server, url, settings, "enforce") as conn:  # no claim: the policies show it no row
        assert conn.execute("SELECT count(*) FROM app.document_chunks").fetchone()[0] == 0
        conn.execute("TRUNCATE app.document_chunks")
        conn.commit()
    assert q(url, "SELECT count(*) FROM app.document_chunks")[0][0] == 0  # every tenant's rows are gone
    q(url, "REVOKE TRUNCATE ON app.document_chunks FROM app_rls")
    assert audit(settings).clean


def test_a_trigger_of_the_role_sees_another_tenants_writes_and_fails_the_audit(dbkit_server, dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a, tenant_b = tenants(url)[:2]
    # a plain (SECURITY INVOKER) function every role may execute, as a database may well have
    q(url, "CREATE FUNCTION public.announce_row() RETURNS trigger LANGUAGE plpgsql AS "
           "$$BEGIN PERFORM pg_notify('rows', row_to_json(NEW)::text); RETURN NEW; END$$")
    assert audit(settings).clean
    q(url, "GRANT TRIGGER ON app.documents TO app_rls")
    with login(dbkit_server, url, settings, "enforce") as a, login(dbkit_server, url, settings, "enforce") as b:
        a.autocommit = b.autocommit = True
        with scoped(a, tenant_id=tenant_a):
            a.execute("CREATE TRIGGER announce BEFORE UPDATE ON app.documents FOR EACH ROW "
                      "EXECUTE FUNCTION public.announce_row()")
        a.execute("LISTEN rows")
        with scoped(b, tenant_id=tenant_b):  # tenant B's own request, on its own connection
            assert b.execute("UPDATE app.documents SET title = title WHERE id = %s",
                             (_document_of(url, tenant_b),)).rowcount == 1
        seen = [json.loads(n.payload) for n in a.notifies(timeout=10, stop_after=1)]
    assert seen and seen[0]["tenant_id"] == tenant_b, seen  # tenant A's trigger got tenant B's row
    hit = _finding(settings, "documents")
    assert "holds TRIGGER on this table" in hit.message and "every tenant's writes" in hit.message
    assert hit.fix.startswith("REVOKE TRIGGER ON app.documents FROM app_rls (")
    assert hit.fix.endswith("; drop the triggers it created")
    q(url, "REVOKE TRIGGER ON app.documents FROM app_rls")
    # the trigger it created stays, and still notifies every listener
    assert {f.code for f in audit(settings).findings} == {"notify_from_rls_table"}
    q(url, "DROP TRIGGER announce ON app.documents")
    assert audit(settings).clean


def test_a_foreign_key_of_the_role_probes_and_blocks_another_tenant_and_fails_the_audit(dbkit_server,
                                                                                       dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a, tenant_b = tenants(url)[:2]
    theirs = _document_of(url, tenant_b)
    q(url, "CREATE SCHEMA scratch")  # somewhere the role may create a table of its own
    q(url, "GRANT USAGE, CREATE ON SCHEMA scratch TO app_rls")
    q(url, "GRANT REFERENCES ON app.documents TO app_rls")
    hit = _finding(settings, "documents")
    assert "holds REFERENCES on this table" in hit.message and "which keys other tenants have" in hit.message
    with login(dbkit_server, url, settings, "enforce") as conn:
        conn.autocommit = True
        with scoped(conn, tenant_id=tenant_a):
            assert conn.execute("SELECT count(*) FROM app.documents WHERE id = %s", (theirs,)).fetchone()[0] == 0
            conn.execute("CREATE TABLE scratch.probe (doc uuid REFERENCES app.documents (id))")
            conn.execute("INSERT INTO scratch.probe VALUES (%s)", (theirs,))  # accepted: tenant B has that key
            with pytest.raises(errors.ForeignKeyViolation), conn.transaction():
                conn.execute("INSERT INTO scratch.probe VALUES (gen_random_uuid())")  # refused: no such key
        with scoped(conn, tenant_id=tenant_b), pytest.raises(errors.ForeignKeyViolation), conn.transaction():
            conn.execute("DELETE FROM app.documents WHERE id = %s", (theirs,))  # tenant B may not delete its own
        conn.execute("DROP TABLE scratch.probe")
        with scoped(conn, tenant_id=tenant_b):  # it was the probe that blocked it
            assert conn.execute("DELETE FROM app.documents WHERE id = %s", (theirs,)).rowcount == 1
    q(url, "REVOKE REFERENCES ON app.documents FROM app_rls")
    assert audit(settings).clean


def test_grant_all_is_reported_with_one_finding_per_table(dbkit_seeded_db):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    q(url, "GRANT ALL ON ALL TABLES IN SCHEMA app TO app_rls")
    hits = [f for f in audit(settings).findings if f.code == "privilege_bypasses_rls"]
    assert {f.table for f in hits} >= {"documents", "document_chunks", "events", "users", "tenants"}
    assert all(f.role == "app_rls" and "holds TRUNCATE, REFERENCES, TRIGGER" in f.message for f in hits)
    q(url, "GRANT TRUNCATE ON app.users TO PUBLIC")  # a grant to PUBLIC is revoked from PUBLIC
    q(url, "REVOKE TRUNCATE ON app.users FROM app_rls")
    users = {f.role: f for f in audit(settings).findings if f.code == "privilege_bypasses_rls" and f.table == "users"}
    assert users["app_readonly"].fix.startswith("REVOKE TRUNCATE ON app.users FROM PUBLIC (")  # PUBLIC's only
    users = users["app_rls"]
    assert "holds TRUNCATE, REFERENCES, TRIGGER" in users.message
    assert users.fix.startswith("REVOKE TRUNCATE ON app.users FROM PUBLIC; "
                                "REVOKE REFERENCES, TRIGGER ON app.users FROM app_rls (")
    assert users.fix.endswith("; drop the triggers it created")
    for stmt in users.fix.split(" (")[0].split("; "):
        q(url, stmt)
    assert not [f for f in audit(settings).findings if f.table == "users"]


def test_the_plugin_escalation_checks_try_truncate_and_create_trigger(dbkit_server, dbkit_seeded_db):
    from dbkit.testing._escalation import escalation_failures
    from dbkit.testing._matrix import discover

    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    with psycopg.connect(url.conninfo, autocommit=True) as admin, \
            login(dbkit_server, url, settings, "enforce") as conn:
        tables = discover(admin, settings)
        assert escalation_failures(conn, admin, tables, settings) == []
        admin.execute("GRANT TRUNCATE, TRIGGER ON app.documents TO app_rls")
        failures = escalation_failures(conn, admin, tables, settings)
        assert any("could truncate documents" in f and "SQLSTATE 0A000" in f for f in failures), failures
        assert any("could create a trigger on documents" in f and "(succeeded)" in f for f in failures), failures
        admin.execute("REVOKE TRUNCATE, TRIGGER ON app.documents FROM app_rls")
        assert escalation_failures(conn, admin, tables, settings) == []
        assert q(url, "SELECT count(*) FROM app.documents")[0][0] > 0  # the attempts were rolled back
        assert q(url, "SELECT count(*) FROM pg_trigger WHERE tgname = 'dbkit_escalation'")[0][0] == 0


def test_an_enforce_role_with_replication_streams_every_tenants_rows_and_fails_the_audit(dbkit_server,
                                                                                        dbkit_seeded_db, tmp_path):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a, tenant_b = tenants(url)[:2]
    theirs, marker = _document_of(url, tenant_b), f"dbkit-marker-{tenant_b}"
    assert audit(settings).clean
    q(url, "ALTER ROLE app_rls REPLICATION")  # a role of the server: taken back below
    try:
        hits = [f for f in audit(settings).findings if f.code == "enforce_role_privileged"]
        assert [f.role for f in hits] == ["app_rls"] and "has REPLICATION" in hits[0].message
        assert hits[0].fix.startswith("ALTER ROLE app_rls NOREPLICATION")
        q(url, "SELECT pg_switch_wal()")  # tenant B's write below starts a fresh WAL segment
        with login(dbkit_server, url, settings, "enforce") as conn:
            with scoped(conn, tenant_id=tenant_b):
                conn.execute("UPDATE app.documents SET title = %s WHERE id = %s", (marker, theirs))
            with scoped(conn, tenant_id=tenant_a):  # tenant A's view of it: nothing
                assert conn.execute("SELECT count(*) FROM app.documents WHERE id = %s", (theirs,)).fetchone()[0] == 0
        end = q(url, "SELECT pg_current_wal_lsn()")[0][0]
        q(url, "CHECKPOINT")  # WAL past the end position: the stream stops at once
        wal = tmp_path / "wal"
        wal.mkdir()
        conninfo = f"host={dbkit_server.host} port={dbkit_server.port} user=app_rls dbname=replication"
        done = subprocess.run([find_program(settings, "pg_receivewal"), "-d", conninfo, "-D", str(wal), "-E", end,
                               "--no-loop", "-n"], capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "PGPASSWORD": settings.password_for("app_rls") or ""})
        if "no pg_hba.conf entry for replication connection" in done.stderr:
            pytest.skip("this server's pg_hba.conf allows no replication connection to app_rls")
        assert any(marker.encode() in f.read_bytes() for f in wal.iterdir()), done.stderr  # tenant B's row, as app_rls
    finally:
        q(url, "ALTER ROLE app_rls NOREPLICATION")
    assert audit(settings).clean


def test_a_read_only_role_that_bypasses_rls_fails_the_audit(dbkit_server, dbkit_seeded_db):
    """The read-only role (dashboards, reporting) is subject to RLS too; given BYPASSRLS it left the every-schema
    sweep (which checks non-bypass roles) and nothing reported it."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    assert audit(settings).clean
    q(url, "ALTER ROLE app_readonly BYPASSRLS")  # a role of the server: taken back below
    try:
        with login(dbkit_server, url, settings, "readonly") as conn:  # no claim set, every tenant's rows
            assert conn.execute("SELECT count(DISTINCT tenant_id) FROM app.documents").fetchone()[0] > 1
        report = audit(settings)
        (hit,) = report.findings
        assert (hit.code, hit.role, hit.target) == ("readonly_role_privileged", "app_readonly", "role app_readonly")
        assert hit.message == "the read-only role app_readonly has BYPASSRLS: RLS never applies to it"
        assert hit.fix == "ALTER ROLE app_readonly NOBYPASSRLS" and "app_readonly" not in report.login_roles
    finally:
        q(url, "ALTER ROLE app_readonly NOBYPASSRLS")
    assert audit(settings).clean


@pytest.mark.parametrize("send", ["PERFORM pg_notify('documents', row_to_json(NEW)::text);",
                                  "EXECUTE format('NOTIFY documents, %L', NEW.id);"])
def test_a_trigger_that_notifies_a_row_reaches_every_tenants_listener_and_the_audit_warns(dbkit_server,
                                                                                        dbkit_seeded_db, send):
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a, tenant_b = tenants(url)[:2]
    theirs = _document_of(url, tenant_b)
    # the application's own change feed, made by its owner: no privilege of the enforce role changes
    q(url, "SET ROLE app_owner; CREATE FUNCTION app.documents_changed() RETURNS trigger LANGUAGE plpgsql AS "
           f"$$BEGIN {send} RETURN NEW; END$$; CREATE TRIGGER documents_changed AFTER UPDATE ON app.documents "
           "FOR EACH ROW EXECUTE FUNCTION app.documents_changed()")
    with login(dbkit_server, url, settings, "enforce") as a, login(dbkit_server, url, settings, "enforce") as b:
        a.autocommit = b.autocommit = True
        a.execute("LISTEN documents")  # tenant A's session; LISTEN needs no privilege
        with scoped(b, tenant_id=tenant_b):
            b.execute("UPDATE app.documents SET title = title WHERE id = %s", (theirs,))
        payloads = [n.payload for n in a.notifies(timeout=10, stop_after=1)]
    assert payloads and theirs in payloads[0], payloads  # tenant B's row (or its id) reached tenant A
    report = audit(settings)
    (hit,) = report.findings
    assert (hit.code, hit.severity, hit.target) == ("notify_from_rls_table", "warn", "app.documents")
    assert hit.message.startswith("trigger documents_changed runs app.documents_changed, which sends a NOTIFY "
                                  "payload") and not report.clean
    assert hit.fix.startswith("send a bare wake-up (pg_notify('channel', ''))")
    # the fix: a bare wake-up, after which the listener re-reads through RLS
    q(url, "SET ROLE app_owner; CREATE OR REPLACE FUNCTION app.documents_changed() RETURNS trigger "
           "LANGUAGE plpgsql AS $$BEGIN PERFORM pg_notify('documents', ''); NOTIFY documents; RETURN NEW; END$$")
    assert audit(settings).clean


def test_a_leakproof_function_sees_other_tenants_rows_before_the_policies_and_the_audit_warns(dbkit_server,
                                                                                            dbkit_seeded_db):
    """LEAKPROOF (often set "so the index is used under RLS") lets the planner run a function before the policies'
    filter: one that reports on its argument shows every tenant's values."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a = tenants(url)[0]
    q(url, "CREATE FUNCTION public.has_title(text) RETURNS bool LANGUAGE plpgsql LEAKPROOF COST 0.0001 AS "
           "$$BEGIN RAISE NOTICE 'title %', $1; RETURN $1 IS NOT NULL; END$$")  # only a superuser may do this
    mine = q(url, "SELECT count(*) FROM app.documents WHERE tenant_id = %s", (tenant_a,))[0][0]
    total = q(url, "SELECT count(*) FROM app.documents")[0][0]

    def titles_seen() -> int:
        with login(dbkit_server, url, settings, "enforce") as conn:
            notes: list[str] = []
            conn.add_notice_handler(lambda d: notes.append(d.message_primary))
            with scoped(conn, tenant_id=tenant_a):
                conn.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
                assert conn.execute("SELECT count(*) FROM app.documents WHERE public.has_title(title)"
                                    ).fetchone()[0] == mine  # the result itself is filtered
            return len(notes)

    assert titles_seen() == total > mine  # but the function saw every tenant's titles
    (hit,) = audit(settings).findings
    assert (hit.code, hit.severity, hit.target) == ("leakproof_function", "warn", "public.has_title(text)")
    assert "app_rls" in hit.message and hit.fix.startswith("ALTER FUNCTION public.has_title(text) NOT LEAKPROOF")
    q(url, hit.fix.split(" (")[0])
    assert titles_seen() == mine and audit(settings).clean


def _scratch_of_the_role(url) -> None:
    """A schema where the application's role may create functions and tables (as it may in ``public`` on
    PostgreSQL 14 or older), and which the owner may use."""
    q(url, "CREATE SCHEMA scratch")
    q(url, "GRANT USAGE, CREATE ON SCHEMA scratch TO app_rls; GRANT USAGE ON SCHEMA scratch TO app_owner")


def _sharing_policy_of_the_roles_function(server, url, settings) -> None:
    """A sharing policy the owner wrote on app.documents, calling a function the application's role created (a
    migration run as the wrong role); it shares nothing until replaced."""
    _scratch_of_the_role(url)
    with login(server, url, settings, "enforce") as conn:
        conn.autocommit = True
        conn.execute("CREATE FUNCTION scratch.shared_with_me(uuid) RETURNS bool LANGUAGE sql STABLE AS 'SELECT false'")
    q(url, "SET ROLE app_owner; CREATE POLICY documents_shared ON app.documents FOR SELECT "
           "USING (scratch.shared_with_me(id))")


def _replaceable(settings) -> list:
    return [f for f in audit(settings).findings if f.code == "replaceable_function"]


def test_a_policy_function_the_role_owns_opens_every_tenant_and_fails_the_audit(dbkit_server, dbkit_seeded_db):
    """A sharing policy written by the owner calls a function the application's role created (a migration run as
    the wrong role): replacing the function replaces the policy, with no privilege on the table."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a = tenants(url)[0]
    mine = q(url, "SELECT count(*) FROM app.documents WHERE tenant_id = %s", (tenant_a,))[0][0]
    total = q(url, "SELECT count(*) FROM app.documents")[0][0]
    _sharing_policy_of_the_roles_function(dbkit_server, url, settings)

    def seen(replace_with: str | None = None) -> int:
        with login(dbkit_server, url, settings, "enforce") as conn:
            conn.autocommit = True
            if replace_with:
                conn.execute("CREATE OR REPLACE FUNCTION scratch.shared_with_me(uuid) RETURNS bool LANGUAGE sql "
                             f"STABLE AS 'SELECT {replace_with}'")
            with scoped(conn, tenant_id=tenant_a):
                return conn.execute("SELECT count(*) FROM app.documents").fetchone()[0]

    assert seen() == mine < total
    (hit,) = _replaceable(settings)
    assert (hit.severity, hit.target, hit.role) == ("error", "scratch.shared_with_me(uuid)", "app_rls")
    assert hit.message == ("policy documents_shared of app.documents calls scratch.shared_with_me(uuid), owned by "
                           "app_rls: app_rls can replace that function (CREATE OR REPLACE FUNCTION) and with it "
                           "which rows every tenant sees")
    assert hit.fix == "ALTER FUNCTION scratch.shared_with_me(uuid) OWNER TO app_owner"
    assert seen(replace_with="true") == total  # tenant A now sees every tenant's documents
    assert seen(replace_with="false") == mine
    # a function whose owner the project trusts (a platform's auth service) is accepted by name, with the reason
    trusted = dataclasses.replace(settings, rls={**settings.rls, "replaceable_functions": {
        "scratch.shared_with_me(uuid)": "owned by the sharing service, which we trust like the owner"}})
    report = audit(trusted)
    assert report.clean and report.accepted_replaceable == ("scratch.shared_with_me(uuid)",)
    assert report.summary()["accepted"] == ["scratch.shared_with_me(uuid)"]
    assert report.summary_line().endswith("accepted as reviewed ([tool.dbkit.rls.replaceable_functions]): "
                                          "scratch.shared_with_me(uuid)")
    q(url, hit.fix)
    assert audit(settings).clean
    with pytest.raises(errors.InsufficientPrivilege):
        seen(replace_with="true")


def test_a_trigger_function_the_role_owns_copies_another_tenants_writes_and_fails_the_audit(dbkit_server,
                                                                                           dbkit_seeded_db):
    """The trigger the owner put on the table runs a function the application's role owns: the role turns it
    into a copier of every tenant's writes, and tenant A reads tenant B's row. Revoking TRIGGER does not help."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    tenant_a, tenant_b = tenants(url)[:2]
    theirs = _document_of(url, tenant_b)
    _scratch_of_the_role(url)
    with login(dbkit_server, url, settings, "enforce") as conn:
        conn.autocommit = True
        conn.execute("CREATE FUNCTION scratch.touch() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$BEGIN RETURN NEW; END$$")
    q(url, "SET ROLE app_owner; CREATE TRIGGER documents_touch BEFORE UPDATE ON app.documents FOR EACH ROW "
           "EXECUTE FUNCTION scratch.touch()")
    (hit,) = _replaceable(settings)
    assert (hit.target, hit.role) == ("scratch.touch()", "app_rls")
    assert hit.message.startswith("trigger documents_touch of app.documents calls scratch.touch(), owned by app_rls")
    assert hit.message.endswith("what is done with every tenant's rows, as whoever writes them")
    with login(dbkit_server, url, settings, "enforce") as a, login(dbkit_server, url, settings, "enforce") as b:
        a.autocommit = b.autocommit = True
        with scoped(a, tenant_id=tenant_a):
            a.execute("CREATE TABLE scratch.copies (row jsonb)")
            a.execute("CREATE OR REPLACE FUNCTION scratch.touch() RETURNS trigger LANGUAGE plpgsql AS "
                      "$$BEGIN INSERT INTO scratch.copies VALUES (to_jsonb(NEW)); RETURN NEW; END$$")
        with scoped(b, tenant_id=tenant_b):  # tenant B's own request
            assert b.execute("UPDATE app.documents SET title = title WHERE id = %s", (theirs,)).rowcount == 1
        with scoped(a, tenant_id=tenant_a):
            copied = [r[0] for r in a.execute("SELECT row FROM scratch.copies")]
    assert [r["tenant_id"] for r in copied] == [tenant_b]  # tenant B's row, in tenant A's hands
    q(url, "SET ROLE app_owner; DROP TRIGGER documents_touch ON app.documents")
    assert audit(settings).clean


def test_the_plugin_escalation_checks_try_to_replace_the_functions_a_table_calls(dbkit_server, dbkit_seeded_db):
    from dbkit.testing._escalation import escalation_failures
    from dbkit.testing._matrix import discover

    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _sharing_policy_of_the_roles_function(dbkit_server, url, settings)
    q(url, "COMMENT ON FUNCTION scratch.shared_with_me(uuid) IS 'who may see a shared document'")
    with psycopg.connect(url.conninfo, autocommit=True) as admin, \
            login(dbkit_server, url, settings, "enforce") as conn:
        tables = discover(admin, settings)
        (failure,) = escalation_failures(conn, admin, tables, settings)
        assert failure.startswith("app_rls could replace scratch.shared_with_me(uuid), which documents calls in a "
                                  "policy, trigger, constraint, default or index (succeeded)"), failure
        admin.execute("ALTER FUNCTION scratch.shared_with_me(uuid) OWNER TO app_owner")
        assert escalation_failures(conn, admin, tables, settings) == []
    # the attempt was rolled back
    assert q(url, "SELECT obj_description('scratch.shared_with_me(uuid)'::regprocedure)")[0][0] == \
        "who may see a shared document"


@pytest.mark.parametrize("uses", [
    "ALTER TABLE app.documents ADD CONSTRAINT title_ok CHECK (scratch.f(title))",
    "ALTER TABLE app.documents ADD COLUMN flag bool DEFAULT scratch.f('x')",
    "ALTER TABLE app.documents ADD COLUMN flag bool GENERATED ALWAYS AS (scratch.f(title)) STORED",
    "CREATE INDEX documents_f ON app.documents ((scratch.f(title)))",
    "CREATE POLICY documents_op ON app.documents AS RESTRICTIVE USING (title OPERATOR(scratch.~~~) title)",
])
def test_every_way_an_rls_table_calls_a_replaceable_function_fails_the_audit(dbkit_seeded_db, uses):
    """Constraints, defaults, generated columns and indexes run the function on every tenant's rows; a policy may
    call it through an operator. Owned through a NOLOGIN role the application's role belongs to, it is as much the
    role's to replace; owned by the table's owner, it is not a finding."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _scratch_of_the_role(url)
    q(url, "CREATE ROLE app_helpers NOLOGIN; GRANT app_helpers TO app_rls")  # a role of the server: dropped below
    try:
        q(url, "GRANT USAGE, CREATE ON SCHEMA scratch TO app_helpers; SET ROLE app_helpers; "
               "CREATE FUNCTION scratch.f(text) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT true';"
               "CREATE FUNCTION scratch.g(text, text) RETURNS bool LANGUAGE sql IMMUTABLE AS 'SELECT true';"
               "CREATE OPERATOR scratch.~~~ (LEFTARG = text, RIGHTARG = text, FUNCTION = scratch.g)")
        q(url, "SET ROLE app_owner; " + uses)
        (hit,) = _replaceable(settings)
        function = "scratch.g(text, text)" if "OPERATOR" in uses else "scratch.f(text)"
        assert (hit.target, hit.role, hit.fix) == (function, "app_rls", f"ALTER FUNCTION {function} OWNER TO app_owner")
        assert f"of app.documents calls {function}, owned by app_helpers: app_rls can replace" in hit.message
        q(url, hit.fix)
        assert audit(settings).clean
    finally:
        q(url, "REASSIGN OWNED BY app_helpers TO app_owner; DROP OWNED BY app_helpers; DROP ROLE app_helpers")


def test_one_finding_per_function_names_every_use(dbkit_seeded_db):
    """A function two tables call, in a policy and a trigger: one finding, both uses, both effects."""
    url, settings = dbkit_seeded_db, settings_for(dbkit_seeded_db)
    _scratch_of_the_role(url)
    q(url, "SET ROLE app_rls; CREATE FUNCTION scratch.ok(uuid) RETURNS bool LANGUAGE sql STABLE AS 'SELECT true'; "
           "CREATE FUNCTION scratch.touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$")
    q(url, "SET ROLE app_owner; CREATE POLICY documents_ok ON app.documents AS RESTRICTIVE USING (scratch.ok(id)); "
           "CREATE POLICY users_ok ON app.users AS RESTRICTIVE USING (scratch.ok(id)); "
           "CREATE TRIGGER users_touch BEFORE UPDATE ON app.users FOR EACH ROW EXECUTE FUNCTION scratch.touch()")
    hits = {f.target: f for f in _replaceable(settings)}
    assert set(hits) == {"scratch.ok(uuid)", "scratch.touch()"}
    assert hits["scratch.ok(uuid)"].message.startswith(
        "policy documents_ok of app.documents, policy users_ok of app.users call scratch.ok(uuid), owned by app_rls")
    assert hits["scratch.touch()"].message.endswith("what is done with every tenant's rows, as whoever writes them")
