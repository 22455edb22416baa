"""document_chunks: HNSW cosine index on embedding, built CONCURRENTLY

In a revision of its own: a concurrent build runs outside a transaction, so it
must not share a revision with DDL that should roll back as a unit.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from alembic import op

import dbkit.migrate

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_vector_index("document_chunks", "embedding", schema=dbkit.migrate.settings().schema,
                           method="hnsw", ops="vector_cosine_ops", with_={"m": 16, "ef_construction": 64})


def downgrade() -> None:
    op.drop_index_concurrently("document_chunks_embedding_hnsw_idx", schema=dbkit.migrate.settings().schema)
