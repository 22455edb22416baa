"""001_initial_schema.sql (imported from infra/migrations/001_initial_schema.sql)

Written by `dbkit migrate import-sql`: the file's statements, in its order, in one transaction.
A database whose migrations table lists 001_initial_schema.sql (the old runner applied it) is stamped
at this revision by `dbkit migrate` and never runs it again.  The SQL file had no downgrade:
write one below before you need `dbkit migrate down` past this revision.

Revision ID: 0001
Revises: 
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

# where this revision came from: dbkit adopts databases whose migrations.filename lists the file
sql_file = '001_initial_schema.sql'
sql_history_table = 'migrations'
sql_history_column = 'filename'

STATEMENTS = [
    """\
CREATE TABLE projects (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(255) NOT NULL,
    client_name VARCHAR(255),
    status VARCHAR(50) DEFAULT 'draft',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)""",
    """\
CREATE TABLE plans (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    version INTEGER NOT NULL DEFAULT 1,
    status VARCHAR(50) DEFAULT 'draft',
    margin_target NUMERIC(5, 2) DEFAULT 0.25,
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)""",
    """\
CREATE TABLE plan_items (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    plan_id UUID NOT NULL REFERENCES plans(id) ON DELETE CASCADE,
    category VARCHAR(50) NOT NULL,
    title VARCHAR(255) NOT NULL,
    quantity NUMERIC(12, 2) NOT NULL DEFAULT 1,
    unit VARCHAR(20) DEFAULT 'unit',
    unit_price NUMERIC(12, 2) NOT NULL DEFAULT 0
)""",
    """\
CREATE TABLE documents (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID REFERENCES projects(id) ON DELETE SET NULL,
    filename VARCHAR(255) NOT NULL,
    mime_type VARCHAR(100),
    storage_path TEXT NOT NULL,  -- the object's key in MinIO's `documents` bucket
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)""",
    """\
CREATE TABLE doc_chunks (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    document_id UUID NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    chunk_index INTEGER NOT NULL,
    text TEXT NOT NULL
)""",
    """\
CREATE TABLE rag_documents (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    project_id UUID REFERENCES projects(id) ON DELETE CASCADE,
    title VARCHAR(255) NOT NULL,
    content TEXT NOT NULL,
    source VARCHAR(100) DEFAULT 'upload',
    created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
)""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(sa.text(statement.replace(":", r"\:")))  # text() would read ":name" as a parameter


def downgrade() -> None:
    # written by the team after the import: the SQL file had none
    for table in ("rag_documents", "doc_chunks", "documents", "plan_items", "plans", "projects"):
        op.execute(f"DROP TABLE {table}")
