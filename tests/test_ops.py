"""dbkit's Alembic operations: the SQL they emit, their reverses, and their effect on a real server."""

import io

import psycopg
import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from migrate_helpers import q
from sqlalchemy import create_engine, pool

import dbkit.migrate._ops as ops


def offline(fn) -> str:
    """Run ``fn(op)`` in Alembic's offline (--sql) mode and return the SQL it wrote."""
    buf = io.StringIO()
    ctx = MigrationContext.configure(dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buf})
    fn(Operations(ctx))
    return " ".join(buf.getvalue().split())


@pytest.mark.unit
class TestOfflineSQL:
    def test_extensions_run_as_session_user(self):
        sql = offline(lambda op: op.create_extension("vector"))
        assert sql == 'SET ROLE NONE; CREATE EXTENSION IF NOT EXISTS vector; SET ROLE app_owner;'
        assert "DROP EXTENSION IF EXISTS vector CASCADE" in offline(lambda op: op.drop_extension("vector", cascade=True))

    def test_hypertable(self):
        sql = offline(lambda op: op.create_hypertable("events", "time", schema="app", chunk_interval="1 day",
                                                      migrate_data=True))
        assert sql == ("SELECT create_hypertable('app.events', by_range('time', INTERVAL '1 day'), "
                       "migrate_data => true, if_not_exists => true);")

    def test_roles_given_as_settings_tuples_are_flattened_and_empty_ones_do_nothing(self):
        sql = offline(lambda op: op.grant(["SELECT"], "notes", schema="app", roles=[("app_rls", "api"), ()]))
        assert sql == "GRANT SELECT ON TABLE app.notes TO app_rls, api;"
        assert offline(lambda op: op.grant(["SELECT"], "notes", schema="app", roles=())) == ""
        assert offline(lambda op: op.revoke(["SELECT"], "notes", schema="app", roles=[()])) == ""
        assert offline(lambda op: op.create_policy("p", "notes", schema="app", roles=(), using="true")) == ""
        sql = offline(lambda op: op.create_policy("p", "notes", schema="app", roles=[("a", "b"), "a"], using="x"))
        assert sql == "CREATE POLICY p ON app.notes AS PERMISSIVE FOR ALL TO a, b USING (x);"

    def test_a_colon_in_a_quoted_name_is_sql_not_a_bind_parameter(self):
        # SQLAlchemy's text() reads " :b" as a bind parameter; offline it wrote "a %(b)s", online it failed
        assert offline(lambda op: op.grant(["SELECT"], "a :b", roles=["r"])) == 'GRANT SELECT ON TABLE "a :b" TO r;'
        assert offline(lambda op: op.create_hypertable("e :x", "t :y")) == (
            """SELECT create_hypertable('"e :x"', by_range('t :y'), if_not_exists => true);""")
        assert offline(lambda op: op.drop_policy("p :z", "t")) == 'DROP POLICY IF EXISTS "p :z" ON t;'
        assert offline(lambda op: op.disable_rls("t :w")) == (
            'ALTER TABLE "t :w" NO FORCE ROW LEVEL SECURITY; ALTER TABLE "t :w" DISABLE ROW LEVEL SECURITY;')
        assert offline(lambda op: op.drop_extension("e :w")) == (
            'SET ROLE NONE; DROP EXTENSION IF EXISTS "e :w"; SET ROLE app_owner;')

    def test_grant_to_public_is_the_keyword_not_a_role_named_public(self):
        assert offline(lambda op: op.grant(["SELECT"], "t", roles=["PUBLIC", "Ops"])) == (
            'GRANT SELECT ON TABLE t TO PUBLIC, "Ops";')
        assert offline(lambda op: op.revoke(["SELECT"], "t", roles=["public"])) == "REVOKE SELECT ON TABLE t FROM public;"

    def test_rls_and_policy(self):
        assert offline(lambda op: op.enable_rls("documents", schema="app")) == (
            "ALTER TABLE app.documents ENABLE ROW LEVEL SECURITY; ALTER TABLE app.documents FORCE ROW LEVEL SECURITY;")
        sql = offline(lambda op: op.create_policy("p", "documents", schema="app", command="update",
                                                  roles=["app_rls", "PUBLIC"], using="a = 1", with_check="a = 1"))
        assert sql == ("CREATE POLICY p ON app.documents AS PERMISSIVE FOR UPDATE TO app_rls, PUBLIC "
                       "USING (a = 1) WITH CHECK (a = 1);")
        assert offline(lambda op: op.drop_policy("p", "documents", schema="app")) == (
            "DROP POLICY IF EXISTS p ON app.documents;")

    def test_index_concurrently_is_outside_the_transaction(self):
        sql = offline(lambda op: op.create_index_concurrently(
            "d_idx", "documents", ["tenant_id", "created_at DESC", "lower(title)"], schema="app",
            where="title <> ''"))
        assert sql == ("COMMIT; CREATE INDEX CONCURRENTLY IF NOT EXISTS d_idx ON app.documents "
                       "(tenant_id, created_at DESC, (lower(title))) WHERE title <> ''; BEGIN;")

    def test_vector_index(self):
        sql = offline(lambda op: op.create_vector_index("document_chunks", "embedding", schema="app",
                                                        method="ivfflat", ops="vector_l2_ops", with_={"lists": 100}))
        assert sql == ("COMMIT; CREATE INDEX CONCURRENTLY IF NOT EXISTS document_chunks_embedding_ivfflat_idx ON "
                       "app.document_chunks USING ivfflat (embedding vector_l2_ops) WITH (lists = 100); BEGIN;")

    def test_grants(self):
        assert offline(lambda op: op.grant(["select", "insert"], "documents", roles=["app_rls"], schema="app")) == (
            "GRANT SELECT, INSERT ON TABLE app.documents TO app_rls;")
        assert offline(lambda op: op.revoke(["USAGE"], "app", roles=["a", "b"], object_type="schema")) == (
            "REVOKE USAGE ON SCHEMA app FROM a, b;")

    def test_reverse_pairs(self):
        pairs = [
            (ops.CreateExtensionOp("vector"), ops.DropExtensionOp),
            (ops.CreateHypertableOp("t", "time", migrate_data=True), ops.RevertHypertableOp),
            (ops.EnableRLSOp("t"), ops.DisableRLSOp),
            (ops.CreatePolicyOp("p", "t", using="true"), ops.DropPolicyOp),
            (ops.CreateIndexConcurrentlyOp("i", "t", ["c"]), ops.DropIndexConcurrentlyOp),
            (ops.CreateVectorIndexOp("t", "e"), ops.DropIndexConcurrentlyOp),
            (ops.GrantOp(["SELECT"], "t", ["r"]), ops.RevokeOp),
            (ops.ApplyRolesOp(), ops.DropRolesOp),
        ]
        for forward, reverse_cls in pairs:
            back = forward.reverse()
            assert isinstance(back, reverse_cls)
            again = back.reverse()
            assert vars(again) == vars(forward)

    def test_invalid_arguments(self):
        with pytest.raises(ValueError, match="policy command must be one of"):
            ops.CreatePolicyOp("p", "t", command="TRUNCATE")
        with pytest.raises(ValueError, match="INSERT policy takes only with_check"):
            ops.CreatePolicyOp("p", "t", command="INSERT", using="x")
        with pytest.raises(ValueError, match="vector index method"):
            ops.CreateVectorIndexOp("t", "e", method="btree")
        with pytest.raises(ValueError, match="cannot reverse drop_policy"):
            ops.DropPolicyOp("p", "t").reverse()


