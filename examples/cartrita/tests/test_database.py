"""The orchestrator's database as robbie (the role the application connects as) sees it, on a real PostgreSQL
started (or found at DBKIT_TEST_SERVER_URL) by dbkit's pytest plugin, migrated and seeded once per session.

Cartrita keeps no per-user row-level security (rls_model = "none"): what protects the data is the role model.
robbie, which used to own every table and to be a superuser, now reads and writes rows and cannot change the
schema; cartrita_owner owns the tables.  `as_role` opens a transaction that is always rolled back.
"""

import psycopg
import pytest
from psycopg import errors

TABLES = ("users", "conversations", "messages", "knowledge_chunks", "tool_calls")


def _admin(url):
    return psycopg.connect(url.conninfo, autocommit=True)


def test_tables_belong_to_the_owner_and_nothing_is_granted_to_public(dbkit_seeded_db, dbkit_settings):
    with _admin(dbkit_seeded_db) as admin:
        rows = admin.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner), c.relrowsecurity, "
            "  EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0) "
            "FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
            "AND c.relname <> 'alembic_version' ORDER BY 1").fetchall()
    assert sorted(r[0] for r in rows) == sorted(TABLES)
    for table, owner, rls, public in rows:
        assert owner == dbkit_settings.role_owner, f"{table} is owned by {owner}"
        assert rls is False and public is False, table


def test_robbie_is_an_ordinary_login_role(dbkit_seeded_db, dbkit_settings):
    (robbie,) = dbkit_settings.role_enforce
    with _admin(dbkit_seeded_db) as admin:
        row = admin.execute("SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolcanlogin "
                            "FROM pg_roles WHERE rolname = %s", (robbie,)).fetchone()
    assert row == (False, False, False, False, True)


def test_robbie_records_a_conversation_with_an_agent_answer_and_a_tool_call(as_role):
    with as_role("enforce") as conn:
        user_id = conn.execute("INSERT INTO users (email, display_name) VALUES ('ada@example.com', 'Ada') "
                               "RETURNING id").fetchone()[0]
        conv = conn.execute("INSERT INTO conversations (user_id, title) VALUES (%s, 'plan my week') RETURNING id",
                            (user_id,)).fetchone()[0]
        msg = conn.execute("INSERT INTO messages (conversation_id, role, content, agent, token_count) "
                           "VALUES (%s, 'assistant', 'Booked.', 'scheduler', 2) RETURNING id", (conv,)).fetchone()[0]
        conn.execute("INSERT INTO tool_calls (message_id, tool, arguments) VALUES (%s, 'calendar.create_event', "
                     "'{\"title\": \"gym\"}')", (msg,))
        assert conn.execute("SELECT t.tool, m.agent FROM tool_calls t JOIN messages m ON m.id = t.message_id "
                            "WHERE m.conversation_id = %s", (conv,)).fetchall() == [("calendar.create_event",
                                                                                     "scheduler")]
        conn.execute("DELETE FROM users WHERE id = %s", (user_id,))  # cascades to its conversations
        assert conn.execute("SELECT count(*) FROM messages WHERE id = %s", (msg,)).fetchone()[0] == 0


def test_robbie_finds_the_nearest_knowledge_chunks(as_role):
    with as_role("enforce") as conn:
        seeded = conn.execute("SELECT count(*) FROM knowledge_chunks").fetchone()[0]
        assert seeded > 0, "the seeds give rows"
        source_id, user_id = conn.execute("SELECT id, user_id FROM knowledge_chunks ORDER BY id LIMIT 1").fetchone()
        nearest = conn.execute(
            "SELECT id, embedding <=> (SELECT embedding FROM knowledge_chunks WHERE id = %s) AS distance "
            "FROM knowledge_chunks WHERE user_id = %s ORDER BY distance LIMIT 3", (source_id, user_id)).fetchall()
        assert nearest[0][0] == source_id and nearest[0][1] == pytest.approx(0.0, abs=1e-6)
        with pytest.raises(errors.DataException, match="expected 1536 dimensions"), conn.transaction():
            conn.execute("INSERT INTO knowledge_chunks (user_id, source, content, embedding) "
                         "VALUES (%s, 'x', 'x', '[1,2,3]')", (user_id,))


@pytest.mark.parametrize("statement", [
    "CREATE TABLE public.scratch (id int)",
    "DROP TABLE public.messages",
    "ALTER TABLE public.users ADD COLUMN note text",
    "TRUNCATE public.tool_calls",
    "UPDATE public.alembic_version SET version_num = 'x'",
])
def test_robbie_cannot_change_the_schema_or_the_migration_state(as_role, statement):
    with as_role("enforce") as conn:
        with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
            conn.execute(statement)
