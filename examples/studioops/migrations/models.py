"""SQLAlchemy models, written by `dbkit init`: what `dbkit migrate new --autogenerate` and
`dbkit migrate check` compare the database with.

Tables live in the schema of the settings (DBKIT_SCHEMA or [tool.dbkit] schema).  Row-level
security, policies and grants are not models: they live in the revisions
(versions/0001_initial.py shows them for notes).
"""

from dbkit.config import load_settings
from sqlalchemy import Column, DateTime, Index, MetaData, Table, Text, text
from sqlalchemy.dialects.postgresql import UUID

SCHEMA = load_settings().schema

metadata = MetaData(schema=SCHEMA)

notes = Table(
    "notes", metadata,
    Column("id", UUID, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Index("notes_created_idx", text("created_at DESC")),
)