@pytest.fixture
def online(pg_url):
    """Operations on a real database (the test's fresh copy), autocommit between ops."""
    engine = create_engine(pg_url.sqlalchemy_url, poolclass=pool.NullPool)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        yield Operations(ctx), conn
    engine.dispose()



@pytest.mark.integration
def test_concurrent_index_replaces_an_invalid_leftover(online, pg_url):
    op, conn = online
    q(pg_url, "CREATE TABLE dup (v int); INSERT INTO dup VALUES (1), (1)")
    with pytest.raises(psycopg.errors.UniqueViolation):  # leaves an INVALID index behind
        q(pg_url, "CREATE UNIQUE INDEX CONCURRENTLY dup_v_key ON dup (v)")
    assert q(pg_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'dup_v_key'::regclass") == [(False,)]
    q(pg_url, "DELETE FROM dup WHERE ctid = (SELECT max(ctid) FROM dup)")
    op.create_index_concurrently("dup_v_key", "dup", ["v"], unique=True)
    assert q(pg_url, "SELECT indisvalid, indisunique FROM pg_index WHERE indexrelid = 'dup_v_key'::regclass") == [
        (True, True)]
    op.drop_index_concurrently("dup_v_key")
    assert q(pg_url, "SELECT to_regclass('dup_v_key')") == [(None,)]


@pytest.mark.integration
def test_hypertable_and_its_reverse_keep_the_rows(online, pg_url):
    op, conn = online
    q(pg_url, "CREATE TABLE m (t timestamptz NOT NULL, v float8 DEFAULT 0 CHECK (v >= 0))")
    q(pg_url, "INSERT INTO m SELECT g, 1 FROM generate_series(now() - interval '10 days', now(), interval '1 hour') g")
    op.create_hypertable("m", "t", chunk_interval="1 day", migrate_data=True)
    conn.commit()
    assert q(pg_url, "SELECT num_chunks >= 10 FROM timescaledb_information.hypertables WHERE hypertable_name = 'm'") == [
        (True,)]
    ops.CreateHypertableOp("m", "t").reverse()  # a RevertHypertableOp, run through op:
    op.revert_hypertable("m")
    conn.commit()
    assert q(pg_url, "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'm'") == [(0,)]
    assert q(pg_url, "SELECT count(*) FROM m")[0][0] == 241
    with pytest.raises(psycopg.errors.CheckViolation):  # constraints came along
        q(pg_url, "INSERT INTO m VALUES (now(), -1)")


@pytest.mark.integration
def test_rls_policy_and_grants_on_a_real_table(online, pg_url):
    op, conn = online
    q(pg_url, "CREATE TABLE notes (tenant text, body text)")
    q(pg_url, "INSERT INTO notes VALUES ('a', 'x'), ('b', 'y')")
    q(pg_url, "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ops_test_reader') "
              "THEN CREATE ROLE ops_test_reader; END IF; END $$")
    op.enable_rls("notes")
    op.create_policy("notes_by_tenant", "notes", command="SELECT", roles=["ops_test_reader"],
                     using="tenant = current_setting('t.id', true)")
    op.grant(["SELECT"], "notes", roles=["ops_test_reader"])
    conn.commit()
    with psycopg.connect(pg_url.conninfo) as c:
        c.execute("SET ROLE ops_test_reader")
        c.execute("SELECT set_config('t.id', 'a', true)")
        assert c.execute("SELECT body FROM notes").fetchall() == [("x",)]
    op.revoke(["SELECT"], "notes", roles=["ops_test_reader"])
    op.drop_policy("notes_by_tenant", "notes")
    op.disable_rls("notes")
    conn.commit()
    assert q(pg_url, "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname = 'notes'") == [
        (False, False)]
    with psycopg.connect(pg_url.conninfo) as c:
        c.execute("SET ROLE ops_test_reader")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT 1 FROM notes")


@pytest.mark.integration
@pytest.mark.parametrize("table,column", [("t :w", "at :ts"), ("t%w", "at%ts")])
def test_colons_and_percents_in_quoted_names_are_sql(online, pg_url, table, column):
    """Neither a bind parameter (" :w") nor a doubled % ("t%%w"): the statements go through SQLAlchemy's text()."""
    op, conn = online
    with psycopg.connect(pg_url.conninfo, autocommit=True) as admin:
        admin.execute(psycopg.sql.SQL("CREATE TABLE {} ({} timestamptz NOT NULL, v text)").format(
            psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)))
    op.enable_rls(table)
    op.grant(["SELECT"], table, roles=["PUBLIC"])
    op.create_policy(f"p {table}", table, command="SELECT", using="v LIKE 'a%:b'")
    conn.commit()
    op.create_index_concurrently(f"{table}_v", table, ["v"], where="v <> '100%'")  # not on a hypertable
    assert q(pg_url, "SELECT indexname FROM pg_indexes WHERE tablename = %s", (table,)) == [(f"{table}_v",)]
    op.drop_index_concurrently(f"{table}_v", table)
    op.create_hypertable(table, column)
    op.drop_policy("p :z", table)
    conn.commit()
    with psycopg.connect(pg_url.conninfo) as admin:
        assert admin.execute("SELECT relforcerowsecurity, relacl::text LIKE '%%=r/%%' FROM pg_class WHERE relname = %s",
                             (table,)).fetchall() == [(True, True)]
        assert admin.execute("SELECT column_name FROM timescaledb_information.dimensions WHERE hypertable_name = %s",
                             (table,)).fetchall() == [(column,)]
        assert admin.execute("SELECT qual FROM pg_policies WHERE tablename = %s", (table,)).fetchall() == [
            ("(v ~~ 'a%:b'::text)",)]


@pytest.mark.integration
def test_colons_in_a_policy_and_an_index_are_sql_not_bind_parameters(online, pg_url):
    op, conn = online
    q(pg_url, "CREATE TABLE tagged (tag text, body jsonb)")
    q(pg_url, "INSERT INTO tagged VALUES (':admin', '{\"k\": \"v\"}'), ('user', '{}')")
    op.enable_rls("tagged")
    op.create_policy("tagged_admin", "tagged", command="SELECT", using="tag = ':admin' AND body->>'k' = 'v'")
    conn.commit()
    op.create_index_concurrently("tagged_admin_idx", "tagged", ["tag"], where="tag <> ':none'")
    assert q(pg_url, "SELECT qual FROM pg_policies WHERE policyname = 'tagged_admin'")[0][0].count("':admin'") == 1
    assert "':none'" in q(pg_url, "SELECT pg_get_indexdef('tagged_admin_idx'::regclass)")[0][0]
