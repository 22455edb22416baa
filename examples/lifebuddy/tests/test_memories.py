"""The engine's similarity search over memories: per user (JWT `sub` through dbkit.rls.scoped) and
served by the HNSW index of revision 0003."""

import psycopg
import pytest
from engine.db import similar_memories

from dbkit.testing import connect_as


def _memories(url, schema):
    """{user id: [(memory id, embedding text)]} read as the superuser."""
    out: dict = {}
    with psycopg.connect(url.conninfo) as admin:
        for memory_id, user_id, embedding in admin.execute(
                f'SELECT id, user_id, embedding::text FROM "{schema}".memories ORDER BY user_id, id'):
            out.setdefault(user_id, []).append((memory_id, [float(x) for x in embedding.strip("[]").split(",")]))
    return out


@pytest.fixture
def engine_conn(dbkit_server, dbkit_seeded_db, dbkit_settings):
    """A connection of the engine's request path: logged in as cognitive_engine_rls."""
    with connect_as(dbkit_server, dbkit_seeded_db, dbkit_settings, "enforce") as conn:
        assert conn.info.user == "cognitive_engine_rls"
        yield conn


def test_similarity_search_stays_within_the_user(engine_conn, dbkit_seeded_db, dbkit_settings):
    by_user = _memories(dbkit_seeded_db, dbkit_settings.schema)
    (alice, alices), (bob, bobs) = sorted(by_user.items(), key=lambda kv: -len(kv[1]))[:2]
    # Alice's nearest memory to one of her own embeddings is that memory itself (distance 0)
    hits = similar_memories(engine_conn, dbkit_settings, alice, alices[0][1], k=5)
    assert hits[0][0] == alices[0][0] and hits[0][3] == pytest.approx(0, abs=1e-6)
    assert {user for _, user, _, _ in hits} == {alice}
    assert len(hits) == min(5, len(alices))
    # Bob's memory, searched with its exact embedding as Alice: never found; as Bob: first
    assert bobs[0][0] not in {h[0] for h in similar_memories(engine_conn, dbkit_settings, alice, bobs[0][1], k=50)}
    assert similar_memories(engine_conn, dbkit_settings, bob, bobs[0][1], k=1)[0][0] == bobs[0][0]
    # no `sub`: nothing at all
    assert similar_memories(engine_conn, dbkit_settings, None, alices[0][1], k=50) == []


def test_the_hnsw_index_serves_the_search_under_rls(engine_conn, dbkit_seeded_db, dbkit_settings):
    schema = dbkit_settings.schema
    by_user = _memories(dbkit_seeded_db, dbkit_settings.schema)
    user, rows = next(iter(by_user.items()))
    literal = "[" + ",".join(map(str, rows[0][1])) + "]"
    import dbkit.rls

    with dbkit.rls.scoped(engine_conn, user_id=user, claims=dbkit.rls.claims(dbkit_settings)):
        # a tiny table: the planner would read the user's rows by user_id and sort them; make it show the index
        for plan_setting in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
            engine_conn.execute(f"SET LOCAL {plan_setting} = off")
        plan = "\n".join(r[0] for r in engine_conn.execute(
            f'EXPLAIN SELECT id FROM "{schema}".memories ORDER BY embedding <=> %s::vector LIMIT 5', (literal,)))
    assert "memories_embedding_hnsw_idx" in plan, plan


def test_trusted_jobs_see_every_user(dbkit_server, dbkit_seeded_db, dbkit_settings):
    """cognitive_engine_full (BYPASSRLS) is for the engine's trusted jobs: it needs no claims."""
    schema = dbkit_settings.schema
    with connect_as(dbkit_server, dbkit_seeded_db, dbkit_settings, "bypass") as conn:
        assert conn.info.user == "cognitive_engine_full"
        users = conn.execute(f'SELECT count(DISTINCT user_id) FROM "{schema}".memories').fetchone()[0]
    assert users == len(_memories(dbkit_seeded_db, schema))
