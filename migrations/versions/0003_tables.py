"""tables: tenants, users, documents, document_chunks, events (hypertable), audit_log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

import dbkit.migrate

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EMBEDDING_DIM = 384


def upgrade() -> None:
    s = dbkit.migrate.settings().schema
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{s}"')
    uuid_pk = lambda: sa.Column("id", pg.UUID, primary_key=True, server_default=sa.text("gen_random_uuid()"))  # noqa: E731
    tenant_fk = lambda: sa.Column(  # noqa: E731
        "tenant_id", pg.UUID, sa.ForeignKey(f"{s}.tenants.id", ondelete="CASCADE"), nullable=False)
    created = lambda: sa.Column(  # noqa: E731
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()"))

    op.create_table(
        "tenants",
        uuid_pk(),
        sa.Column("slug", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        created(),
        sa.UniqueConstraint("slug", name="tenants_slug_key"),
        schema=s,
    )
    op.create_table(
        "users",
        uuid_pk(),
        tenant_fk(),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        created(),
        sa.UniqueConstraint("tenant_id", "email", name="users_tenant_email_key"),
        sa.UniqueConstraint("tenant_id", "id", name="users_tenant_id_id_key"),
        schema=s,
    )
    op.create_table(
        "documents",
        uuid_pk(),
        tenant_fk(),
        sa.Column("author_id", pg.UUID, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("search", pg.TSVECTOR,
                  sa.Computed("to_tsvector('english'::regconfig, title || ' ' || body)", persisted=True)),
        created(),
        sa.ForeignKeyConstraint(["tenant_id", "author_id"], [f"{s}.users.tenant_id", f"{s}.users.id"],
                                name="documents_author_fkey", ondelete="CASCADE"),
        sa.UniqueConstraint("tenant_id", "id", name="documents_tenant_id_id_key"),
        schema=s,
    )
    op.create_index("documents_search_idx", "documents", ["search"], schema=s, postgresql_using="gin")
    op.create_index("documents_tenant_created_idx", "documents", ["tenant_id", sa.text("created_at DESC")], schema=s)
    op.create_table(
        "document_chunks",
        uuid_pk(),
        tenant_fk(),
        sa.Column("document_id", pg.UUID, nullable=False),
        sa.Column("chunk_index", sa.Integer, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("embedding", Vector(EMBEDDING_DIM), nullable=False),
        sa.ForeignKeyConstraint(["tenant_id", "document_id"], [f"{s}.documents.tenant_id", f"{s}.documents.id"],
                                name="document_chunks_document_fkey", ondelete="CASCADE"),
        sa.UniqueConstraint("document_id", "chunk_index", name="document_chunks_document_chunk_key"),
        schema=s,
    )
    op.create_index("document_chunks_tenant_idx", "document_chunks", ["tenant_id"], schema=s)
    op.create_table(
        "events",
        tenant_fk(),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        sa.Column("payload", pg.JSONB),
        schema=s,
    )
    op.create_hypertable("events", "time", schema=s, chunk_interval="1 day")
    op.create_index("events_tenant_time_idx", "events", ["tenant_id", sa.text('"time" DESC')], schema=s)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        tenant_fk(),
        sa.Column("actor_id", pg.UUID),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target_table", sa.Text, nullable=False),
        sa.Column("target_id", pg.UUID),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.Column("details", pg.JSONB),
        schema=s,
    )
    op.create_index("audit_log_tenant_at_idx", "audit_log", ["tenant_id", sa.text("at DESC")], schema=s)


def downgrade() -> None:
    s = dbkit.migrate.settings().schema
    for table in ("audit_log", "events", "document_chunks", "documents", "users", "tenants"):
        op.drop_table(table, schema=s)
    op.execute(f'DROP SCHEMA IF EXISTS "{s}"')
