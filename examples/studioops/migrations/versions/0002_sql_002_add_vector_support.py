"""002_add_vector_support.sql (imported from infra/migrations/002_add_vector_support.sql)

Written by `dbkit migrate import-sql`: the file's statements, in its order, in one transaction.
A database whose migrations table lists 002_add_vector_support.sql (the old runner applied it) is stamped
at this revision by `dbkit migrate` and never runs it again.  The SQL file had no downgrade:
write one below before you need `dbkit migrate down` past this revision.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# where this revision came from: dbkit adopts databases whose migrations.filename lists the file
sql_file = '002_add_vector_support.sql'
sql_history_table = 'migrations'
sql_history_column = 'filename'

STATEMENTS = [
    'CREATE EXTENSION IF NOT EXISTS vector',
    """\
ALTER TABLE rag_documents
ADD COLUMN IF NOT EXISTS embedding vector(1536)""",
    """\
CREATE INDEX IF NOT EXISTS idx_rag_documents_embedding
ON rag_documents USING ivfflat (embedding vector_cosine_ops)""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(sa.text(statement.replace(":", r"\:")))  # text() would read ":name" as a parameter


def downgrade() -> None:
    # written by the team after the import (the extension stays: dbkit's preflight manages it)
    op.execute("DROP INDEX IF EXISTS idx_rag_documents_embedding")
    op.execute("ALTER TABLE rag_documents DROP COLUMN embedding")
