"""studioops' database, proven on a real PostgreSQL by dbkit's pytest plugin (`pytest`).

No row-level security (one studio, one tenant: `dbkit rls audit` says RLS is not used); what protects the
data is the role model's grants.  Search is what the application does: full text over doc_chunks and
rag_documents (GIN indexes of 003_search_indexes.sql) and cosine similarity over rag_documents.embedding
(vector(1536), HNSW since revision 0005).  `as_role` logs in as a role of a kind inside a transaction that is
always rolled back.
"""

import psycopg
import pytest

TABLES = ("projects", "plans", "plan_items", "documents", "doc_chunks", "rag_documents")


def test_no_row_level_security_and_nothing_for_public(dbkit_seeded_db):
    with psycopg.connect(dbkit_seeded_db.conninfo) as admin:
        rows = admin.execute(
            "SELECT c.relname, c.relrowsecurity, pg_get_userbyid(c.relowner), "
            "EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = 0) "
            "FROM pg_class c WHERE c.oid = ANY(%s::regclass[]) ORDER BY 1",
            ([f"public.{t}" for t in TABLES],)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(TABLES)
    for name, rls, owner, public in rows:
        assert (rls, owner, public) == (False, "studioops_owner", False), name


def test_full_text_search_uses_its_gin_index(as_role):
    with as_role("enforce") as conn:
        word = conn.execute("SELECT split_part(text, ' ', 1) FROM doc_chunks LIMIT 1").fetchone()[0]
        query = ("SELECT count(*) FROM doc_chunks "
                 "WHERE to_tsvector('english', text) @@ plainto_tsquery('english', %s)")
        assert conn.execute(query, (word,)).fetchone()[0] > 0
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + query.replace("%s", "'studio'")))
        assert "idx_doc_chunks_text_fts" in plan, plan


def test_similarity_search_uses_hnsw(as_role):
    with as_role("enforce") as conn:
        nearest = conn.execute(
            "SELECT r.id, r.embedding <=> q.embedding FROM rag_documents r, "
            "(SELECT embedding FROM rag_documents ORDER BY id LIMIT 1) q ORDER BY r.embedding <=> q.embedding LIMIT 3"
        ).fetchall()
        assert len(nearest) == 3 and nearest[0][1] == pytest.approx(0, abs=1e-5)  # itself first
        conn.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(
            "EXPLAIN SELECT id FROM rag_documents ORDER BY embedding <=> "
            "(SELECT embedding FROM rag_documents LIMIT 1) LIMIT 5"))
        assert "idx_rag_documents_embedding_hnsw" in plan, plan


def test_api_role_writes_a_quote(as_role):
    with as_role("enforce") as conn:
        project = conn.execute("INSERT INTO projects (name, client_name) VALUES ('Loft', 'Acme') RETURNING id").fetchone()[0]
        plan = conn.execute("INSERT INTO plans (project_id) VALUES (%s) RETURNING id", (project,)).fetchone()[0]
        conn.execute("INSERT INTO plan_items (plan_id, category, title, quantity, unit_price) "
                     "VALUES (%s, 'labor', 'install', 8, 95)", (plan,))
        total = conn.execute("SELECT sum(quantity * unit_price) FROM plan_items WHERE plan_id = %s", (plan,)).fetchone()
        assert total[0] == 760


def test_readonly_role_only_reads(as_role):
    with as_role("readonly") as conn:
        assert conn.execute("SELECT count(*) FROM rag_documents").fetchone()[0] > 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM projects")
