"""Life-Buddy's tables (SQLAlchemy): what `dbkit migrate new --autogenerate` and `dbkit migrate check`
compare the database with.

The Cultivate -> Execute -> Contribute engine keeps, per user (the JWT ``sub``):

* ``users``      one row per account; its ``id`` IS the ``sub`` claim of the user's tokens;
* ``goals``      what the user cultivates (status cultivate / execute / contribute);
* ``tasks``      the steps that execute a goal (composite key: a task stays with its goal's user);
* ``memories``   what the cognitive engine remembers, with an embedding (``vector(768)``, the size of
                 Ollama's ``nomic-embed-text``) and an HNSW cosine index for similarity search.

Every table is owned per user: RLS ENABLED and FORCED, policies compare the owner column (``id`` for
``users``, ``user_id`` elsewhere) with ``request.jwt.claims ->> 'sub'``.  Row-level security, policies
and grants are not models: they live in the revisions.
"""

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from dbkit.config import load_settings

SCHEMA = load_settings().schema
EMBEDDING_DIM = 768

metadata = MetaData(schema=SCHEMA)

users = Table(
    "users", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),  # the JWT `sub`
    Column("email", Text, nullable=False, unique=True),
    Column("display_name", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
)

goals = Table(
    "goals", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("user_id", UUID, ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False),
    Column("title", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'cultivate'::text")),
    Column("target_date", Date),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    CheckConstraint("status = ANY (ARRAY['cultivate'::text, 'execute'::text, 'contribute'::text])",
                    name="goals_status_check"),
    UniqueConstraint("user_id", "id", name="goals_user_id_id_key"),
    Index("goals_user_created_idx", "user_id", text("created_at DESC")),
)

tasks = Table(
    "tasks", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("user_id", UUID, nullable=False),
    Column("goal_id", UUID, nullable=False),
    Column("title", Text, nullable=False),
    Column("due_at", DateTime(timezone=True)),
    Column("done_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    ForeignKeyConstraint(["user_id", "goal_id"], [f"{SCHEMA}.goals.user_id", f"{SCHEMA}.goals.id"],
                         name="tasks_goal_fkey", ondelete="CASCADE"),
    Index("tasks_user_due_idx", "user_id", "due_at"),
)

memories = Table(
    "memories", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("user_id", UUID, ForeignKey(f"{SCHEMA}.users.id", ondelete="CASCADE"), nullable=False),
    Column("kind", Text, nullable=False),
    Column("content", Text, nullable=False),
    Column("embedding", Vector(EMBEDDING_DIM), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("memories_user_created_idx", "user_id", text("created_at DESC")),
    Index("memories_embedding_hnsw_idx", "embedding", postgresql_using="hnsw",
          postgresql_ops={"embedding": "vector_cosine_ops"},
          postgresql_with={"m": 16, "ef_construction": 64}),
)
