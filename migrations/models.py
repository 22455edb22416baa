"""SQLAlchemy models of the reference schema: what autogenerate compares the database with.

A multi-tenant AI + time-series application.  Tables live in the schema named by
DBKIT_SCHEMA (default ``app``).  What SQLAlchemy cannot express lives in the
revisions only: row-level security and policies, grants, the hypertable
conversion of ``events`` (and the index TimescaleDB adds to it, which
autogenerate ignores).
"""

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Column,
    Computed,
    DateTime,
    Double,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR, UUID

from dbkit.config import load_settings

SCHEMA = load_settings().schema
EMBEDDING_DIM = 384

metadata = MetaData(schema=SCHEMA)

tenants = Table(
    "tenants", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("slug", Text, nullable=False, unique=True),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

users = Table(
    "users", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_id", UUID, ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"), nullable=False),
    Column("email", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    UniqueConstraint("tenant_id", "email", name="users_tenant_email_key"),
    UniqueConstraint("tenant_id", "id", name="users_tenant_id_id_key"),
)

documents = Table(
    "documents", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_id", UUID, ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"), nullable=False),
    Column("author_id", UUID, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("search", TSVECTOR, Computed(
        "to_tsvector('english'::regconfig, title || ' ' || body)", persisted=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    ForeignKeyConstraint(["tenant_id", "author_id"], [f"{SCHEMA}.users.tenant_id", f"{SCHEMA}.users.id"],
                         name="documents_author_fkey", ondelete="CASCADE"),
    UniqueConstraint("tenant_id", "id", name="documents_tenant_id_id_key"),
    Index("documents_search_idx", "search", postgresql_using="gin"),
    Index("documents_tenant_created_idx", "tenant_id", text("created_at DESC")),
)

document_chunks = Table(
    "document_chunks", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("tenant_id", UUID, ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"), nullable=False),
    Column("document_id", UUID, nullable=False),
    Column("chunk_index", Integer, nullable=False),
    Column("content", Text, nullable=False),
    Column("embedding", Vector(EMBEDDING_DIM), nullable=False),
    ForeignKeyConstraint(["tenant_id", "document_id"], [f"{SCHEMA}.documents.tenant_id", f"{SCHEMA}.documents.id"],
                         name="document_chunks_document_fkey", ondelete="CASCADE"),
    UniqueConstraint("document_id", "chunk_index", name="document_chunks_document_chunk_key"),
    Index("document_chunks_tenant_idx", "tenant_id"),
    Index("document_chunks_embedding_hnsw_idx", "embedding", postgresql_using="hnsw",
          postgresql_ops={"embedding": "vector_cosine_ops"},
          postgresql_with={"m": 16, "ef_construction": 64}),
)

events = Table(
    "events", metadata,  # a TimescaleDB hypertable on "time"
    Column("tenant_id", UUID, ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("kind", Text, nullable=False),
    Column("value", Double, nullable=False),
    Column("payload", JSONB),
    Index("events_tenant_time_idx", "tenant_id", text('"time" DESC')),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("tenant_id", UUID, ForeignKey(f"{SCHEMA}.tenants.id", ondelete="CASCADE"), nullable=False),
    Column("actor_id", UUID),
    Column("action", Text, nullable=False),
    Column("target_table", Text, nullable=False),
    Column("target_id", UUID),
    Column("at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("details", JSONB),
    Index("audit_log_tenant_at_idx", "tenant_id", text("at DESC")),
)
