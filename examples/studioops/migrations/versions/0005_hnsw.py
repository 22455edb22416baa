"""rag_documents.embedding: HNSW instead of IVFFlat

IVFFlat (002_add_vector_support.sql) is built from the rows present when it is created: on the
empty table of a new install its lists are meaningless.  HNSW needs no training and keeps recall as
rows arrive; it is built concurrently (no write lock on rag_documents).  The downgrade goes back.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_rag_documents_embedding")
    op.create_vector_index("rag_documents", "embedding", schema="public", method="hnsw", ops="vector_cosine_ops",
                           with_={"m": 16, "ef_construction": 64}, index_name="idx_rag_documents_embedding_hnsw")


def downgrade() -> None:
    op.drop_index_concurrently("idx_rag_documents_embedding_hnsw", schema="public")
    op.execute("CREATE INDEX idx_rag_documents_embedding ON rag_documents USING ivfflat (embedding vector_cosine_ops)")
