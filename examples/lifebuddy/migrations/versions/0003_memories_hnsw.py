"""memories: HNSW cosine index on embedding, built CONCURRENTLY

In a revision of its own (autogenerate put it last in 0002 and said so): a concurrent build runs
outside a transaction, so it must not share a revision with DDL that should roll back as a unit.
m / ef_construction are pgvector's defaults, written out so a change shows in review.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from alembic import op

import dbkit.migrate

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_vector_index("memories", "embedding", schema=dbkit.migrate.settings().schema, method="hnsw",
                           ops="vector_cosine_ops", with_={"m": 16, "ef_construction": 64},
                           index_name="memories_embedding_hnsw_idx")


def downgrade() -> None:
    op.drop_index_concurrently("memories_embedding_hnsw_idx", schema=dbkit.migrate.settings().schema)
